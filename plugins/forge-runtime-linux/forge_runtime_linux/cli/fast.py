"""The ``forge.cli_fast`` entry for ``forge container``: ``run`` with the flags in
:data:`._run.FLAGS`, parsed without typer or click; everything else (help, other
sub-commands, a flag this parser does not know, a malformed value) is declined with ``None``
so the Typer app handles it, with its usage messages."""

from __future__ import annotations

from ._run import FLAGS, Flag, execute

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["main", "parse_run"]

_BY_NAME: dict[str, Flag] = {name: flag for flag in FLAGS for name in flag.names}
_CONVERT = {"float": float, "int": int}


def main(argv: list[str]) -> int | None:
    """``forge container ARGV…``: the exit code of a ``run``, or ``None`` to decline."""
    if not argv or argv[0] != "run":
        return None
    parsed = parse_run(argv[1:])
    if parsed is None:
        return None
    image, command, opts = parsed
    return execute(image, command, opts)


def parse_run(args: list[str]) -> tuple[str, list[str], dict[str, Any]] | None:
    """``IMAGE``, ``COMMAND…`` and the options, as the Typer command would parse them (options
    before the image, everything after it is the command); ``None`` for anything else."""
    opts: dict[str, Any] = {f.dest: (list(f.default) if f.kind == "multi" else f.default) for f in FLAGS}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, attached = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        if (
            name.startswith("--no-")
            and _BY_NAME.get("--" + name[5:], Flag("", (), "", None, "")).kind == "toggle"
        ):
            if eq or attached:
                return None
            opts[_BY_NAME["--" + name[5:]].dest] = False
            i += 1
            continue
        flag = _BY_NAME.get(name)
        if flag is None:
            return None  # unknown, or --help: the full CLI answers
        if flag.kind in ("bool", "toggle"):
            if eq or attached:
                return None
            opts[flag.dest] = True
            i += 1
            continue
        if eq or attached:
            value, i = attached, i + 1
        elif i + 1 < len(args):
            value, i = args[i + 1], i + 2
        else:
            return None
        try:
            converted: Any = _CONVERT.get(flag.kind, str)(value)
        except ValueError:
            return None
        if flag.kind == "multi":
            opts[flag.dest].append(converted)
        else:
            opts[flag.dest] = converted
    if i >= len(args):
        return None
    return args[i], args[i + 1 :], opts
