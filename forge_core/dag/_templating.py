"""Run-time templating: ``${{ params.date }}``, ``${{ tasks.extract.outputs.rows }}``,
``${{ run.id }}``, ``${{ run.logical_date }}``.

Values are data, never code: in an argv command each placeholder is replaced inside one
argument after splitting; in a ``shell: true`` command each placeholder becomes a
reference to an environment variable that carries the value (GitHub Actions' advice), so
a value is never re-parsed as shell code. Quote it as you would ``"$VAR"`` to keep spaces.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from typing import Any

from ..exceptions import TaskFailed

__all__ = ["PLACEHOLDER", "Context", "as_text", "references", "render_argv", "render_shell",
           "render_text"]

PLACEHOLDER = re.compile(r"\$\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")

Context = Mapping[str, Any]
"""``{"params": {...}, "tasks": {name: {"outputs": {...}}}, "run": {...}}``"""


def references(text: str) -> list[str]:
    """Dotted paths used in ``text``, e.g. ``["tasks.extract.outputs.rows"]``."""
    return PLACEHOLDER.findall(text)


def _lookup(ctx: Context, path: str) -> str:
    node: Any = ctx
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            raise TaskFailed(f"template ${{{{ {path} }}}} has no value (no {part!r})")
    return as_text(node)


def as_text(value: Any) -> str:
    """A param or output value as a command or environment sees it: a string as it is, a
    number as written, anything else as JSON (``true``, ``null``, ``["a", "b"]``), as YAML
    and JSON users write them, never Python's ``True`` or ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, default=str)


def render_text(text: str, ctx: Context) -> str:
    """Replace every placeholder in ``text`` with its value."""
    if "${{" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: _lookup(ctx, m.group(1)), text)


def render_argv(command: str | tuple[str, ...], ctx: Context) -> tuple[str, ...]:
    """Split (if a string) first, then fill each argument: a value stays one argument."""
    if not isinstance(command, str):
        if not any("${{" in part for part in command):
            return tuple(command)
        return tuple(render_text(p, ctx) for p in command)
    # placeholders may hold spaces: protect them from the split, fill them afterwards
    found: list[str] = []

    def protect(m: re.Match[str]) -> str:
        found.append(m.group(1))
        return f"\x00{len(found) - 1}\x00"

    parts = shlex.split(PLACEHOLDER.sub(protect, command))
    token = re.compile(r"\x00(\d+)\x00")
    return tuple(token.sub(lambda m: _lookup(ctx, found[int(m.group(1))]), p) for p in parts)


def render_shell(command: str | tuple[str, ...], ctx: Context) -> tuple[str, dict[str, str]]:
    """A shell line whose placeholders became ``${FORGE_VALUE_n}``, and those variables."""
    text = command if isinstance(command, str) else shlex.join(command)
    env: dict[str, str] = {}

    def swap(m: re.Match[str]) -> str:
        var = f"FORGE_VALUE_{len(env)}"
        env[var] = _lookup(ctx, m.group(1))
        return f"${{{var}}}"

    return PLACEHOLDER.sub(swap, text), env
