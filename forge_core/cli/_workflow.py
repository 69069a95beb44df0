"""``forge run``, ``forge workflow …`` and ``forge logs``: running workflows and reading
what they did."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from ._common import (
    ConfigOption,
    ExitCode,
    JsonOption,
    Target,
    emit_json,
    fail,
    guard,
    load_target,
    open_home,
    stdout_is_tty,
)

workflow_app = typer.Typer(help="Run, validate and inspect workflows.", no_args_is_help=True,
                          rich_markup_mode=None)

WorkflowOption = typer.Option(None, "--workflow", "-w", help="Workflow to pick when a file holds several.")
ParamOption = typer.Option(None, "--param", "-p", help="Override a param: -p key=value (repeatable).")


def _params(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"bad --param {pair!r}: write -p key=value")
        out[key.strip()] = value
    return out


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _took(seconds: float | None) -> str:
    return f"{seconds:.2f}s" if seconds is not None else "-"


def _engine_gone(record: Any, now: float) -> bool:
    """A queued or running run that no engine holds any more (killed, or its machine gone)."""
    from ..state import orphaned

    return record.state in ("queued", "running") and orphaned(record, now)


def _with_lost_starts(store: Any, record: Any) -> Any:
    """``record`` with the attempts its dead engine started but never committed (they are
    in its start file, written ahead: see docs/engine.md), shown as still running."""
    import attrs

    from ..state import AttemptRecord
    from ..state._journal import Journal

    lost: dict[str, list[tuple[int, float]]] = {}
    for task, number, at, _log_path in Journal(store, record.run_id).lost_starts():
        lost.setdefault(task, []).append((number, at))
    tasks = []
    for t in record.tasks:
        known = {a.number for a in t.attempts}
        extra = [AttemptRecord(run_id=record.run_id, task=t.name, number=n, state="running",
                               started_at=at) for n, at in lost.get(t.name, ()) if n not in known]
        tasks.append(attrs.evolve(t, state="running", attempts=(*t.attempts, *extra))
                     if extra else t)
    return attrs.evolve(record, tasks=tuple(tasks))


def _task_time(attempts: Any, now: float | None) -> float | None:
    """Seconds a task's attempts ran, the one still running counted up to ``now`` (``None``:
    its engine is gone, so how long it ran is unknown)."""
    took: float | None = None
    for a in attempts:
        if a.duration is not None:
            took = (took or 0.0) + a.duration
        elif now is not None and a.started_at is not None:
            took = (took or 0.0) + max(0.0, now - a.started_at)
    return took


def _plan(spec: Any, as_json: bool) -> None:
    from ..dag import Graph

    layers = Graph({t.name: tuple(t.depends_on) for t in spec.tasks}).layers()
    if as_json:
        emit_json({"workflow": spec.name, "steps": layers})
        return
    typer.echo(f"plan for {spec.name} ({len(spec.tasks)} tasks, concurrency {spec.concurrency}):")
    for i, layer in enumerate(layers, 1):
        note = " (in parallel)" if len(layer) > 1 else ""
        typer.echo(f"  step {i}: {', '.join(layer)}{note}")


def _execute(target: Target, spec: Any, params: dict[str, str], as_json: bool,
             resume_id: str | None = None, retry: tuple[str, list[str]] | None = None) -> None:
    import anyio

    from ..cli._display import LiveView, PlainView
    from ..cli._stopping import Stopped, until_stopped
    from ..events import EventBus
    from ..runner import resume_run, retry_run, run_workflow
    from ..runtime import own_process

    own_process()  # this process is Forge's: its tasks inherit none of its descriptors,
    # and its terminal is not theirs
    home, store = open_home(target.project)
    bus = EventBus()
    live = stdout_is_tty() and not as_json
    view: Any = LiveView([t.name for t in spec.tasks], f"workflow {spec.name}") if live else PlainView()
    bus.subscribe(view)
    queue_url = target.project.settings.queue

    async def work() -> Any:
        if retry is not None:
            return await retry_run(spec, retry[0], tasks=retry[1], store=store, home=home,
                                   bus=bus, queue_url=queue_url)
        if resume_id:
            return await resume_run(spec, resume_id, store=store, home=home, bus=bus,
                                    queue_url=queue_url)
        return await run_workflow(spec, store=store, home=home, params=params, bus=bus,
                                  queue_url=queue_url)

    try:
        if live:
            with view:
                record = anyio.run(until_stopped, work, view.close)
        else:
            record = anyio.run(until_stopped, work)
    except Stopped as stop:
        typer.echo(f"{stop}: running tasks were stopped and recorded as cancelled", err=True)
        raise typer.Exit(stop.exit_code) from None
    _report(record, as_json)
    raise typer.Exit(int(ExitCode.OK if record.state == "succeeded" else ExitCode.FAILED))


def _report(record: Any, as_json: bool) -> None:
    if as_json:
        emit_json(record)
        return
    failed = [t for t in record.tasks if t.state in ("failed", "upstream_failed")]
    typer.echo(f"run {record.run_id} {record.state} in {_took(record.duration)}")
    for t in failed:
        last = t.attempts[-1] if t.attempts else None
        why = f": {last.error}" if last and last.error else ""
        typer.echo(f"  {t.name} {t.state}{why}")
    if failed:
        typer.echo(f"  logs: forge logs {record.run_id} TASK")


def run(
    target: str = typer.Argument(None, help="Workflow name in forge.yml, or a .yml/.yaml/.py file."),
    config: Path = ConfigOption,
    workflow: str | None = WorkflowOption,
    param: list[str] = ParamOption,
    as_json: bool = JsonOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; run nothing."),
) -> None:
    """Run a workflow now and wait for it to finish (exit 0 ok, 1 failed, 2 bad config)."""
    with guard():
        loaded, name = load_target(config, target)
        spec = loaded.workflow(workflow or name)
        if dry_run:
            _plan(spec, as_json)
            return
        _execute(loaded, spec, _params(param), as_json)


@workflow_app.command("run")
def workflow_run(
    name: str = typer.Argument(..., help="Workflow name."),
    config: Path = ConfigOption,
    param: list[str] = ParamOption,
    as_json: bool = JsonOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; run nothing."),
) -> None:
    """Run workflow NAME from the config (same as: forge run NAME)."""
    run(target=name, config=config, workflow=None, param=param, as_json=as_json, dry_run=dry_run)


@workflow_app.command("list")
def workflow_list(config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """List the workflows the config defines."""
    with guard():
        loaded, _ = load_target(config)
        flows = loaded.project.workflows
        if as_json:
            emit_json([{"name": n, "tasks": len(w.tasks), "schedule": w.schedule,
                        "description": w.description} for n, w in flows.items()])
            return
        for n, w in flows.items():
            sched = f"  [{w.schedule}]" if w.schedule else ""
            desc = f"  {w.description}" if w.description else ""
            typer.echo(f"{n}  ({len(w.tasks)} tasks){sched}{desc}")


@workflow_app.command("validate")
def workflow_validate(
    target: str = typer.Argument(None, help="A config file or workflow name (default: forge.yml)."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Check a config without running anything: fields, types, dependencies, cycles, plugins."""
    from ..exceptions import ConfigError, PluginError

    with guard():
        try:
            loaded, name = load_target(config, target)
            flows = [loaded.workflow(name)] if name else list(loaded.project.workflows.values())
            from ..config import raise_problems, schedule_problems
            from ..runner import check_plugins

            raise_problems([p for spec in flows for p in schedule_problems(spec)])
            for spec in flows:
                check_plugins(spec)
        except (ConfigError, PluginError) as exc:
            if as_json:
                problems = getattr(exc, "problems", None) or [exc]
                emit_json({"ok": False, "problems": [str(p) for p in problems]})
                raise typer.Exit(int(ExitCode.USAGE)) from None
            raise
        from ..config import hook_warnings

        warnings = [str(w) for spec in flows for w in hook_warnings(spec)]
        if as_json:
            emit_json({"ok": True, "workflows": [w.name for w in flows], "warnings": warnings})
        else:
            for warning in warnings:
                typer.echo(f"warning: {warning}", err=True)
            tasks = sum(len(w.tasks) for w in flows)
            typer.echo(f"ok: {len(flows)} workflow(s), {tasks} task(s) in {loaded.path}")


@workflow_app.command("history")
def workflow_history(
    name: str = typer.Argument(None, help="Only runs of this workflow."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many runs."),
    as_json: bool = JsonOption,
) -> None:
    """Past and current runs, newest first."""
    with guard():
        _, store = open_home()
        runs = store.list_runs(name, limit=limit)
        if as_json:
            emit_json(runs)
            return
        if not runs:
            typer.echo("no runs yet")
        now = time.time()
        for r in runs:
            state = "interrupted" if _engine_gone(r, now) else r.state
            typer.echo(f"{r.run_id}  {r.workflow:<20} {state:<11} {_when(r.started_at)}  "
                       f"{_took(r.duration):>8}  {r.trigger}")


@workflow_app.command("show")
def workflow_show(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, unique prefix, or 'last'."),
    as_json: bool = JsonOption,
    gantt: Path = typer.Option(None, "--gantt", help="Write a Gantt chart of the run to this HTML file."),
) -> None:
    """One run: every task's state, attempts, duration and exit code."""
    with guard():
        _, store = open_home()
        record = store.get_run(store.resolve_run(run_ref))
        if gantt is not None:
            from ..render import gantt_html

            gantt.write_text(gantt_html(record), encoding="utf-8")
            typer.echo(f"wrote {gantt}", err=True)
        if as_json:
            emit_json(record)
            return
        now = time.time()
        gone = _engine_gone(record, now)
        if gone:
            record = _with_lost_starts(store, record)
        state = f"{record.state} (its engine is gone)" if gone else record.state
        typer.echo(f"run {record.run_id}  workflow {record.workflow}  {state}  "
                   f"started {_when(record.started_at)}  took {_took(record.duration)}")
        if record.params:
            typer.echo("params: " + ", ".join(f"{k}={v}" for k, v in record.params.items()))
        typer.echo(f"{'task':<24} {'state':<16} {'attempts':>8} {'duration':>9} {'exit':>5}")
        for t in record.tasks:
            last = t.attempts[-1] if t.attempts else None
            took = _task_time(t.attempts, None if gone else now)
            code = "" if last is None or last.exit_code is None else str(last.exit_code)
            typer.echo(f"{t.name:<24} {t.state:<16} {len(t.attempts):>8} {_took(took):>9} {code:>5}")
            if last is not None and last.error and t.state != "succeeded":
                typer.echo(f"    {last.error}")
        if gone:
            typer.echo(f"finish it with: forge workflow resume {record.run_id} "
                       "(a running daemon resumes it by itself)")


@workflow_app.command("resume")
def workflow_resume(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, unique prefix, or 'last'."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Finish an interrupted run: succeeded tasks are not run again."""
    with guard():
        store, record, loaded = _run_and_config(run_ref, config)
        from ..runner import DONE_RUN_STATES

        if record.state in DONE_RUN_STATES:
            typer.echo(f"run {record.run_id} already {record.state}: nothing to resume", err=True)
        else:
            store.forget_cancel(record.run_id)  # resuming a cancelled run is asking it to go on
        _execute(loaded, loaded.workflow(record.workflow), {}, as_json, resume_id=record.run_id)


def _run_and_config(run_ref: str, config: Path | None) -> tuple[Any, Any, Target]:
    """The store, the run ``run_ref`` names (without tasks) and the config it came from
    (``--config`` overrides the one the run recorded)."""
    _, store = open_home()
    record = store.get_run(store.resolve_run(run_ref), with_tasks=False)
    source = config or (Path(record.source) if record.source else None)
    if source is None:
        fail(f"run {record.run_id} has no recorded config; pass --config FILE")
    loaded, _ = load_target(None, str(source))
    return store, record, loaded


@workflow_app.command("cancel")
def workflow_cancel(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, unique prefix, or 'last'."),
    wait: float = typer.Option(60.0, "--wait", min=0,
                               help="Seconds to wait for the run to stop (0: do not wait)."),
    as_json: bool = JsonOption,
) -> None:
    """Stop a queued or running run, from anywhere: its running tasks get SIGTERM, then
    SIGKILL after their grace period, and it is recorded as cancelled."""
    from ..state import FINISHED_RUN_STATES

    with guard():
        _, store = open_home()
        record = store.get_run(store.resolve_run(run_ref), with_tasks=False)
        run_id = record.run_id
        if record.state in FINISHED_RUN_STATES:
            typer.echo(f"run {run_id} already {record.state}: nothing to cancel", err=True)
        else:
            store.request_cancel(run_id)  # the engine that drives it stops within a second
            deadline = time.monotonic() + wait
            while record.state not in FINISHED_RUN_STATES:
                if _engine_gone(record, time.time()):  # no engine will stop it: record it here
                    store.cancel_abandoned(run_id)
                elif time.monotonic() >= deadline:
                    typer.echo(f"run {run_id}: cancel requested; its engine is still stopping "
                               f"it (see: forge workflow show {run_id})", err=True)
                    break
                else:
                    time.sleep(0.2)
                record = store.get_run(run_id, with_tasks=False)
        if as_json:
            emit_json(store.get_run(run_id))
        elif record.state in FINISHED_RUN_STATES:
            typer.echo(f"run {run_id} {record.state}")


@workflow_app.command("retry")
def workflow_retry(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, unique prefix, or 'last'."),
    task: list[str] = typer.Option([], "--task", "-t", metavar="NAME",
                                   help="Run this task again (repeatable; default: the failed ones)."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a finished run's failed tasks again, and every task after them."""
    with guard():
        _, record, loaded = _run_and_config(run_ref, config)
        if not task and record.state == "succeeded":
            typer.echo(f"run {record.run_id} succeeded: nothing failed to retry "
                       "(name tasks to run again with --task)", err=True)
        _execute(loaded, loaded.workflow(record.workflow), {}, as_json,
                 retry=(record.run_id, task))


def logs(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, unique prefix, or 'last'."),
    task: str = typer.Argument(..., help="Task name."),
    attempt: int = typer.Option(None, "--attempt", "-a", min=1, help="Attempt number (default: latest)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing while it runs."),
) -> None:
    """Print a task attempt's output."""
    with guard():
        _, store = open_home()
        record = store.get_run(store.resolve_run(run_ref))
        found = next((t for t in record.tasks if t.name == task), None)
        if found is None:
            fail(f"run {record.run_id} has no task {task!r}; tasks: "
                 + ", ".join(t.name for t in record.tasks))
        if not found.attempts:
            fail(f"task {task!r} has not started in run {record.run_id} (state: {found.state})")
        chosen = found.attempts[-1] if attempt is None else next(
            (a for a in found.attempts if a.number == attempt), None)
        if chosen is None:
            fail(f"task {task!r} has attempts 1..{len(found.attempts)}, not {attempt}")
        _print_log(store, chosen, follow)


def _print_log(store: Any, chosen: Any, follow: bool) -> None:
    from ..tail import follow as follow_file

    path = Path(chosen.log_path) if chosen.log_path else None
    found = path is not None and follow_file(
        path, (lambda: _attempt_done(store, chosen)) if follow else None)
    if not found and chosen.error:  # an attempt that wrote nothing has no log file
        typer.echo(f"(no output) {chosen.error}")


def _attempt_done(store: Any, chosen: Any) -> bool:
    tasks = store.get_run(chosen.run_id).tasks
    for t in tasks:
        for a in t.attempts:
            if t.name == chosen.task and a.number == chosen.number:
                return a.finished_at is not None
    return True
