"""What both CLI apps share: error mapping to one line and an exit code, tables, sizes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer

from ._run import describe

F = TypeVar("F", bound=Callable[..., Any])


def guarded(func: F) -> F:
    """Map Forge errors to ``error: …`` and exit 2 (bad usage/config) or 1 (failure)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from forge_core.exceptions import ConfigError, ForgeError, Unsupported

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except (ConfigError, Unsupported) as exc:
            typer.echo(f"error: {describe(exc)}", err=True)
            raise typer.Exit(2) from None
        except ForgeError as exc:
            typer.echo(f"error: {describe(exc)}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            typer.echo(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}TB"
