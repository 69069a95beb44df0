"""The DAG engine: drives one run of one workflow to its end, ready-set first.

A task starts the moment its trigger rule allows, within the workflow's concurrency
limit. Every state change is committed to the :class:`StateStore` (in group commits, at
most ``commit_delay`` after it happened) before it is announced on the :class:`EventBus`;
an attempt's start is on disk before its process runs (written ahead by the
:class:`Journal`). So a run killed at any moment resumes from the store: finished tasks are
never run again, tasks caught running get a new attempt.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ..abc import Executor, Outcome
from ..events import Event, EventBus
from ..exceptions import RunLocked
from ..spec import TaskSpec, WorkflowSpec
from ..state import FINISHED_TASK_STATES, PendingHook, StateStore, TaskRecord
from ..state._journal import Journal
from ._graph import Graph
from ._logpipe import LogPipes
from ._rules import EARLY_RULES, decide, retry_delay
from ._sla import SlaWatch
from ._taskrun import NullRedactor, TaskResolver

__all__ = ["Engine"]

log = logging.getLogger(__name__)

ExecutorFor = Callable[[TaskSpec], Executor]
HookRunner = Callable[[PendingHook], Any]
"""Sends a hook call that is committed to the store's outbox."""


@attrs.define
class Engine:
    """Drives the run ``run_id`` (already created in ``store``) of ``spec``."""

    spec: WorkflowSpec
    run_id: str
    store: StateStore
    bus: EventBus
    executor_for: ExecutorFor
    resolver: TaskResolver
    hook: HookRunner | None = None
    heartbeat: Callable[[], bool] | None = None
    heartbeat_every: float = 5.0
    cancel_requested: Callable[[], bool] | None = None
    """Whether someone asked, from outside, to stop the run (``forge workflow cancel``):
    asked when the run starts and every ``cancel_every`` seconds."""
    cancel_every: float = 1.0
    commit_delay: float = 0.05
    """Longest a change waits for its group commit (the ends of a fan-out of short tasks
    then share a transaction, about 80 of them here; a task waits for none of it, only its
    announcement does: a live view still updates 20 times a second)."""
    _graph: Graph = attrs.field(init=False)
    _tasks: dict[str, TaskSpec] = attrs.field(init=False)
    _order: list[str] = attrs.field(init=False)
    _candidates: set[str] = attrs.field(init=False, factory=set)
    _unfinished: int = attrs.field(init=False, default=0)
    _open_deps: dict[str, int] = attrs.field(init=False, factory=dict)
    _states: dict[str, str] = attrs.field(init=False, factory=dict)
    _failures: dict[str, int] = attrs.field(init=False, factory=dict)
    _attempts: dict[str, int] = attrs.field(init=False, factory=dict)
    _outputs: dict[str, Mapping[str, Any]] = attrs.field(init=False, factory=dict)
    _next_try: dict[str, float] = attrs.field(init=False, factory=dict)
    _lost: bool = attrs.field(init=False, default=False)
    _wake: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _started_at: float = attrs.field(init=False, default=0.0)
    _journal: Journal = attrs.field(init=False)
    _announce: list[tuple[str, str | None, float, Mapping[str, Any]]] = attrs.field(
        init=False, factory=list)
    """Committed-to-be events: (kind, task, at, data)."""
    _dirty: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _redacting: bool = attrs.field(init=False, default=False)
    _ready: deque[str] = attrs.field(init=False, factory=deque)
    _more: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _workers: int = attrs.field(init=False, default=0)
    _idle: int = attrs.field(init=False, default=0)
    _tg: anyio.abc.TaskGroup | None = attrs.field(init=False, default=None)
    _pipes: LogPipes | None = attrs.field(init=False, default=None)
    _cancelled: bool = attrs.field(init=False, default=False)
    """Stopped on a request from outside (see ``cancel_requested``)."""

    def __attrs_post_init__(self) -> None:
        self._tasks = {t.name: t for t in self.spec.tasks}
        self._graph = Graph({t.name: tuple(t.depends_on) for t in self.spec.tasks})
        self._order = list(self._graph.topological_order())
        self._journal = Journal(self.store, self.run_id)
        self._redacting = not isinstance(self.resolver.redactor, NullRedactor)
        if self.resolver.secret_env:
            self._pipes = LogPipes(self.resolver.redactor.stream,
                                   root=self.resolver.home / "pipes", run_id=self.run_id)

    # -- committing and announcing -------------------------------------------------------

    def _commit(self) -> None:
        """Write every pending change in one transaction, then announce its events (built
        only when someone listens)."""
        self._journal.commit()
        events, self._announce = self._announce, []
        if self.bus.listened:
            for kind, task, at, data in events:
                self.bus.publish(Event(kind=kind, run_id=self.run_id, workflow=self.spec.name,
                                       at=at, task=task, data=data))

    def _changed(self) -> None:
        if not self._dirty.is_set():
            self._dirty.set()  # the group committer takes it within commit_delay

    async def _group_commit(self) -> None:
        """Commit what changed at most ``commit_delay`` after it changed."""
        while True:
            await self._dirty.wait()
            await anyio.sleep(self.commit_delay)
            self._dirty = anyio.Event()
            self._commit()

    def _emit(self, kind: str, task: str | None = None, **data: Any) -> None:
        self._record(kind, task, data)

    def _record(self, kind: str, task: str | None, data: dict[str, Any]) -> None:
        """Store an event; announce it once committed."""
        if self._redacting:
            data = self.resolver.redact(data)
        at = time.time()
        self._journal.add_event(kind, task, data, at)
        self._announce.append((kind, task, at, data))
        self._changed()

    def _set(self, task: str, state: str, *, event: str | None = None, **data: Any) -> None:
        """Store a task state (and its event); announce it once committed."""
        outputs = data.pop("outputs", None)
        next_try_at = data.pop("next_try_at", None)
        self._journal.set_task(task, state, outputs=outputs, next_try_at=next_try_at)
        if event:
            self._record(event, task, data)
        self._note(task, state)
        if outputs is not None:
            self._outputs[task] = outputs
        if next_try_at is not None:
            self._next_try[task] = next_try_at
        self._changed()

    def _note(self, task: str, state: str) -> None:
        """Track a state in memory: the unfinished count, and each dependent's count of
        upstream tasks still open; wake the scheduler when a dependent may be decidable or
        the run is done."""
        was = self._states.get(task) in FINISHED_TASK_STATES
        now = state in FINISHED_TASK_STATES
        self._states[task] = state
        if was == now:
            return
        self._unfinished += was - now
        for dependent in self._graph.dependents(task):
            self._open_deps[dependent] += was - now
            if self._decidable(dependent):
                self._candidates.add(dependent)
                self._wake.set()
        if not self._unfinished:
            self._wake.set()

    def _decidable(self, name: str) -> bool:
        """Pending, and its rule can decide now (every upstream task finished, or a rule
        that decides early)."""
        return self._states[name] == "pending" and (
            not self._open_deps[name] or self._tasks[name].trigger_rule in EARLY_RULES)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> str:
        """Drive the run to its end; returns the final run state."""
        record = self.store.get_run(self.run_id, with_tasks=False)
        resumed = record.started_at is not None
        self._started_at = record.started_at or time.time()
        lost = self._journal.lost_starts()
        # a run that never started and wrote no start ahead has every task pending
        self._load(self.store.tasks(self.run_id) if resumed or lost else (), lost,
                   self.store.cleared(self.run_id) if resumed else {})
        self._journal.set_run_state("running", started_at=self._started_at)
        self._emit("run.resumed" if resumed else "run.started",
                   params=dict(record.params), logical_date=record.logical_date)
        self._commit()
        final = "failed"
        try:
            if self.cancel_requested is not None and self.cancel_requested():
                # asked before it started: nothing runs. Not even a worker may start, for
                # a task started in a cancelled scope runs until its first wait, and a
                # child can be spawned before that
                self._cancelled = True
            else:
                await self._drive()
            if self._lost:
                raise RunLocked(self.run_id, "another engine")
            if self._cancelled:  # its running tasks were stopped as on Ctrl-C
                self._cancel_unfinished()
                final = "cancelled"
            else:
                final = self._final_state()
        except BaseException:
            if self._lost:  # the run is someone else's now: write nothing more
                raise
            final = "cancelled"
            with anyio.CancelScope(shield=True):
                self._cancel_unfinished()
            raise
        finally:
            if self._pipes is not None:
                self._pipes.close()
            if not self._lost:
                with anyio.CancelScope(shield=True):
                    self._journal.set_run_state(final, finished_at=time.time())
                    self._emit("run.finished", state=final)
                    self._commit()
            self._journal.close(remove=not self._lost)
        return final

    async def _drive(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._watch_sla)
            tg.start_soon(self._group_commit)
            if self.heartbeat is not None:
                tg.start_soon(self._beat, tg.cancel_scope)
            if self.cancel_requested is not None:
                tg.start_soon(self._watch_cancel, tg.cancel_scope)
            await self._schedule(tg)
            tg.cancel_scope.cancel()

    def _load(self, tasks: Iterable[TaskRecord],
              lost_starts: Iterable[tuple[str, int, float, str | None]],
              cleared: Mapping[str, int]) -> None:
        """The state of a run that started before: each task's attempts, outputs, retry
        time and failures so far (those before it was last cleared do not count)."""
        lost: dict[str, list[tuple[int, float, str | None]]] = {}
        for task, number, at, log_path in lost_starts:
            lost.setdefault(task, []).append((number, at, log_path))
        for t in tasks:
            self._attempts[t.name] = max((a.number for a in t.attempts), default=0)
            for number, at, log_path in lost.get(t.name, ()):
                if number > self._attempts[t.name]:  # started, never committed: it is void
                    self._journal.record_lost_start(t.name, number, at, log_path)
                    self._attempts[t.name] = number
            self._outputs[t.name] = t.outputs
            if t.next_try_at is not None:
                self._next_try[t.name] = t.next_try_at
            after = cleared.get(t.name, 0)
            self._failures[t.name] = sum(a.state in ("failed", "timed_out")
                                         for a in t.attempts if a.number > after)
            state = t.state
            if state in ("running", "queued"):
                # caught mid-attempt by a crash: that attempt is void, the task goes again
                if t.attempts and t.attempts[-1].state == "running":
                    self._journal.finish_attempt(t.name, t.attempts[-1].number, "interrupted",
                                                 error="engine stopped mid-attempt")
                state = "pending"
                self._journal.set_task(t.name, state)
            if state == "cancelled":
                state = "pending"
                self._journal.set_task(t.name, state)
            self._states[t.name] = state
            self._unfinished += state not in FINISHED_TASK_STATES
        for name in self._order:  # a run that never started: every task pending
            if name not in self._states:
                self._states[name] = "pending"
                self._unfinished += 1
        for name in self._order:
            self._open_deps[name] = sum(self._states[d] not in FINISHED_TASK_STATES
                                        for d in self._graph.dependencies(name))

    async def _schedule(self, tg: anyio.abc.TaskGroup) -> None:
        """Queue tasks as their trigger rules allow. A task is looked at again only when one
        of its upstream tasks finishes, and a task whose rule needs every upstream task
        finished only once they all are."""
        position = {name: i for i, name in enumerate(self._order)}
        for name, state in self._states.items():
            if state == "up_for_retry":  # resumed mid-backoff: keep its retry schedule
                tg.start_soon(self._retry_later, name)
        self._candidates = {n for n in self._order if self._decidable(n)}
        while True:
            while self._candidates:
                batch, self._candidates = self._candidates, set()
                for name in sorted(batch, key=position.__getitem__):
                    if (self._decidable(name) and self._decide(name) == "run"
                            and self._enqueue(name)):
                        # a new worker starts its task now, before the rest of a large
                        # batch is queued: the machine runs it meanwhile
                        await anyio.lowlevel.checkpoint()
            if self._unfinished == 0:
                return
            await self._wake.wait()
            self._wake = anyio.Event()

    def _decide(self, name: str) -> str:
        spec = self._tasks[name]
        verdict = decide(spec.trigger_rule, [self._states[d] for d in spec.depends_on])
        if verdict == "run":
            self._set(name, "queued", event="task.queued")
        elif verdict != "wait":
            self._set(name, verdict, event=f"task.{verdict}",
                      reason=f"trigger rule {spec.trigger_rule.value}")
        return verdict

    def _final_state(self) -> str:
        bad = {"failed", "upstream_failed"}
        return "failed" if any(s in bad for s in self._states.values()) else "succeeded"

    def _cancel_unfinished(self) -> None:
        for name, state in self._states.items():
            if state not in FINISHED_TASK_STATES:
                self._set(name, "cancelled", event="task.cancelled")

    # -- workers: at most ``concurrency`` attempts at a time, in the order tasks queued ----

    def _enqueue(self, name: str) -> bool:
        """Hand a task to an idle worker (a new one while fewer than ``concurrency`` run);
        whether a new worker was started."""
        self._ready.append(name)
        if self._idle:
            self._more.set()
            self._more = anyio.Event()
        elif self._workers < max(1, self.spec.concurrency):
            assert self._tg is not None
            self._workers += 1
            self._tg.start_soon(self._worker)
            return True
        return False

    async def _worker(self) -> None:
        while True:
            while self._ready:
                await self._drive_task(self._ready.popleft())
            self._idle += 1
            try:
                await self._more.wait()
            finally:
                self._idle -= 1

    async def _retry_later(self, name: str) -> None:
        next_try = self._next_try.pop(name, None)
        if next_try is not None:
            await anyio.sleep(max(0.0, next_try - time.time()))
        self._enqueue(name)

    # -- one task --------------------------------------------------------------------------

    async def _drive_task(self, name: str) -> None:
        """One attempt of ``name``; its end and the task's new state are recorded together."""
        spec = self._tasks[name]
        outcome, number = await self._attempt(spec)
        self._finish_attempt(name, number, outcome)
        if self._settle(spec, number, outcome):
            assert self._tg is not None
            self._tg.start_soon(self._retry_later, name)

    def _settle(self, spec: TaskSpec, number: int, outcome: Outcome) -> bool:
        """Record where an attempt leaves its task; whether the task goes again."""
        name = spec.name
        if outcome.status == "succeeded":
            self._set(name, "succeeded", event="task.succeeded", outputs=dict(outcome.outputs),
                      attempt=number, duration=outcome.duration)
            self._fire(spec.on_success, "on_success", name, number, outcome)
            return False
        if outcome.status == "skipped":
            self._set(name, "skipped", event="task.skipped", attempt=number,
                      reason=f"exit code {outcome.exit_code}")
            return False
        self._failures[name] = self._failures.get(name, 0) + 1
        if self._failures[name] <= spec.retries:
            delay = retry_delay(spec, self._failures[name])
            self._set(name, "up_for_retry", event="task.retrying", attempt=number,
                      error=outcome.error, delay=round(delay, 3),
                      next_try_at=time.time() + delay)
            self._fire(spec.on_retry, "on_retry", name, number, outcome)
            return True
        self._set(name, "failed", event="task.failed", attempt=number, error=outcome.error,
                  exit_code=outcome.exit_code)
        self._fire(spec.on_failure, "on_failure", name, number, outcome)
        return False

    async def _attempt(self, spec: TaskSpec) -> tuple[Outcome, int]:
        """Run one attempt; the caller records how it ended."""
        number = self._attempts.get(spec.name, 0) + 1
        self._attempts[spec.name] = number
        outcome = await self._run_attempt(spec, number)
        if not (self._redacting and outcome.error):
            return outcome, number
        error = self.resolver.redact(outcome.error)
        return (outcome if error == outcome.error else attrs.evolve(outcome, error=error)), number

    async def _run_attempt(self, spec: TaskSpec, number: int) -> Outcome:
        try:
            run = self.resolver.resolve(spec, number, self._outputs)
        except Exception as exc:  # a template with no value, a bad volume string
            self._journal.start_attempt(spec.name, number, None)
            now = time.time()  # not before the start the journal recorded
            return Outcome(status="failed", error=str(exc), started_at=now, finished_at=now)
        log_path = str(run.log_path) if run.log_path else None
        if any(self._journal.pending(d) for d in spec.depends_on):
            self._commit()  # what it starts on is on disk before it starts
        self._journal.start_attempt(spec.name, number, log_path)  # on disk when it returns
        self._emit("task.started", spec.name, attempt=number)
        self._states[spec.name] = "running"
        try:
            executor = self.executor_for(spec)
            if self._pipes is not None:
                return await self._pipes.submit(executor, run)
            return await executor.submit(run)
        except BaseException:
            self._journal.finish_attempt(spec.name, number, "cancelled", error="cancelled")
            raise

    def _finish_attempt(self, task: str, number: int, outcome: Outcome) -> None:
        self._journal.finish_attempt(task, number, outcome.status, exit_code=outcome.exit_code,
                                     error=outcome.error, finished_at=outcome.finished_at or None)

    def _fire(self, ref: str | None, event: str, task: str, attempt: int, outcome: Outcome) -> None:
        if ref is None:
            return
        self._fire_hook(ref, event, task, attempt=attempt, status=outcome.status,
                        exit_code=outcome.exit_code, error=outcome.error)

    def _fire_hook(self, ref: str | None, event: str, task: str, **data: Any) -> None:
        if ref is None or self.hook is None:
            return
        payload = self.resolver.redact({"event": event, "workflow": self.spec.name,
                                        "run_id": self.run_id, "task": task, **data})
        hook = PendingHook(id=uuid.uuid4().hex, run_id=self.run_id, ref=ref, event=event,
                           payload=payload)
        self._journal.add_hook(hook)
        self._commit()  # the call, and the state it is about, are on disk before it is made
        self.hook(hook)

    # -- background duties ---------------------------------------------------------------

    async def _watch_sla(self) -> None:
        """Announce ``sla.at_risk`` and ``sla.missed``, once per task and run."""
        watch = SlaWatch.load(self.spec, self._started_at, self.store, self.run_id)
        while watch is not None:
            now = time.time()
            found = watch.check(now, self._states)
            elapsed = round(now - self._started_at, 3)
            for name, ahead in found.at_risk.items():
                log.warning("%s run %s: task %s is at risk of missing its SLA", self.spec.name,
                            self.run_id, name)
                self._emit("sla.at_risk", name, sla=self._tasks[name].sla, elapsed=elapsed,
                           expected=round(elapsed + ahead, 3))
            for name in found.missed:
                sla = self._tasks[name].sla
                self._journal.mark_sla_missed(name)
                self._emit("sla.missed", name, sla=sla, elapsed=elapsed)
                self._fire_hook(self._tasks[name].on_sla_miss, "sla_miss", name,
                                sla=sla, elapsed=elapsed)
            if found.next_at is None:
                return
            await anyio.sleep(found.next_at - time.time())

    async def _watch_cancel(self, scope: anyio.CancelScope) -> None:
        assert self.cancel_requested is not None
        while True:
            await anyio.sleep(self.cancel_every)
            if self.cancel_requested():
                break
        log.info("run %s: cancel requested; stopping its tasks", self.run_id)
        self._cancelled = True
        scope.cancel()

    async def _beat(self, scope: anyio.CancelScope) -> None:
        assert self.heartbeat is not None
        while True:
            await anyio.sleep(self.heartbeat_every)
            if not self.heartbeat():
                log.error("run %s was taken over by another engine; stopping", self.run_id)
                self._lost = True
                scope.cancel()
                return
