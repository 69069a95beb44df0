"""The one event bus: the engine publishes, everything else (live display, logs, metrics,
hooks, the daemon) subscribes. An event is announced only after it was stored."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["EVENT_KINDS", "Event", "EventBus"]

log = logging.getLogger(__name__)

EVENT_KINDS = frozenset({
    "run.started", "run.finished", "run.resumed",
    "task.queued", "task.started", "task.retrying", "task.succeeded", "task.failed",
    "task.skipped", "task.upstream_failed", "task.cancelled",
    "sla.missed", "sla.at_risk", "hook.failed", "hook.succeeded",
})


@attrs.frozen(kw_only=True)
class Event:
    """Something that happened to a run or one of its tasks."""

    kind: str
    run_id: str
    workflow: str
    at: float
    task: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict)


Subscriber = Callable[[Event], None]


@attrs.define
class EventBus:
    """Synchronous fan-out. A subscriber that raises is logged and never breaks the run."""

    _subscribers: list[Subscriber] = attrs.field(factory=list)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    @property
    def listened(self) -> bool:
        """Whether anyone subscribed (a publisher may skip building events otherwise)."""
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, event.kind)
