"""The Typer app behind ``forge``: a thin composition root, one sub-app per noun.

Nouns are mounted on first use: ``forge --help`` lists every one from a line of help without
importing its module (the queue and daemon commands cost more to import than the rest of the
CLI together), and plugins' ``forge.cli`` sub-apps are loaded only for a noun core does not
own, or for the list, so a broken or slow plugin never breaks or slows the rest.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from . import CORE_NOUNS
from ._common import DEBUG, ExitCode, callback_debug
from ._fast import entry_points, load
from ._workflow import logs, run

__all__ = ["app", "run_app"]

log = logging.getLogger(__name__)


#: noun -> (module, attribute) of its Typer sub-app, in the order ``forge --help`` lists them
NOUNS: dict[str, tuple[str, str]] = {
    "workflow": ("._workflow", "workflow_app"),
    "plugins": ("._system", "plugins_app"),
    "system": ("._system", "system_app"),
    "daemon": (".daemon_cmds", "daemon_app"),
    "task": (".queue_cmds", "task_app"),
    "agent": (".queue_cmds", "agent_app"),
    "queue": (".queue_cmds", "queue_app"),
}
#: the help lines of nouns whose modules cost too much to import just to list them
#: (tests check they match the sub-apps' own help)
HELP: dict[str, str] = {
    "daemon": "Run scheduled workflows, resume interrupted runs, serve the API.",
    "task": "Submit and inspect work items on the queue.",
    "agent": "Run and control long-lived agents.",
    "queue": "Inspect the queue itself.",
}


def _typer(noun: str) -> typer.Typer:
    module, attribute = NOUNS[noun]
    found: typer.Typer = getattr(importlib.import_module(module, __package__), attribute)
    return found


@functools.cache
def _workflow_app() -> typer.Typer:
    """``forge workflow`` with the daemon module's scheduling commands added (once)."""
    from .daemon_cmds import register_workflow_commands

    workflow_app = _typer("workflow")
    register_workflow_commands(workflow_app)
    return workflow_app


def sub_app(noun: str) -> typer.Typer:
    """The complete Typer sub-app of a core noun."""
    return _workflow_app() if noun == "workflow" else _typer(noun)


class _Lazy(TyperCommand):
    """Stands in for a noun's sub-app until the noun is used; carries its line of help."""


def _group(name: str, sub: typer.Typer) -> Any:
    """The click group ``app.add_typer(sub, name=name)`` would have built (built that way,
    through Typer's public API only)."""
    holder = typer.Typer(rich_markup_mode=None, add_completion=False)
    holder.add_typer(sub, name=name)
    return typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]


class ForgeGroup(TyperGroup):
    """The root group: nouns built from their sub-apps when first asked for, plugin nouns
    loaded from ``forge.cli`` entry points only when a name is not core's or for a list."""

    _listing = False
    _plugins_mounted = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for noun in NOUNS:
            help_line = HELP.get(noun) or str(_typer(noun).info.help)
            self.commands[noun] = _Lazy(name=noun, help=help_line)

    def list_commands(self, ctx: Any) -> list[str]:
        self._mount_plugins()
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name not in CORE_NOUNS:
            self._mount_plugins()
        cmd = self.commands.get(cmd_name)
        if isinstance(cmd, _Lazy) and not self._listing:
            cmd = self.commands[cmd_name] = _group(cmd_name, sub_app(cmd_name))
        return cmd

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        self._listing = True  # help lists nouns by their line of help, never importing them
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def _mount_plugins(self) -> None:
        if self._plugins_mounted:
            return
        self._plugins_mounted = True
        for ep in entry_points("forge.cli"):
            if ep.name in self.commands:
                continue
            try:
                self.commands[ep.name] = _group(ep.name, load(ep.value))
            except Exception as exc:  # a broken plugin is reported, never fatal
                log.warning("forge.cli plugin %r from %s failed to load: %s: %s", ep.name,
                            ep.distribution, type(exc).__name__, exc)


app = typer.Typer(
    name="forge",
    cls=ForgeGroup,
    help="Workflows, daemonless containers and a durable agent queue for the machines you own.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: importing rich's renderer costs ~100 ms per start
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"forge-core {__version__} (Python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks.", callback=callback_debug,
                               is_eager=True),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what Forge does."),
    _version: bool = typer.Option(False, "--version", help="Print Forge's version and exit.",
                                  callback=_print_version, is_eager=True),
) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else
                        logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


app.command("run")(run)
app.command("logs")(logs)


def run_app(args: list[str]) -> None:
    """Run the full CLI on ``args``; exits with Forge's exit codes, never a traceback
    (unless ``--debug``)."""
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
