"""``${VAR}`` and ``${VAR:-default}`` substitution from the environment, at load time.

``$${`` writes a literal ``${``. ``${{ … }}`` is run-time templating (task outputs, params)
and is left exactly as written. YAML timestamps become ISO strings, so config values stay
plain data.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._convert import Path

__all__ = ["substitute", "substitute_tree"]

_TOKEN = re.compile(r"\$\$\{|\$\{\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


def substitute(text: str, environ: Mapping[str, str], problems: list[str]) -> str:
    """``text`` with every ``${VAR}`` replaced; unset variables are appended to ``problems``."""
    if "${" not in text:
        return text

    def replace(m: re.Match[str]) -> str:
        found = m.group(0)
        if found == "$${":
            return "${"
        if found == "${{":
            return found
        name = m.group(1)
        if name is None:
            problems.append("malformed '${' reference: expected ${NAME} or ${NAME:-default} "
                            "(write '$${' for a literal '${')")
            return found
        if name in environ:
            return environ[name]
        if m.group(2) is not None:
            return m.group(2)
        if name.startswith("FORGE_"):  # a task's own variable: its process has it, not the file
            problems.append(f"${{{name}}} is read when the file loads, and {name} is set only "
                            f"for a task's process: write $${{{name}}} to leave it to the task")
        else:
            problems.append(f"environment variable {name!r} is not set; set it, "
                            f"or give a default with ${{{name}:-value}}")
        return found

    return _TOKEN.sub(replace, text)


def substitute_tree(
    data: Any, environ: Mapping[str, str], report: Callable[[Path, str], None]
) -> Any:
    """Substitute in every string value (never keys) of ``data``, in place where it can."""
    if isinstance(data, str | datetime.date):
        return _scalar(data, environ, (), report)
    if not isinstance(data, dict | list):
        return data
    stack: list[tuple[Any, Path]] = [(data, ())]
    seen: set[int] = set()  # YAML aliases can share, or even nest, a node
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        # values are replaced in place, never added or removed: no copy of the items
        for key, value in (node.items() if type(node) is dict else enumerate(node)):
            kind = type(value)
            if kind is str:
                if "${" in value:
                    node[key] = _scalar(value, environ, (*path, key), report)
            elif kind is dict or kind is list:
                stack.append((value, (*path, key)))
            elif isinstance(value, datetime.date):
                node[key] = value.isoformat()
    return data


def _scalar(value: Any, environ: Mapping[str, str], path: Path,
            report: Callable[[Path, str], None]) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    problems: list[str] = []
    out = substitute(value, environ, problems)
    for problem in problems:
        report(path, problem)
    return out
