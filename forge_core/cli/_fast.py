"""Entry points read straight from installed metadata, and the fast path for plugin nouns.

``forge NOUN …`` for a noun core does not own is first offered to the ``forge.cli_fast``
entry point named NOUN: ``main(argv) -> int | None`` gets the arguments after the noun and
returns an exit code, or ``None`` to decline (the Typer app then runs). Nothing here imports
typer, click, rich or attrs. ``importlib.metadata`` costs ~15 ms to import and scan; reading
each distribution's ``entry_points.txt`` directly, with its rules (``sys.path`` order, the
first distribution of a name wins), costs ~1.5 ms.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["FAST_GROUP", "EntryPoint", "entry_points", "load", "run_fast"]

FAST_GROUP = "forge.cli_fast"


class EntryPoint:
    """One entry point: its name, ``module:attr`` value and distribution. (A plain class: a
    ``typing.NamedTuple`` would import ``typing`` on every start.)"""

    __slots__ = ("distribution", "name", "value")

    def __init__(self, name: str, value: str, distribution: str) -> None:
        self.name, self.value, self.distribution = name, value, distribution


def entry_points(group: str) -> list[EntryPoint]:
    """Every entry point in ``group`` of the distributions on ``sys.path``, as
    ``importlib.metadata.entry_points(group=group)`` lists them."""
    header = f"[{group}]"
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for folder in sys.path:
        for dist, text in _metadata(folder or ".", seen):
            if header in text:
                found += [EntryPoint(n, v, dist) for n, v in _section(text, header)]
    return found


def _metadata(folder: str, seen: set[str]) -> list[tuple[str, str]]:
    """``(distribution, entry_points.txt text)`` of each new distribution in ``folder``."""
    try:
        with os.scandir(folder) as entries:
            infos = [e.name for e in entries if e.name.endswith((".dist-info", ".egg-info"))]
    except OSError:  # not a directory (a zip, a missing path)
        return []
    out = []
    for info in infos:
        name = info.rpartition(".")[0].partition("-")[0]
        key = name.replace("-", "_").replace(".", "_").lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            with open(os.path.join(folder, info, "entry_points.txt"), encoding="utf-8") as f:
                out.append((name, f.read()))
        except OSError:  # a distribution without entry points
            continue
    return out


def _section(text: str, header: str) -> list[tuple[str, str]]:
    """``name = value`` pairs under ``header`` in an ``entry_points.txt``."""
    pairs: list[tuple[str, str]] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            inside = line == header
        elif inside and line and not line.startswith(("#", ";")) and "=" in line:
            name, _, value = line.partition("=")
            pairs.append((name.strip(), value.strip()))
    return pairs


def load(value: str) -> Any:
    """The object an entry point's ``module:attr.sub [extras]`` value names."""
    module, _, attrs = value.partition("[")[0].strip().partition(":")
    name = module.strip()
    __import__(name)  # importlib.import_module, without importing importlib (and warnings)
    obj: Any = sys.modules[name]
    for part in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def run_fast(noun: str, argv: list[str]) -> int | None:
    """Offer ``forge NOUN argv…`` to the ``forge.cli_fast`` entry point ``noun``: its exit
    code, or ``None`` when there is none, it declines, or it fails (logged at debug level)."""
    claims = [ep for ep in entry_points(FAST_GROUP) if ep.name == noun]
    if len(claims) != 1:
        if claims:
            _debug("forge.cli_fast %r is claimed by %s; using the full CLI", noun,
                   ", ".join(ep.distribution for ep in claims))
        return None
    try:
        handler: Callable[[list[str]], int | None] = load(claims[0].value)
        code = handler(argv)
    except Exception as exc:  # a broken fast path never breaks the command
        _debug("forge.cli_fast %r from %s failed (%s: %s); using the full CLI", noun,
               claims[0].distribution, type(exc).__name__, exc, exc_info=True)
        return None
    if code is None or isinstance(code, int):
        return code
    _debug("forge.cli_fast %r returned %r, not an exit code", noun, code)
    return 1


def _debug(message: str, *args: object, exc_info: bool = False) -> None:
    import logging  # only here: importing logging costs ~5 ms of every start

    logging.getLogger(__name__).debug(message, *args, exc_info=exc_info)
