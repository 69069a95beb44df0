"""Where each workflow and task was written: lines kept after loading, for later messages.

Keyed by ``(source file, workflow name)`` and by task name, so a spec that was evolved (params
overridden, tasks selected) still finds its lines. A loaded file's lines are worked out only
when a message needs one (``fill``), so loading a valid 10,000-task file pays nothing for them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from ..spec import WorkflowSpec

__all__ = ["Locate", "Origin", "locator", "register"]

_MAX = 256
_ORIGINS: OrderedDict[tuple[str | None, str], Origin] = OrderedDict()

Locate = Callable[[int | None, str], dict[str, Any]]
"""``locate(task index or None, field)`` -> ``{"line": …, "field": …}`` for a ConfigProblem."""


@attrs.define
class Origin:
    """Lines of one workflow: its own fields, its ``defaults``, and each task's fields
    (``""`` is the task's own line). ``task_keys`` say how a task is named in field paths;
    ``fill``, when given, sets the lines the first time one is asked for."""

    prefix: str
    line: int | None = None
    fields: dict[str, int] = attrs.field(factory=dict)
    defaults: dict[str, int] = attrs.field(factory=dict)
    task_names: list[str] = attrs.field(factory=list)
    task_keys: list[str] = attrs.field(factory=list)
    task_fields: list[dict[str, int]] = attrs.field(factory=list)
    fill: Callable[[Origin], None] | None = None

    def filled(self) -> Origin:
        """This origin with its lines set (working them out now if they were left for later)."""
        if self.fill is not None:
            fill, self.fill = self.fill, None
            fill(self)
        return self


def register(source: str | None, name: str, origin: Origin) -> None:
    """Remember where workflow ``name`` of ``source`` was written (the newest load wins)."""
    key = (source, name)
    _ORIGINS.pop(key, None)
    _ORIGINS[key] = origin
    while len(_ORIGINS) > _MAX:
        _ORIGINS.popitem(last=False)


def locator(spec: WorkflowSpec) -> Locate:
    """A function giving the line and display path of a workflow or task field of ``spec``."""
    origin = _ORIGINS.get((spec.source, spec.name))
    if origin is None:
        return _bare(f"workflows.{spec.name}")
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(origin.task_names):
        positions.setdefault(name, []).append(i)
    mapping: list[int | None] = []
    used: dict[str, int] = {}
    for task in spec.tasks:
        k = used[task.name] = used.get(task.name, -1) + 1
        found = positions.get(task.name, [])
        mapping.append(found[k] if k < len(found) else None)

    def locate(task: int | None, field: str) -> dict[str, Any]:
        head = field.partition(".")[0]
        origin.filled()
        if task is None:
            return {"line": origin.fields.get(head, origin.line),
                    "field": ".".join(p for p in (origin.prefix, field) if p)}
        where = mapping[task] if task < len(mapping) else None
        if where is None:
            return _bare(origin.prefix)(task, field)
        lines = origin.task_fields[where]
        if head and head not in lines and head in origin.defaults:
            return {"line": origin.defaults[head], "field": f"{origin.prefix}.defaults.{field}"}
        path = f"{origin.prefix}.{origin.task_keys[where]}"
        return {"line": lines.get(head, lines.get("")),
                "field": f"{path}.{field}" if field else path}

    return locate


def _bare(prefix: str) -> Locate:
    def locate(task: int | None, field: str) -> dict[str, Any]:
        path = prefix if task is None else f"{prefix}.tasks[{task}]"
        return {"line": None, "field": f"{path}.{field}" if field else path}

    return locate
