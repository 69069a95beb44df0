"""Long-lived agents: the manager that runs them through a Runtime and feeds them tasks from
a Queue, its failure policies, and the language-neutral contract (see docs/agents.md)."""

from __future__ import annotations

from .manager import AgentManager, PoolConfig
from .policy import BreakerConfig, CircuitBreaker, RetryPolicy

__all__ = ["AgentManager", "BreakerConfig", "CircuitBreaker", "PoolConfig", "RetryPolicy"]
