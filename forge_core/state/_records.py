"""What the state store hands out: frozen records of runs, task instances, attempts and
events. Readers (CLI, daemon API, renderers) use these, never raw rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["AttemptRecord", "EventRecord", "PendingHook", "RunRecord", "RunState", "TaskRecord",
           "TaskState"]

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
TaskState = Literal[
    "pending",
    "queued",
    "running",
    "up_for_retry",
    "succeeded",
    "failed",
    "skipped",
    "upstream_failed",
    "cancelled",
]
FINISHED_TASK_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "skipped", "upstream_failed", "cancelled"}
)
FINISHED_RUN_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@attrs.frozen(kw_only=True)
class AttemptRecord:
    """One try of one task."""

    run_id: str
    task: str
    number: int
    state: str
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str = ""
    log_path: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@attrs.frozen(kw_only=True)
class TaskRecord:
    """A task within a run: its latest state, outputs, and every attempt."""

    run_id: str
    name: str
    state: TaskState
    attempts: tuple[AttemptRecord, ...] = ()
    outputs: Mapping[str, Any] = attrs.field(factory=dict)
    next_try_at: float | None = None
    sla_missed: bool = False

    @property
    def started_at(self) -> float | None:
        return self.attempts[0].started_at if self.attempts else None

    @property
    def finished_at(self) -> float | None:
        return self.attempts[-1].finished_at if self.attempts else None


@attrs.frozen(kw_only=True)
class RunRecord:
    """One run of one workflow."""

    run_id: str
    workflow: str
    state: RunState
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)
    logical_date: str | None = None
    trigger: str = "manual"
    owner: str | None = None
    heartbeat_at: float | None = None
    source: str | None = None
    tasks: tuple[TaskRecord, ...] = ()

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@attrs.frozen(kw_only=True)
class EventRecord:
    """One event as stored: ``kind`` like ``task.started``, ``run.finished``, ``sla.missed``."""

    id: int
    run_id: str
    kind: str
    at: float
    task: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class PendingHook:
    """A hook call committed with the state it is about and not yet sent (or not yet
    recorded as sent): the outbox a killed engine leaves for the next one."""

    id: str
    run_id: str
    ref: str
    event: str
    payload: Mapping[str, Any] = attrs.field(factory=dict)
