"""Read-only questions about past runs, answered from the state store with SQL: how many
runs failed in a row, and how long a task typically takes (p95) for SLA-at-risk warnings."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set

from ..spec import WorkflowSpec
from ._store import StateStore

__all__ = [
    "announced_tasks", "consecutive_failures", "latest_by_logical_date", "p95_durations",
    "remaining_chains", "sla_at_risk",
]


def consecutive_failures(store: StateStore, workflow: str, *, limit: int = 1000) -> int:
    """How many of ``workflow``'s most recent finished runs failed, counting back to the
    last one that did not."""
    rows = store.query(
        "SELECT state FROM runs WHERE workflow = ? AND state IN ('succeeded','failed','cancelled')"
        " ORDER BY created_at DESC LIMIT ?", (workflow, limit),
    )
    count = 0
    for row in rows:
        if row["state"] != "failed":
            break
        count += 1
    return count


def p95_durations(
    store: StateStore, workflow: str, tasks: Sequence[str] = (), *, runs: int = 50
) -> dict[str, float]:
    """The 95th percentile duration (seconds) of each task's succeeded attempts over the
    workflow's last ``runs`` runs; tasks with no history are absent."""
    rows = store.query(
        "SELECT a.task AS task, a.finished_at - a.started_at AS d FROM attempts a"
        " JOIN (SELECT run_id FROM runs WHERE workflow = ? ORDER BY created_at DESC LIMIT ?) r"
        " ON a.run_id = r.run_id WHERE a.state = 'succeeded' AND a.finished_at IS NOT NULL"
        " AND a.started_at IS NOT NULL", (workflow, runs),
    )
    by_task: dict[str, list[float]] = {}
    for row in rows:
        if not tasks or row["task"] in tasks:
            by_task.setdefault(row["task"], []).append(float(row["d"]))
    return {task: _p95(sorted(values)) for task, values in by_task.items()}


def _p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile of sorted ``values``."""
    return values[max(0, math.ceil(0.95 * len(values)) - 1)]


def latest_by_logical_date(store: StateStore, workflow: str) -> dict[str, str]:
    """``{logical date: state of its newest run}`` for ``workflow`` (backfill's reprocess)."""
    rows = store.query(
        "SELECT logical_date, state FROM runs WHERE workflow = ? AND logical_date IS NOT NULL"
        " ORDER BY created_at", (workflow,),
    )
    return {str(r["logical_date"]): str(r["state"]) for r in rows}


def remaining_chains(
    spec: WorkflowSpec, done: Set[str], typical: Mapping[str, float]
) -> dict[str, float]:
    """For each task: the typical (p95) time of the longest chain of unfinished tasks ending
    at it, itself included (0 for a finished task). Tasks with no history count as instant."""
    deps = {t.name: [d for d in t.depends_on if d != t.name] for t in spec.tasks}
    memo: dict[str, float] = {}
    visiting: set[str] = set()
    for root in deps:
        stack = [root]
        while stack:  # iterative post-order: a 10,000-task chain must not hit the recursion limit
            name = stack[-1]
            if name in memo:
                stack.pop()
            elif name in done:
                memo[name] = 0.0
            elif name not in visiting:
                visiting.add(name)
                stack.extend(d for d in deps.get(name, ()) if d not in memo and d not in visiting)
            else:
                ups = (memo.get(d, 0.0) for d in deps.get(name, ()))
                memo[name] = typical.get(name, 0.0) + max(ups, default=0.0)
    return memo


def sla_at_risk(
    spec: WorkflowSpec, elapsed: float, done: Set[str], typical: Mapping[str, float]
) -> list[str]:
    """Tasks with an SLA, not yet finished, whose SLA falls before ``elapsed`` (seconds since
    the run started) plus the typical (p95) time of the longest chain of unfinished tasks
    ending at them (see :func:`remaining_chains`)."""
    remaining = remaining_chains(spec, done, typical)
    return [t.name for t in spec.tasks
            if t.sla is not None and t.name not in done and elapsed + remaining[t.name] > t.sla]


def announced_tasks(store: StateStore, run_id: str, kind: str) -> set[str]:
    """Tasks of ``run_id`` that already have an event of ``kind`` (warn once, across resumes)."""
    rows = store.query("SELECT DISTINCT task FROM events WHERE run_id = ? AND kind = ?"
                       " AND task IS NOT NULL", (run_id, kind))
    return {str(r["task"]) for r in rows}
