"""The daemon's loops: scheduling (due fire times through the overlap policy into runs),
run ownership (resume runs whose owner is gone), and graceful shutdown.

The scheduler reads time from an injected clock, so tests move time instead of sleeping.
Scheduler state lives in the state store's key-value table: ``scheduler/<workflow>`` holds
the cursor (last fire time handled) and the backlog; ``paused/<workflow>`` the pause flag.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs
from anyio.abc import TaskGroup

from ..abc import Trigger
from ..config import raise_problems, schedule_problems
from ..events import EventBus
from ..exceptions import ConfigError, ForgeError, RunLocked
from ..metrics import Metrics
from ..runner import deliver_hooks, drive_run, new_owner_id, queue_run, resume_run
from ..scheduler import CronScheduler, WorkflowState, plan_due
from ..secrets import Redactor, resolve_secrets
from ..spec import ProjectSpec, WorkflowSpec
from ..state import RunRecord, StateStore, orphaned
from ..state._history import consecutive_failures
from ..state._store import STALE_AFTER

__all__ = ["Clock", "Daemon", "DaemonOptions"]

_Work = Literal["new", "resume", "hooks"]
"""What the daemon does with a run it takes: drive it, resume it, or make its unsent hooks."""

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class DaemonOptions:
    """How the daemon runs; seconds throughout."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    tick: float = 1.0
    reclaim_every: float = 5.0
    stale_after: float = STALE_AFTER
    grace: float = 30.0
    http: bool = True


@attrs.define
class Daemon:
    """Scheduler, run ownership and HTTP API in one process."""

    project: ProjectSpec
    home: Path
    store: StateStore
    options: DaemonOptions = attrs.field(factory=DaemonOptions)
    clock: Clock = system_clock
    bus: EventBus = attrs.field(factory=EventBus)
    metrics: Metrics = attrs.field(factory=Metrics)
    owner: str = attrs.field(factory=new_owner_id)
    ready: bool = False
    started_at: float = attrs.field(factory=time.time)
    _scheduler: CronScheduler = attrs.field(factory=CronScheduler)
    _driving: dict[str, anyio.CancelScope] = attrs.field(factory=dict)
    _driving_wf: dict[str, str] = attrs.field(factory=dict)
    _tg: TaskGroup | None = None
    _stopping: bool = False
    _redactor: Redactor = attrs.field(factory=Redactor)
    _server: Any = None
    _next_fire: datetime | None = None
    http_done: anyio.Event = attrs.field(factory=anyio.Event)

    def __attrs_post_init__(self) -> None:
        self.bus.subscribe(self.metrics.on_event)
        values: list[str] = []
        raise_problems([p for spec in self.project.workflows.values()
                        for p in schedule_problems(spec)])
        for spec in self.project.workflows.values():
            try:
                values.extend(resolve_secrets(spec, _base_dir(spec)).values())
            except ConfigError as exc:
                log.warning("%s", exc)
        self._redactor = Redactor(values)

    @property
    def redactor(self) -> Redactor:
        return self._redactor

    @property
    def driving(self) -> list[str]:
        return sorted(self._driving)

    # -- pause ------------------------------------------------------------------------------

    def is_paused(self, workflow: str) -> bool:
        return bool(self.store.get_value("paused", workflow))

    def pause(self, workflow: str, reason: str = "paused by user") -> None:
        set_paused(self.store, workflow, reason)
        self.metrics.paused.labels(workflow).set(1)

    # -- the loops ----------------------------------------------------------------------------

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                    handle_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or cancellation); ``task_status`` fires once the first
        scheduling and reclaiming pass is done and HTTP (if enabled) is listening."""
        _check_binding(self.options)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if handle_signals:
                tg.start_soon(self._watch_signals)
            if self.options.http:
                from ._http import start_http

                self._server = await tg.start(start_http, self)
            await self.reclaim()
            await self.tick()
            self.ready = True
            task_status.started()
            tg.start_soon(self._loop, lambda: self._sleep_for(), self.tick)
            tg.start_soon(self._loop, lambda: self.options.reclaim_every, self.reclaim)

    def _sleep_for(self) -> float:
        """Until the next fire time, at most ``tick`` seconds (the clock may jump)."""
        if self._next_fire is None:
            return self.options.tick
        until = (self._next_fire - self.clock()).total_seconds()
        return max(0.001, min(self.options.tick, until))

    async def _loop(self, every: Callable[[], float], step: Callable[[], Any]) -> None:
        while not self._stopping:
            await anyio.sleep(every())
            try:
                await step()
            except ForgeError as exc:
                log.error("%s", exc)

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                await self.shutdown()
                return

    async def shutdown(self) -> None:
        """Stop scheduling, give driven runs ``grace`` seconds, then interrupt the rest."""
        self._stopping = True
        self.ready = False
        if self._server is not None:
            self._server.should_exit = True
            with anyio.move_on_after(10):
                await self.http_done.wait()
        with anyio.move_on_after(self.options.grace):
            while self._driving:
                await anyio.sleep(0.1)
        for run_id, scope in list(self._driving.items()):
            log.warning("run %s did not finish within the grace period: interrupted", run_id)
            scope.cancel()
        while self._driving:
            await anyio.sleep(0.05)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def tick(self) -> None:
        """One scheduling pass over every scheduled, unpaused workflow (the engine driving
        each run warns of SLAs at risk)."""
        now = self.clock()
        upcoming: list[datetime] = []
        for spec in self.project.workflows.values():
            if spec.schedule and not self._stopping:
                self._tick_workflow(spec, now)
                trigger = Trigger(expression=spec.schedule, timezone=spec.timezone)
                nxt = self._scheduler.next_after(trigger, now)
                if nxt is not None:
                    upcoming.append(nxt)
        self._next_fire = min(upcoming, default=None)

    def _tick_workflow(self, spec: WorkflowSpec, now: datetime) -> None:
        paused = self.is_paused(spec.name)
        self.metrics.paused.labels(spec.name).set(1 if paused else 0)
        if paused:
            return
        state = self.store.get_value("scheduler", spec.name) or {}
        if "cursor" not in state:
            self.store.set_value("scheduler", spec.name, {"cursor": now.isoformat(), "backlog": []})
            return
        trigger = Trigger(expression=spec.schedule or "", timezone=spec.timezone)
        catchup = timedelta(seconds=spec.catchup) if spec.catchup is not None else None
        due = self._scheduler.due(trigger, datetime.fromisoformat(state["cursor"]), now, catchup)
        cursor = max([datetime.fromisoformat(state["cursor"]), *due]).isoformat()
        stored = [r.run_id for r in reversed(
            self.store.list_runs(spec.name, states=("queued", "running"), limit=1000))]
        mine = [r for r, wf in self._driving_wf.items() if wf == spec.name and r not in stored]
        active = (*stored, *mine)
        plan = plan_due([d.isoformat() for d in due],
                        WorkflowState(active=active, backlog=tuple(state.get("backlog", ()))),
                        overlap=spec.overlap, max_active_runs=spec.max_active_runs)
        with self.store.tx():  # a fire time is passed and its run recorded together
            self.store.set_value("scheduler", spec.name,
                                 {"cursor": cursor, "backlog": list(plan.backlog)})
            started = [queue_run(spec, self.store, logical_date=date, trigger="schedule")
                       for date in plan.start]
        for date in plan.skipped:
            log.info("%s: skipped the run for %s (overlap policy %s)", spec.name, date,
                     spec.overlap)
            self.metrics.schedules_skipped.labels(spec.name).inc()
        for run_id in plan.cancel:
            if run_id in self._driving:
                self._driving[run_id].cancel()
        for date, run_id in zip(plan.start, started, strict=True):
            lag = (self.clock() - datetime.fromisoformat(date)).total_seconds()
            self.metrics.observe_lag(spec.name, lag)
            self._launch(spec, run_id, "new")

    def _launch(self, spec: WorkflowSpec, run_id: str, work: _Work = "resume") -> None:
        assert self._tg is not None, "the daemon is not serving"
        self._driving[run_id] = anyio.CancelScope()
        self._driving_wf[run_id] = spec.name
        self._tg.start_soon(self._drive, spec, run_id, work)

    async def _drive(self, spec: WorkflowSpec, run_id: str, work: _Work) -> None:
        """Do ``work`` on one run under a scope the shutdown path can cancel: drive it
        (``new``, just queued by a tick), resume it, or only make the hook calls a finished
        run's dead engine left (``hooks``). A new run killed before it is driven is queued in
        the store with no owner: a later reclaim resumes it."""
        scope = self._driving[run_id]
        try:
            with scope:
                if work == "new":
                    await drive_run(spec, run_id, store=self.store, home=self.home, bus=self.bus,
                                    owner=self.owner)
                elif work == "resume":
                    await resume_run(spec, run_id, store=self.store, home=self.home,
                                     bus=self.bus, owner=self.owner)
                else:
                    await deliver_hooks(spec, run_id, store=self.store, bus=self.bus,
                                        owner=self.owner)
        except RunLocked as exc:
            log.info("%s", exc)
        except ForgeError as exc:
            log.error("run %s of %s: %s", run_id, spec.name, exc)
        finally:
            self._driving.pop(run_id, None)
            self._driving_wf.pop(run_id, None)
            if work != "hooks" and scope.cancel_called and self._stopping:
                self.store.set_run_state(run_id, "interrupted")
        if work != "hooks":
            self._after_run(spec)

    def _after_run(self, spec: WorkflowSpec) -> None:
        limit = spec.pause_after_failures
        failed = consecutive_failures(self.store, spec.name) if limit else 0
        if limit and failed >= limit and not self.is_paused(spec.name):
            log.warning("%s: paused after %d failed runs in a row", spec.name, limit)
            self.pause(spec.name, f"paused after {limit} consecutive failed runs")

    async def reclaim(self) -> None:
        """Resume every queued or running run of a known workflow whose owner is gone or whose
        heartbeat is stale, and send the hooks a finished run's dead engine left unsent; the
        store's claim refuses runs a live engine still drives."""
        now = time.time()
        for run in self.store.list_runs(states=("queued", "running"), limit=10000):
            spec = self.project.workflows.get(run.workflow)
            if spec is None or not self._orphaned(run, now):
                continue
            log.info("resuming run %s of %s (owner %s gone)", run.run_id, run.workflow, run.owner)
            self._launch(spec, run.run_id)
        for run in self.store.list_runs(hooks_pending=True, limit=10000):
            spec = self.project.workflows.get(run.workflow)
            if spec is None or run.state in ("queued", "running") or not self._orphaned(run, now):
                continue  # a resumed run sends its own
            log.info("sending the hooks run %s of %s left unsent (owner %s gone)", run.run_id,
                     run.workflow, run.owner)
            self._launch(spec, run.run_id, "hooks")

    def _orphaned(self, run: RunRecord, now: float) -> bool:
        """Nobody drives ``run``: not this daemon, and its owner is gone or its heartbeat
        stale (a run just created, with no owner yet, is about to be claimed)."""
        if run.run_id in self._driving or self._stopping:
            return False
        return orphaned(run, now, self.options.stale_after)


def set_paused(store: StateStore, workflow: str, reason: str | None) -> None:
    """Pause (``reason`` given) or unpause (``None``) a workflow's schedule."""
    store.set_value("paused", workflow, {"reason": reason, "at": time.time()} if reason else None)


def paused_info(store: StateStore, workflow: str) -> Mapping[str, Any] | None:
    value = store.get_value("paused", workflow)
    return value if isinstance(value, dict) else None


def _base_dir(spec: WorkflowSpec) -> Path:
    return Path(spec.source).resolve().parent if spec.source else Path.cwd()


_LOOPBACK = ("127.", "::1", "localhost")


def _check_binding(options: DaemonOptions) -> None:
    if options.http and not options.host.startswith(_LOOPBACK) and not options.token:
        raise ConfigError(
            f"the daemon would listen on {options.host}, beyond loopback, without a token;"
            " set forge.daemon_token (or --token / FORGE_DAEMON_TOKEN)"
        )
