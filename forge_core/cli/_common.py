"""What every CLI command shares: exit codes, error mapping, output, finding workflows.

Commands stay thin: parse, load config, build backends, call the core. Errors become one
line on stderr and an :class:`ExitCode`; a traceback shows only with ``--debug``.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import attrs
import typer

from ..exceptions import ConfigError, ForgeError, NotFound, PluginError, RunLocked
from ..plain import plain

__all__ = [
    "DEBUG",
    "ExitCode",
    "Target",
    "emit_json",
    "fail",
    "guard",
    "load_target",
    "open_home",
]


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


DEBUG = {"on": False}

ConfigOption = typer.Option(None, "--config", "-c", help="Config file (default: forge.yml found upward).")
JsonOption = typer.Option(False, "--json", help="Print JSON for machines.")


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(int(code))


def code_for(exc: ForgeError) -> ExitCode:
    if isinstance(exc, (ConfigError, PluginError, NotFound, RunLocked)):
        return ExitCode.USAGE
    return ExitCode.FAILED


@contextmanager
def guard() -> Iterator[None]:
    """Turn Forge errors into one line and an exit code; Ctrl-C into 130."""
    try:
        yield
    except ForgeError as exc:
        if DEBUG["on"]:
            raise
        lines = str(exc).splitlines() or [type(exc).__name__]
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(int(code_for(exc))) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def emit_json(value: Any) -> None:
    """Print ``value`` (attrs records welcome) as JSON."""
    typer.echo(json.dumps(plain(value), indent=2, default=str))


@attrs.frozen
class Target:
    """The workflows a command acts on, and where they came from."""

    project: Any  # ProjectSpec
    path: Path

    def workflow(self, name: str | None) -> Any:
        flows = self.project.workflows
        if name is None:
            if len(flows) == 1:
                return next(iter(flows.values()))
            names = ", ".join(sorted(flows)) or "none"
            fail(f"{self.path} defines several workflows ({names}); pick one with --workflow NAME")
        if name not in flows:
            from ..config._convert import suggest

            hint = suggest(name, sorted(flows))
            fail(f"no workflow {name!r} in {self.path}{hint}; see: forge workflow list")
        return flows[name]


def load_target(config: Path | None, target: str | None = None) -> tuple[Target, str | None]:
    """Resolve ``forge run TARGET``: a file path, or a workflow name in the config.

    Returns the loaded target and the workflow name it names (``None`` when TARGET was a file
    or absent)."""
    from ..config import find_config, load_any

    if target and (target.endswith((".yml", ".yaml", ".py", ".toml")) or Path(target).is_file()):
        path = Path(target)
        if not path.exists():
            fail(f"no such file: {target}")
        return Target(load_any(path), path), None
    path = config if config is not None else find_config()
    if not path.exists():
        fail(f"no such config file: {path}")
    return Target(load_any(path), path), target


def open_home(project: Any = None) -> tuple[Path, Any]:
    """Forge's data directory (settings, ``$FORGE_HOME``, XDG) and its state store."""
    from ..state import forge_home, open_store

    home = forge_home(project.settings.home if project is not None else None)
    return home, open_store(home)


def callback_debug(value: bool) -> None:
    DEBUG["on"] = value


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
