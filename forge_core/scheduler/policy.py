"""The scheduling policy as a pure function: given the fire times that came due, the runs
still active and the backlog, decide what starts, what waits, what is dropped and what is
cancelled. The daemon applies the plan; tests call it with plain values.

Overlap policies follow Temporal's names: ``skip`` drops a fire time that arrives while a
run is active; ``buffer`` keeps one such fire time waiting and drops further ones; ``allow``
keeps every one and starts them up to ``max_active_runs``; ``cancel`` cancels the active runs
and starts the new one. Fire times that come due while nothing is active (catch-up after
downtime) all wait in the backlog and start oldest first within ``max_active_runs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = ["OVERLAP_POLICIES", "Plan", "WorkflowState", "plan_due"]

OVERLAP_POLICIES = ("skip", "buffer", "allow", "cancel")


@attrs.frozen(kw_only=True)
class WorkflowState:
    """What the daemon knows about one workflow when a tick runs."""

    active: tuple[str, ...] = ()
    """Run ids queued or running, oldest first."""
    backlog: tuple[str, ...] = ()
    """Logical dates (ISO 8601) waiting to start, oldest first."""


@attrs.frozen(kw_only=True)
class Plan:
    """What one tick does for one workflow."""

    start: tuple[str, ...] = ()
    backlog: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()


def plan_due(
    due: Sequence[str], state: WorkflowState, *, overlap: str, max_active_runs: int
) -> Plan:
    """Apply the overlap policy to ``due`` (ISO logical dates, oldest first), then start as
    much of the backlog as ``max_active_runs`` allows."""
    if overlap not in OVERLAP_POLICIES:
        raise ValueError(f"unknown overlap policy {overlap!r}")
    backlog = list(state.backlog)
    skipped: list[str] = []
    cancel: tuple[str, ...] = ()
    busy = bool(state.active)
    for date in due:
        if date in backlog:
            continue
        if not busy or overlap == "allow":
            backlog.append(date)
        elif overlap == "skip":
            skipped.append(date)
        elif overlap == "buffer":
            (skipped if backlog else backlog).append(date)
        else:
            cancel = state.active
            skipped.extend(backlog)
            backlog = [date]
    free = 0 if cancel else max(0, max(1, max_active_runs) - len(state.active))
    return Plan(
        start=tuple(backlog[:free]),
        backlog=tuple(backlog[free:]),
        skipped=tuple(skipped),
        cancel=cancel,
    )
