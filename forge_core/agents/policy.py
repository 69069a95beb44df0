"""Failure policies of the agent manager: a circuit breaker per task kind and a retry policy
that retries only errors matching patterns, with exponential backoff and jitter."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Literal

import attrs

from ..queue import backoff

__all__ = ["BreakerConfig", "CircuitBreaker", "RetryPolicy"]

BreakerState = Literal["closed", "open", "half-open"]


@attrs.frozen(kw_only=True)
class BreakerConfig:
    failure_threshold: int = 5
    """Consecutive failures that open the circuit."""
    success_threshold: int = 2
    """Successes in half-open state that close it again."""
    open_for: float = 60.0
    """Seconds the circuit stays open before letting trial tasks through (half-open)."""


@attrs.define
class CircuitBreaker:
    """closed → (failures) → open → (``open_for`` elapsed) → half-open → closed or open.

    ``clock`` (default ``time.monotonic``) is injectable so tests can move time."""

    config: BreakerConfig = attrs.field(factory=BreakerConfig)
    clock: Callable[[], float] = time.monotonic
    _state: BreakerState = "closed"
    _failures: int = 0
    _successes: int = 0
    _opened_at: float = 0.0

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self.clock() - self._opened_at >= self.config.open_for:
            self._state, self._successes = "half-open", 0
        return self._state

    def allows(self) -> bool:
        """Whether a task of this kind may be taken now."""
        return self.state != "open"

    def record(self, ok: bool) -> None:
        state = self.state
        if ok:
            self._failures = 0
            if state == "half-open":
                self._successes += 1
                if self._successes >= self.config.success_threshold:
                    self._state = "closed"
            return
        self._failures += 1
        if state == "half-open" or self._failures >= self.config.failure_threshold:
            self._state, self._opened_at, self._failures = "open", self.clock(), 0


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Which failed tasks go back on the queue, and when."""

    retry_on: tuple[str, ...] = (".*",)
    """Regular expressions; an error matching none of them is final (dead-lettered)."""
    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.5

    def retryable(self, error: str) -> bool:
        return any(re.search(p, error) for p in self.retry_on)

    def delay(self, delivery: int) -> float:
        """Seconds before the next delivery after failed delivery number ``delivery``."""
        return backoff(delivery, base=self.base, factor=self.factor, cap=self.max_delay,
                       jitter=self.jitter)
