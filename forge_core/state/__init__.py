"""Durable state: where Forge keeps its files, and the SQLite run-state store."""

from __future__ import annotations

from pathlib import Path

from ..home import forge_home
from ._records import (
    FINISHED_RUN_STATES,
    FINISHED_TASK_STATES,
    AttemptRecord,
    EventRecord,
    PendingHook,
    RunRecord,
    RunState,
    TaskRecord,
    TaskState,
)
from ._store import StateStore, orphaned

__all__ = [
    "FINISHED_RUN_STATES",
    "FINISHED_TASK_STATES",
    "AttemptRecord",
    "EventRecord",
    "PendingHook",
    "RunRecord",
    "RunState",
    "StateStore",
    "TaskRecord",
    "TaskState",
    "forge_home",
    "open_store",
    "orphaned",
]


def open_store(home: Path | None = None) -> StateStore:
    """The run-state store under ``home`` (default :func:`forge_home`)."""
    return StateStore((home or forge_home()) / "state.db")
