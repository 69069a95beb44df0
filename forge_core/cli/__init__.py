"""The ``forge`` command: a thin composition root. One Typer sub-app per noun; plugins add
their own through ``forge.cli`` entry points, loaded only when their noun is asked for
(or for ``--help``), so a broken or slow plugin never breaks or slows the rest."""

from __future__ import annotations

import logging
import sys

import typer

from ._common import DEBUG, ExitCode, callback_debug
from ._system import plugins_app, system_app
from ._workflow import logs, run, workflow_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="forge",
    help="Workflows, daemonless containers and a durable agent queue for the machines you own.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: importing rich's renderer costs ~100 ms per start
)

_CORE_NOUNS = {"run", "logs", "workflow", "plugins", "system", "daemon", "task", "agent", "queue"}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks.", callback=callback_debug,
                               is_eager=True),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what Forge does."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else
                        logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


app.command("run")(run)
app.command("logs")(logs)
app.add_typer(workflow_app, name="workflow")
app.add_typer(plugins_app, name="plugins")
app.add_typer(system_app, name="system")


def _mount_optional(argv: list[str]) -> None:
    """Mount sub-apps whose modules are heavier or belong to plugins, only when needed."""
    noun = next((a for a in argv if not a.startswith("-")), None)
    wants_all = noun is None or noun == "--help"
    if wants_all or noun in ("daemon", "workflow"):
        try:
            from .daemon_cmds import daemon_app, register_workflow_commands
        except ImportError:
            pass
        else:
            app.add_typer(daemon_app, name="daemon")
            register_workflow_commands(workflow_app)
    if wants_all or noun in ("task", "agent", "queue"):
        try:
            from .queue_cmds import agent_app, queue_app, task_app
        except ImportError:
            pass
        else:
            app.add_typer(task_app, name="task")
            app.add_typer(agent_app, name="agent")
            app.add_typer(queue_app, name="queue")
    if wants_all or noun not in _CORE_NOUNS:
        from ..plugins import cli_apps

        for name, sub in cli_apps():
            app.add_typer(sub, name=name)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    _mount_optional(args)
    try:
        app(args, prog_name="forge", standalone_mode=True)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # the last line of defence: no traceback without --debug
        if DEBUG["on"]:
            raise
        typer.echo(f"error: internal error: {type(exc).__name__}: {exc} "
                   "(run again with --debug for the traceback)", err=True)
        sys.exit(int(ExitCode.FAILED))
