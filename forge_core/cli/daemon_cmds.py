"""``forge daemon`` (foreground, or ``start|stop|status|logs`` in the background with a PID
file under ``$FORGE_HOME``) and the scheduling/picture commands of ``forge workflow``:
``graph``, ``backfill``, ``pause``, ``unpause`` and ``gantt``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer

from ._common import (
    ConfigOption,
    ExitCode,
    JsonOption,
    emit_json,
    fail,
    guard,
    load_target,
    open_home,
)

__all__ = ["daemon_app", "register_workflow_commands"]

daemon_app = typer.Typer(help="Run scheduled workflows, resume interrupted runs, serve the API.",
                         invoke_without_command=True, pretty_exceptions_show_locals=False)

HostOption = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1).")
PortOption = typer.Option(None, "--port", help="HTTP port (default from config, else 8765).")
TokenOption = typer.Option(None, "--token", envvar="FORGE_DAEMON_TOKEN",
                           help="Bearer token; required beyond loopback.")
GraceOption = typer.Option(30.0, "--grace", help="Seconds running tasks get on shutdown.")
GraphOutputOption = typer.Option(None, "-o", "--output", help="Write to FILE, not stdout.")
GanttOutputOption = typer.Option(..., "-o", "--output", help="HTML file to write.")


def _files() -> tuple[Path, Path]:
    from ..state import forge_home

    home = forge_home()
    return home / "daemon.pid", home / "daemon.log"


def _read_pid() -> int | None:
    pid_file = _files()[0]
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


@daemon_app.callback()
def daemon_main(
    ctx: typer.Context, config: Path = ConfigOption, host: str = HostOption,
    port: int = PortOption, token: str = TokenOption, grace: float = GraceOption,
) -> None:
    """Run the daemon in the foreground (for systemd and containers) unless a subcommand is
    given."""
    if ctx.invoked_subcommand is not None:
        return
    with guard():
        _foreground(config, host, port, token, grace)


def _foreground(config: Path | None, host: str | None, port: int | None, token: str | None,
                grace: float) -> None:
    """Check the config here (errors are the CLI's one-liners), then become the lean daemon
    process (``python -m forge_core.daemon``) under the same PID, for systemd and signals."""
    target, _ = load_target(config)
    argv = [sys.executable, "-m", "forge_core.daemon", "--config", str(target.path.resolve()),
            "--grace", str(grace)]
    for flag, value in (("--host", host), ("--port", port)):
        if value is not None:
            argv += [flag, str(value)]
    env = dict(os.environ)
    if token:
        env["FORGE_DAEMON_TOKEN"] = token
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 -- our own interpreter, no shell


@daemon_app.command("start")
def daemon_start(config: Path = ConfigOption, host: str = HostOption, port: int = PortOption,
                 token: str = TokenOption, grace: float = GraceOption) -> None:
    """Start the daemon in the background (PID file and log under $FORGE_HOME)."""
    if (pid := _read_pid()) is not None:
        fail(f"the daemon is already running (pid {pid})")
    pid_file, log_file = _files()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", "from forge_core.cli import main; main()", "daemon",
            "--grace", str(grace)]
    for flag, value in (("--config", config), ("--host", host), ("--port", port)):
        if value is not None:
            argv += [flag, str(value)]
    env = dict(os.environ, **({"FORGE_DAEMON_TOKEN": token} if token else {}))
    with log_file.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    for _ in range(100):
        if proc.poll() is not None:
            fail(f"the daemon exited at start (code {proc.returncode}); see: forge daemon logs",
                 ExitCode.FAILED)
        if pid_file.exists():
            typer.echo(f"daemon started (pid {proc.pid}); logs: {log_file}")
            return
        time.sleep(0.1)
    typer.echo(f"daemon starting (pid {proc.pid}); logs: {log_file}")


@daemon_app.command("stop")
def daemon_stop(
    timeout: float = typer.Option(60.0, min=0, help="Seconds to wait for it to exit."),
) -> None:
    """Stop the background daemon gracefully (SIGTERM)."""
    pid = _read_pid()
    if pid is None:
        fail("the daemon is not running", ExitCode.FAILED)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            typer.echo(f"daemon stopped (pid {pid})")
            return
        time.sleep(0.1)
    fail(f"the daemon (pid {pid}) did not stop within {timeout:g}s", ExitCode.FAILED)


@daemon_app.command("status")
def daemon_status(as_json: bool = JsonOption) -> None:
    """Say whether the background daemon runs, and where it listens."""
    pid = _read_pid()
    where = _files()[0].read_text().split()[1] if pid is not None else None
    if as_json:
        emit_json({"running": pid is not None, "pid": pid, "listen": where})
    elif pid is None:
        typer.echo("daemon: not running")
    else:
        typer.echo(f"daemon: running (pid {pid}) on http://{where}")
    if pid is None:
        raise typer.Exit(int(ExitCode.FAILED))


@daemon_app.command("logs")
def daemon_logs(lines: int = typer.Option(50, "-n", "--lines", min=0, help="Lines from the end.")) -> None:
    """Print the end of the background daemon's log."""
    log_file = _files()[1]
    if not log_file.exists():
        fail(f"no daemon log at {log_file}", ExitCode.FAILED)
    for line in log_file.read_text(errors="replace").splitlines()[-lines:]:
        typer.echo(line)


# -- forge workflow … --------------------------------------------------------------------------


def register_workflow_commands(workflow_app: typer.Typer) -> None:
    """Add ``graph``, ``backfill``, ``pause``, ``unpause`` and ``gantt`` to ``forge workflow``."""
    workflow_app.command("graph")(workflow_graph)
    workflow_app.command("backfill")(workflow_backfill)
    workflow_app.command("pause")(workflow_pause)
    workflow_app.command("unpause")(workflow_unpause)
    workflow_app.command("gantt")(workflow_gantt)


def workflow_graph(
    name: str = typer.Argument(..., help="Workflow name."),
    fmt: str = typer.Option("mermaid", "--format", "-f", help="mermaid, dot, svg or html."),
    output: Path = GraphOutputOption,
    config: Path = ConfigOption,
) -> None:
    """Draw a workflow's DAG as Mermaid, DOT, SVG or a self-contained HTML page."""
    from .. import render

    makers = {"mermaid": render.graph_mermaid, "dot": render.graph_dot,
              "svg": render.graph_svg, "html": render.graph_html}
    if fmt not in makers:
        fail(f"unknown format {fmt!r}; use one of: {', '.join(makers)}")
    with guard():
        target, _ = load_target(config)
        text = makers[fmt](target.workflow(name))
    _write(text, output)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    typer.echo(f"wrote {output}", err=True)


def _parse_when(text: str, tz: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"not an ISO date or date-time: {text!r} (e.g. 2026-01-31 or 2026-01-31T06:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(tz))


def backfill_dates(spec: Any, start: datetime, end: datetime, reprocess: str, order: str,
                   store: Any) -> list[str]:
    """The logical dates a backfill runs, after the reprocess filter, in ``order``."""
    from ..abc import Trigger
    from ..scheduler import CronScheduler
    from ..state._history import latest_by_logical_date

    trigger = Trigger(expression=spec.schedule or "", timezone=spec.timezone)
    dates = [d.isoformat() for d in CronScheduler().between(trigger, start, end)]
    seen = latest_by_logical_date(store, spec.name)
    if reprocess == "none":
        dates = [d for d in dates if d not in seen]
    elif reprocess == "failed":
        dates = [d for d in dates if seen.get(d) != "succeeded"]
    return dates[::-1] if order == "newest" else dates


def workflow_backfill(
    name: str = typer.Argument(..., help="Workflow name."),
    start: str = typer.Option(..., "--from", help="First logical date (ISO)."),
    end: str = typer.Option(..., "--to", help="Last logical date (ISO), inclusive."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs; start none."),
    reprocess: str = typer.Option("none", help="Re-run dates that already ran: none|failed|all."),
    order: str = typer.Option("oldest", help="oldest or newest first."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a scheduled workflow once per fire time in [--from, --to]."""
    if reprocess not in ("none", "failed", "all") or order not in ("oldest", "newest"):
        fail("--reprocess takes none|failed|all and --order oldest|newest")
    with guard():
        target, _ = load_target(config)
        spec = target.workflow(name)
        if not spec.schedule:
            fail(f"workflow {name!r} has no schedule to backfill")
        first, last = _parse_when(start, spec.timezone), _parse_when(end, spec.timezone)
        if first > last:
            fail(f"--from {start} is after --to {end}; the range is [--from, --to], oldest "
                 "first (use --order newest to run the newest date first)")
        home, store = open_home(target.project)
        dates = backfill_dates(spec, first, last, reprocess, order, store)
        if dry_run or not dates:
            if as_json:
                emit_json({"dates": dates, "dry_run": dry_run})
            else:
                typer.echo("\n".join(dates) if dates else "nothing to backfill")
            return
        failed = _run_backfill(spec, dates, home, store, as_json)
    raise typer.Exit(int(ExitCode.FAILED if failed else ExitCode.OK))


def _run_backfill(spec: Any, dates: list[str], home: Path, store: Any, as_json: bool) -> int:
    import functools

    import anyio

    from ..runner import run_workflow
    from ..runtime import own_process
    from ._stopping import Stopped, until_stopped

    own_process()  # this process is Forge's: its tasks inherit none of its descriptors,
    # and its terminal is not theirs
    results = []
    for date in dates:
        try:
            record = anyio.run(until_stopped, functools.partial(
                run_workflow, spec, store=store, home=home, logical_date=date,
                trigger="backfill"))
        except Stopped as stop:
            typer.echo(f"{stop}: the run for {date} was stopped and recorded as cancelled; "
                       "later dates did not run", err=True)
            raise typer.Exit(stop.exit_code) from None
        results.append({"logical_date": date, "run_id": record.run_id, "state": record.state})
        if not as_json:
            typer.echo(f"{date}  {record.state:<10} {record.run_id}")
    if as_json:
        emit_json(results)
    return sum(r["state"] != "succeeded" for r in results)


def workflow_pause(name: str = typer.Argument(...), config: Path = ConfigOption) -> None:
    """Stop the daemon from starting scheduled runs of NAME."""
    _set_pause(name, config, "paused by user")


def workflow_unpause(name: str = typer.Argument(...), config: Path = ConfigOption) -> None:
    """Let the daemon schedule NAME again (catch-up follows the workflow's window)."""
    _set_pause(name, config, None)


def _set_pause(name: str, config: Path | None, reason: str | None) -> None:
    from ..daemon._core import set_paused

    with guard():
        target, _ = load_target(config)
        target.workflow(name)
        _, store = open_home(target.project)
        set_paused(store, name, reason)
    typer.echo(f"{name}: {'paused' if reason else 'unpaused'}")


def workflow_gantt(
    run: str = typer.Argument(..., help="Run id, unique prefix, or last[:WORKFLOW]."),
    output: Path = GanttOutputOption,
    config: Path = ConfigOption,
) -> None:
    """Write a run's Gantt chart as one self-contained HTML file."""
    from ..render import gantt_html
    from ..secrets import Redactor

    with guard():
        project = None
        try:
            project = load_target(config)[0].project
        except (typer.Exit, OSError):
            project = None
        _, store = open_home(project)
        record = store.get_run(store.resolve_run(run))
        _write(gantt_html(record, redactor=_redactor_for(project, record.workflow) or Redactor()),
               output)


def _redactor_for(project: Any, workflow: str) -> Any:
    from ..exceptions import ConfigError
    from ..secrets import Redactor, resolve_secrets

    spec = project.workflows.get(workflow) if project is not None else None
    if spec is None:
        return None
    base = Path(spec.source).resolve().parent if spec.source else Path.cwd()
    try:
        return Redactor(resolve_secrets(spec, base).values())
    except ConfigError:
        return None


