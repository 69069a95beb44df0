"""SLA watching for one run: ``sla.missed`` when a task is not done by its SLA, and, before
that, ``sla.at_risk`` once the elapsed time plus the typical (p95, from history) time of the
unfinished chain ending at the task exceeds it. Pure bookkeeping: the engine stores and
announces what :meth:`SlaWatch.check` returns."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..spec import TaskSpec, WorkflowSpec
from ..state import FINISHED_TASK_STATES, StateStore
from ..state._history import announced_tasks, p95_durations, remaining_chains

__all__ = ["SlaCheck", "SlaWatch"]

_MIN_SLEEP = 0.005


@attrs.frozen(kw_only=True)
class SlaCheck:
    """What one check found: tasks newly at risk (with the expected seconds of work left on
    their chain), tasks that newly missed their SLA, and when to look again."""

    at_risk: Mapping[str, float]
    missed: tuple[str, ...]
    next_at: float | None
    """Epoch seconds of the next moment something can change; ``None`` when nothing can."""


@attrs.define
class SlaWatch:
    """The SLA state of one run; ``missed`` and ``warned`` start from what the store already
    holds, so a resumed run never announces a task twice."""

    spec: WorkflowSpec
    started_at: float
    typical: Mapping[str, float]
    missed: set[str] = attrs.field(factory=set)
    warned: set[str] = attrs.field(factory=set)
    _tasks: tuple[TaskSpec, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._tasks = tuple(t for t in self.spec.tasks if t.sla is not None)

    @classmethod
    def load(cls, spec: WorkflowSpec, started_at: float, store: StateStore,
             run_id: str) -> SlaWatch | None:
        """The watch of run ``run_id``, with what the store already holds (typical durations
        from history, tasks already missed or warned about); ``None`` without SLAs."""
        watch = cls(spec=spec, started_at=started_at, typical={})
        if not watch._tasks:
            return None
        watch.typical = p95_durations(store, spec.name)
        watch.missed = {t.name for t in store.tasks(run_id) if t.sla_missed}
        watch.warned = announced_tasks(store, run_id, "sla.at_risk") | watch.missed
        return watch

    def check(self, now: float, states: Mapping[str, str]) -> SlaCheck:
        """Compare ``now`` with each SLA given the tasks' current ``states``."""
        done = {n for n, s in states.items() if s in FINISHED_TASK_STATES}
        remaining = remaining_chains(self.spec, done, self.typical) if self.typical else {}
        at_risk: dict[str, float] = {}
        missed: list[str] = []
        wake: list[float] = []
        for task in self._tasks:
            name, state = task.name, states.get(task.name)
            if state in FINISHED_TASK_STATES and state != "failed":
                continue  # met, skipped or cancelled: a failed task still misses its SLA
            deadline = self.started_at + (task.sla or 0.0)
            if name not in self.missed:
                if now >= deadline:
                    missed.append(name)
                    self.missed.add(name)
                    self.warned.add(name)  # a miss says more than a late warning would
                else:
                    wake.append(deadline)
            if name in self.warned or name in done:
                continue
            ahead = remaining.get(name, 0.0)
            if now > deadline - ahead:
                at_risk[name] = ahead
                self.warned.add(name)
            else:
                wake.append(deadline - ahead)
        return SlaCheck(at_risk=at_risk, missed=tuple(missed),
                        next_at=max(min(wake), now + _MIN_SLEEP) if wake else None)
