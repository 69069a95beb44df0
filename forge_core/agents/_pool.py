"""The records of the agent manager: a pool's configuration and each agent slot's state
(its process, the task it works on, the tasks it holds ahead and the results to settle)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs

from ..abc import Lease
from ._process import AgentProcess
from .policy import BreakerConfig, RetryPolicy

__all__ = ["PoolConfig"]


@attrs.frozen(kw_only=True)
class PoolConfig:
    """One pool of identical agents (what ``forge agent start`` starts)."""

    command: tuple[str, ...] = attrs.field(converter=tuple)
    name: str = "agent"
    count: int = 1
    concurrency: int = 5
    """Most agents that may run at once; ``count`` is capped by it."""
    tags: tuple[str, ...] = ()
    kinds: tuple[str, ...] | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    workdir: str | None = None
    lease: float = 30.0
    prefetch: int = 16
    """Most tasks an agent holds leased ahead of the one it works on. Only agents whose tasks
    are short take any: see ``prefetch_window``."""
    prefetch_window: float = 0.05
    """Seconds of expected work (by the agent's recent task times) it may hold ahead, so an
    agent of minute-long tasks never sits on work another idle agent could take."""
    poll: float = 0.5
    """Longest an idle agent blocks waiting for work before it re-checks breakers and drain;
    it wakes at once when work arrives (the queue's ``wait_for_work``)."""
    grace: float = 10.0
    silence_timeout: float | None = None
    """A busy agent that writes nothing for this long is deemed hung and restarted."""
    health_interval: float = 5.0
    health_command: tuple[str, ...] | None = None
    max_memory: int | None = None
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    breaker: BreakerConfig = attrs.field(factory=BreakerConfig)
    state_dir: Path | None = None


@attrs.define
class _Held:
    lease: Lease
    lost: bool = False


@attrs.define
class _Slot:
    name: str
    consumer: str
    proc: AgentProcess | None = None
    state: str = "starting"
    item: str | None = None
    paused: bool = False
    stopping: bool = False
    held: _Held | None = None
    ready: deque[Lease] = attrs.field(factory=deque)
    """Tasks leased ahead (prefetched), served before any new reserve."""
    acks: list[tuple[Lease, Any]] = attrs.field(factory=list)
    """Results waiting for the next settle."""
    syncing: bool = False
    sync_wanted: anyio.Event = attrs.field(factory=anyio.Event)
    synced: anyio.Event = attrs.field(factory=anyio.Event)
    avg_task: float = 1.0
    """Moving average of task seconds; it starts long so nothing is prefetched at first."""
    started_at: float = 0.0
    memory: int = 0
    cpu: float = 0.0
    counters: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(
        ("done", "failed", "crashes", "restarts", "lease_lost"), 0))
