"""The ``forge`` command. :func:`main` hands ``forge NOUN …`` for a noun core does not own to
a plugin's ``forge.cli_fast`` entry point first (see :mod:`._fast`), before typer, click or
rich is imported; everything else, and every call a fast entry declines, goes to the Typer
app in :mod:`._app`."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CORE_NOUNS", "app", "main"]

#: the first words core owns; any other first word may be a plugin's
CORE_NOUNS = frozenset(
    {"run", "logs", "workflow", "plugins", "system", "daemon", "task", "agent", "queue"})


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and not args[0].startswith("-") and args[0] not in CORE_NOUNS:
        from ._fast import run_fast

        try:
            code = run_fast(args[0], args[1:])
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            sys.exit(130)  # ExitCode.INTERRUPTED, without importing typer to name it
        if code is not None:
            sys.exit(code)
    from ._app import run_app

    run_app(args)


def __getattr__(name: str) -> Any:
    if name == "app":  # the Typer app, built on first use
        from ._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
