"""Runs and resumes workflows: builds the backends a workflow names (through the plugin
loader), claims the run so no second engine drives it, and hands it to the engine.

The CLI, the daemon and Python callers all start runs here.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as _secrets
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from . import plugins
from .abc import Executor, Runtime
from .dag._engine import Engine
from .dag._graph import Graph
from .dag._taskrun import NullRedactor, TaskResolver
from .events import Event, EventBus
from .exceptions import ConfigError, PluginError
from .spec import TaskSpec, WorkflowSpec
from .state import PendingHook, RunRecord, StateStore

__all__ = ["DONE_RUN_STATES", "check_plugins", "deliver_hooks", "drive_run", "merge_params",
           "new_owner_id", "queue_run", "resume_run", "retry_run", "run_workflow"]

log = logging.getLogger(__name__)

DONE_RUN_STATES = frozenset({"succeeded", "failed"})
"""Run states a resume leaves as they are (a cancelled or interrupted run's tasks go again)."""


def new_owner_id() -> str:
    """``host:pid:nonce`` — who drives a run; a dead pid on this host owns nothing."""
    return f"{socket.gethostname()}:{os.getpid()}:{_secrets.token_hex(4)}"


def merge_params(spec: WorkflowSpec, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Declared params overridden by ``given``; an undeclared name is a config error. A
    string given for a param whose default is a number, a boolean, a list or a mapping (as
    ``-p key=value`` gives) is read as one, so a Python task gets the type its default has."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        declared = ", ".join(sorted(spec.params)) or "none"
        raise ConfigError(
            f"workflow {spec.name!r} has no param {', '.join(map(repr, unknown))} "
            f"(declared: {declared}); declare it under params:"
        )
    for name, value in given.items():
        default = spec.params[name]
        if isinstance(value, str) and not isinstance(default, str) and default is not None:
            given[name] = _as_type_of(default, value, name)
    return {**spec.params, **given}


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _as_type_of(default: Any, text: str, name: str) -> Any:
    """``text`` read as the type of ``default``; a :class:`ConfigError` saying what it takes
    when it cannot be."""
    kind = type(default)
    try:
        if kind is bool:
            word = text.strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
        elif kind is int:
            return int(text)
        elif kind is float:
            return float(text)
        elif isinstance(default, (list, dict)):
            value = json.loads(text)
            if isinstance(value, kind):
                return value
        else:
            return text
    except ValueError:
        pass
    expected = {bool: "true or false", int: "a whole number", float: "a number",
                list: "a JSON list", dict: "a JSON object"}.get(kind, kind.__name__)
    raise ConfigError(f"param {name!r} takes {expected} (its default is {default!r}), "
                      f"got {text!r}")


def _plugin_names(spec: WorkflowSpec, task: TaskSpec) -> tuple[str, str]:
    """(executor, runtime) a task runs on: a task with ``image:`` needs the linux runtime."""
    runtime = "linux" if task.image else spec.runtime
    return (task.executor or spec.executor, runtime)


def check_plugins(spec: WorkflowSpec) -> None:
    """Raise :class:`~forge_core.exceptions.PluginError` (saying what to install) if a task
    needs an executor or runtime that is missing or unusable here."""
    for pair in sorted({_plugin_names(spec, t) for t in spec.tasks}):
        for group, name in zip(("executor", "runtime"), pair, strict=True):
            cls = plugins.load_class(group, name)
            avail = cls.available()
            if not avail.ok:
                raise PluginError(f"{group} {name!r} (workflow {spec.name!r}) is not usable "
                                  f"here: {avail.reason}", group=group, name=name)


@attrs.define
class _Backends:
    """Executors built on demand, one per (executor, runtime) pair, closed at the end."""

    spec: WorkflowSpec
    queue_url: str | None = None
    _executors: dict[tuple[str, str], Executor] = attrs.field(factory=dict)
    _runtimes: dict[str, Runtime] = attrs.field(factory=dict)

    def prepare(self) -> None:
        """Build every backend the workflow's tasks need, so a missing or unusable plugin
        fails the run before anything runs (each plugin loaded once)."""
        for task in self.spec.tasks:
            self.executor_for(task)

    def executor_for(self, task: TaskSpec) -> Executor:
        key = _plugin_names(self.spec, task)
        if key not in self._executors:
            executor, runtime_name = key
            if runtime_name not in self._runtimes:
                self._runtimes[runtime_name] = plugins.create("runtime", runtime_name)
            services: dict[str, Any] = {"concurrency": self.spec.concurrency,
                                        "runtime": self._runtimes[runtime_name]}
            if executor == "queue":
                from .queue.url import open_queue

                services["queue"] = open_queue(self.queue_url)
            self._executors[key] = plugins.create("executor", executor, **services)
        return self._executors[key]

    async def aclose(self) -> None:
        for executor in self._executors.values():
            await executor.aclose()
            if executor.queue is not None:
                await executor.queue.aclose()
        for runtime in self._runtimes.values():
            await runtime.aclose()


def _secrets_for(spec: WorkflowSpec) -> tuple[dict[str, str], Any]:
    if not spec.secrets:
        return {}, NullRedactor()
    from .secrets import Redactor, resolve_secrets

    base = Path(spec.source).resolve().parent if spec.source else Path.cwd()
    values = resolve_secrets(spec, base)
    return values, Redactor(values.values())


async def _drive(
    spec: WorkflowSpec, run_id: str, *, store: StateStore, home: Path, bus: EventBus,
    owner: str, queue_url: str | None,
) -> RunRecord:
    record = store.get_run(run_id, with_tasks=False)
    secret_env, redactor = _secrets_for(spec)
    resolver = TaskResolver(spec=spec, run_id=run_id, home=home, params=record.params,
                            logical_date=record.logical_date, secret_env=secret_env,
                            redactor=redactor)
    backends = _Backends(spec, queue_url)
    try:
        backends.prepare()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await backends.aclose()
        raise
    store.claim_run(run_id, owner)
    try:
        async with anyio.create_task_group() as hooks:
            def fire(hook: PendingHook) -> None:
                hooks.start_soon(_send_hook, spec, hook, store, bus, redactor)

            for hook in store.pending_hooks(run_id):  # committed by an engine killed before
                fire(hook)                            # it could send them
            engine = Engine(spec=spec, run_id=run_id, store=store, bus=bus,
                            executor_for=backends.executor_for, resolver=resolver, hook=fire,
                            heartbeat=lambda: store.heartbeat(run_id, owner),
                            cancel_requested=lambda: store.cancel_requested(run_id))
            if await engine.run() != "cancelled":  # a request that came too late is void
                store.forget_cancel(run_id)
    finally:
        with anyio.CancelScope(shield=True):
            await backends.aclose()
            store.release_run(run_id, owner)
    return store.get_run(run_id)


async def _send_hook(
    spec: WorkflowSpec, hook: PendingHook, store: StateStore, bus: EventBus, redactor: Any,
) -> None:
    """Make one committed hook call, then record how it ended and take it out of the outbox
    (a kill in between sends it again: at least once)."""
    from .hooks import run_hook

    result = await run_hook(hook.ref, spec, hook.event, hook.payload, redactor=redactor)
    kind = "hook.succeeded" if result.ok else "hook.failed"
    data = {"hook": hook.ref, "event": hook.event, "detail": redactor.redact(result.detail)}
    task, at = hook.payload.get("task"), time.time()
    store.hook_sent(hook, kind, task=task, data=data, at=at)
    bus.publish(Event(kind=kind, run_id=hook.run_id, workflow=spec.name, at=at, task=task,
                      data=data))


async def deliver_hooks(
    spec: WorkflowSpec, run_id: str, *, store: StateStore, bus: EventBus | None = None,
    owner: str | None = None,
) -> int:
    """Make the hook calls a killed engine committed for ``run_id`` (a run that finished, so
    nothing resumes it) and never recorded as sent; returns how many. Raises
    :class:`~forge_core.exceptions.RunLocked` while another engine holds the run."""
    owner, bus = owner or new_owner_id(), bus or EventBus()
    store.claim_run(run_id, owner)
    try:
        pending = store.pending_hooks(run_id)
        if pending:
            _secret_env, redactor = _secrets_for(spec)
            async with anyio.create_task_group() as tg:
                for hook in pending:
                    tg.start_soon(_send_hook, spec, hook, store, bus, redactor)
        return len(pending)
    finally:
        store.release_run(run_id, owner)


async def run_workflow(
    spec: WorkflowSpec,
    *,
    store: StateStore,
    home: Path,
    params: Mapping[str, Any] | None = None,
    logical_date: str | None = None,
    trigger: str = "manual",
    run_id: str | None = None,
    bus: EventBus | None = None,
    owner: str | None = None,
    queue_url: str | None = None,
) -> RunRecord:
    """Create a run of ``spec`` and drive it to its end; returns the finished record."""
    run_id = queue_run(spec, store, params=params, logical_date=logical_date, trigger=trigger,
                       run_id=run_id)
    return await drive_run(spec, run_id, store=store, home=home, bus=bus, owner=owner,
                           queue_url=queue_url)


def queue_run(
    spec: WorkflowSpec, store: StateStore, *, params: Mapping[str, Any] | None = None,
    logical_date: str | None = None, trigger: str = "manual", run_id: str | None = None,
) -> str:
    """Record a queued run of ``spec`` (declared params merged with ``params``); returns its
    id. Inside a caller's transaction, the run is recorded with whatever else it commits."""
    return store.create_run(spec.name, [t.name for t in spec.tasks],
                            params=merge_params(spec, params), logical_date=logical_date,
                            trigger=trigger, source=spec.source, run_id=run_id)


async def drive_run(
    spec: WorkflowSpec, run_id: str, *, store: StateStore, home: Path,
    bus: EventBus | None = None, owner: str | None = None, queue_url: str | None = None,
) -> RunRecord:
    """Drive a run :func:`queue_run` recorded to its end, then apply ``spec.retention``;
    returns the finished record."""
    try:
        return await _drive(spec, run_id, store=store, home=home, bus=bus or EventBus(),
                            owner=owner or new_owner_id(), queue_url=queue_url)
    finally:
        with anyio.CancelScope(shield=True):
            _retain(spec, store, home)


async def resume_run(
    spec: WorkflowSpec,
    run_id: str,
    *,
    store: StateStore,
    home: Path,
    bus: EventBus | None = None,
    owner: str | None = None,
    queue_url: str | None = None,
) -> RunRecord:
    """Finish an interrupted run: succeeded tasks stay done, interrupted ones go again. A run
    that already succeeded or failed is not driven again; only the hook calls its engine left
    unsent are made. Raises :class:`~forge_core.exceptions.RunLocked` while another engine
    drives it."""
    record = _run_of(spec, run_id, store)
    if record.state in DONE_RUN_STATES:
        await deliver_hooks(spec, run_id, store=store, bus=bus, owner=owner)
        return store.get_run(run_id)
    _same_tasks(spec, record)
    return await _drive(spec, run_id, store=store, home=home, bus=bus or EventBus(),
                        owner=owner or new_owner_id(), queue_url=queue_url)


async def retry_run(
    spec: WorkflowSpec,
    run_id: str,
    *,
    store: StateStore,
    home: Path,
    tasks: Sequence[str] = (),
    bus: EventBus | None = None,
    owner: str | None = None,
    queue_url: str | None = None,
) -> RunRecord:
    """Run a finished run's failed tasks again (or ``tasks``), with every task after them,
    as Airflow's "clear" or a CI's "re-run failed jobs" does: the other tasks keep their
    states and outputs, each cleared task gets its retries afresh, and its earlier attempts
    stay on record. A run with nothing to run again is returned as it is. Raises
    :class:`~forge_core.exceptions.ConfigError` for a run that has not finished (resume it)
    or an unknown task, and :class:`~forge_core.exceptions.RunLocked` while an engine holds
    the run."""
    record = _run_of(spec, run_id, store)
    if record.state not in DONE_RUN_STATES:
        raise ConfigError(f"run {run_id} is {record.state}, not finished; to finish it: "
                          f"forge workflow resume {run_id}")
    _same_tasks(spec, record)
    states = {t.name: t.state for t in record.tasks}
    unknown = [t for t in tasks if t not in states]
    if unknown:
        raise ConfigError(f"run {run_id} has no task {unknown[0]!r}; tasks: {', '.join(states)}")
    roots = list(tasks) or [name for name, state in states.items() if state == "failed"]
    if not roots:
        return record
    graph = Graph({t.name: tuple(t.depends_on) for t in spec.tasks})
    cleared = set(roots).union(*(graph.downstream(name) for name in roots))
    owner, bus = owner or new_owner_id(), bus or EventBus()
    store.claim_run(run_id, owner)  # no engine clears what another one drives
    store.forget_cancel(run_id)  # a cancel that came after the run ended is void
    store.clear_tasks(run_id, [t.name for t in spec.tasks if t.name in cleared])
    return await _drive(spec, run_id, store=store, home=home, bus=bus, owner=owner,
                        queue_url=queue_url)


def _run_of(spec: WorkflowSpec, run_id: str, store: StateStore) -> RunRecord:
    """The record of ``run_id``, which must be a run of ``spec``."""
    record = store.get_run(run_id, with_tasks=True)
    if record.workflow != spec.name:
        raise ConfigError(f"run {run_id} belongs to workflow {record.workflow!r}, not {spec.name!r}")
    return record


def _same_tasks(spec: WorkflowSpec, record: RunRecord) -> None:
    """Refuse to drive ``record`` on with a ``spec`` that has tasks the run never had."""
    known = {t.name for t in record.tasks}
    missing = [t.name for t in spec.tasks if t.name not in known]
    if missing:
        raise ConfigError(
            f"the workflow changed since run {record.run_id} started: new tasks "
            f"{', '.join(missing)}; start a new run instead"
        )


def _retain(spec: WorkflowSpec, store: StateStore, home: Path) -> None:
    """Keep the newest ``spec.retention`` finished runs of this workflow, logs included."""
    import shutil

    for run in store.prune(spec.retention, spec.name):
        shutil.rmtree(home / "logs" / run.run_id, ignore_errors=True)
