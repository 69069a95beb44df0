"""The config pipeline: file -> safe YAML -> ``${VAR}`` -> defaults and hooks merged -> cattrs
-> specs -> semantic checks. Every problem is collected and raised as one ConfigError.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path as FsPath
from typing import Any, TypeVar

import attrs

from ..exceptions import ConfigError, ConfigProblem
from ..spec import ProjectSpec, Settings, WorkflowSpec
from ._convert import Path, converter, errors_of, fast_converter, format_path, kind, unknown_field
from ._env import substitute_tree
from ._origins import Origin, register
from ._source import Document, Lines, read_document
from ._validate import check_workflow, raise_problems

__all__ = ["build_workflow", "find_config", "load_project", "structure_options"]

T = TypeVar("T")

CONFIG_NAMES = ("forge.yml", "forge.yaml", "forge.toml")
_TOP = ("workflows", "hooks", "forge")


class _Problems:
    """Collects problems for one file; data paths are redirected to where they were written."""

    def __init__(self, file: str | None, line_of: Callable[[Path], int | None]) -> None:
        self.file = file
        self.line_of = line_of
        self.items: list[ConfigProblem] = []
        self.cycle: list[str] | None = None
        self.redirects: dict[Path, Path] = {}

    def add(self, path: Path, message: str) -> None:
        path = self.resolve(path)
        self.items.append(ConfigProblem(message, file=self.file, line=self.line_of(path),
                                        field=format_path(path)))

    def resolve(self, path: Path) -> Path:
        if self.redirects:
            for cut in range(len(path), 0, -1):
                target = self.redirects.get(path[:cut])
                if target is not None:
                    return target + path[cut:]
        return path

    def structure(self, data: Any, cl: type[T], path: Path) -> T | None:
        with contextlib.suppress(Exception):  # failures are explained by the detailed pass
            return fast_converter.structure(data, cl)
        try:
            return converter.structure(data, cl)
        except Exception as exc:  # every structuring failure becomes a located problem
            found = list(errors_of(exc))
            for sub, message in found or [((), f"invalid value: {exc}")]:
                self.add(path + sub, message)
            return None


def find_config(start: FsPath | None = None) -> FsPath:
    """The nearest ``forge.yml`` (or ``forge.yaml``, ``forge.toml``) from ``start`` (default:
    the working directory) upward; :class:`ConfigError` saying what to do when there is none."""
    here = (start or FsPath.cwd()).resolve()
    for folder in (here, *here.parents):
        for name in CONFIG_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    raise ConfigError(f"no forge.yml found in {here} or any parent directory; create one "
                      "(see docs/configuration.md) or pass --config FILE")


def load_project(path: FsPath, environ: Mapping[str, str] | None = None) -> ProjectSpec:
    """Load and validate a ``.yml``/``.yaml``/``.toml`` config file into a :class:`ProjectSpec`.

    ``environ`` (default ``os.environ``) feeds ``${VAR}`` substitution.
    """
    path = FsPath(path)
    if path.suffix not in (".yml", ".yaml", ".toml"):
        raise ConfigError([ConfigProblem(
            "expected a .yml, .yaml, .toml or .py workflow file", file=str(path))])
    doc = read_document(path)
    return build_project(doc, str(path), os.environ if environ is None else environ)


def build_project(doc: Document, file: str, environ: Mapping[str, str]) -> ProjectSpec:
    """The pipeline after parsing: substitution, merging, structuring, semantic checks."""
    probs = _Problems(file, doc.line)
    for path, line, first in doc.duplicates:
        probs.items.append(ConfigProblem(f"key {str(path[-1])!r} is given twice (first on line "
                                         f"{first}); remove one", file=file, line=line,
                                         field=format_path(path)))
    data = doc.data
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"got {kind(data)}"
        probs.add((), f"expected a mapping with a 'workflows:' section at the top; {what}")
        raise_problems(probs.items)
    substitute_tree(data, environ, probs.add)
    for key in data:
        if key not in _TOP and not str(key).startswith("x-"):
            probs.add((key,), unknown_field(key, _TOP))
    hooks = _section(data, "hooks", probs)
    settings = probs.structure(_section(data, "forge", probs), Settings, ("forge",))
    workflows: dict[str, WorkflowSpec] = {}
    for name, body in _section(data, "workflows", probs).items():
        spec = _load_workflow(str(name), body, hooks, doc, probs)
        if spec is not None:
            workflows[spec.name] = spec
            problems, cycle = check_workflow(spec)
            probs.items += problems
            probs.cycle = probs.cycle or cycle
    raise_problems(probs.items, probs.cycle)
    return ProjectSpec(workflows=workflows, settings=settings or Settings(), source=file)


def _section(data: dict[Any, Any], key: str, probs: _Problems) -> dict[Any, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        probs.add((key,), f"expected a mapping, got {kind(value)}")
        return {}
    return value


def _load_workflow(name: str, body: Any, hooks: dict[Any, Any], doc: Document,
                   probs: _Problems) -> WorkflowSpec | None:
    wpath: Path = ("workflows", name)
    if not isinstance(body, dict):
        probs.add(wpath, f"expected a mapping of workflow fields, got {kind(body)}")
        return None
    data = _workflow_data(name, body, wpath, probs)
    if data is None:
        return None
    for hook in hooks:
        if hook not in data["hooks"]:
            probs.redirects[(*wpath, "hooks", hook)] = ("hooks", hook)
    data["hooks"] = {**hooks, **data["hooks"]}
    spec = probs.structure(data, WorkflowSpec, wpath)
    if spec is None:
        return None
    spec = attrs.evolve(spec, source=probs.file)
    register(probs.file, spec.name,
             _origin(spec, doc.lines, wpath, isinstance(body["tasks"], dict)))
    return spec


def _workflow_data(name: str, body: dict[Any, Any], wpath: Path,
                   probs: _Problems) -> dict[str, Any] | None:
    """A copy of ``body`` with its name, its tasks as a list, and ``defaults`` merged in."""
    data = dict(body)
    if data.pop("name", name) != name:
        probs.add((*wpath, "name"), "a workflow's name is its key under 'workflows:'; "
                  "remove 'name'")
    defaults = _section(data, "defaults", probs)
    data.pop("defaults", None)
    if "name" in defaults:
        probs.add((*wpath, "defaults", "name"), "defaults cannot set a task's name")
    data["name"] = name
    hooks = data.get("hooks")
    data["hooks"] = hooks if isinstance(hooks, dict) else ({} if hooks is None else hooks)
    if not isinstance(data["hooks"], dict):
        probs.add((*wpath, "hooks"), f"expected a mapping of hooks, got {kind(hooks)}")
        return None
    tasks = _task_list(data.get("tasks"), (*wpath, "tasks"), probs)
    if tasks is None:
        return None
    for i, task in enumerate(tasks):
        _merge_defaults(task, defaults, (*wpath, "tasks", i), (*wpath, "defaults"), probs)
    data["tasks"] = tasks
    return data


def _task_list(tasks: Any, path: Path, probs: _Problems) -> list[dict[Any, Any]] | None:
    if isinstance(tasks, dict):
        out = []
        for i, (tname, body) in enumerate(tasks.items()):
            probs.redirects[(*path, i)] = (*path, tname)
            body = {} if body is None else body
            if not isinstance(body, dict):
                probs.add((*path, i), f"expected a mapping of task fields, got {kind(body)}")
                return None
            if body.get("name", tname) != tname:
                probs.add((*path, i, "name"), "a task's name is its key under 'tasks:'; "
                          "remove 'name'")
            out.append({**body, "name": str(tname)})
        return out
    if isinstance(tasks, list):
        bad = [i for i, t in enumerate(tasks) if not isinstance(t, dict)]
        for i in bad:
            probs.add((*path, i), f"expected a task (a mapping with 'name' and 'command'), "
                      f"got {kind(tasks[i])}")
        return None if bad else [dict(t) for t in tasks]
    probs.add(path, "expected a list of tasks, each with a 'name'" if tasks is None
              else f"expected a list of tasks, got {kind(tasks)}")
    return None


def _merge_defaults(task: dict[Any, Any], defaults: dict[Any, Any], tpath: Path, dpath: Path,
                    probs: _Problems) -> None:
    """Fill ``task`` from ``defaults`` (the task wins; ``env`` mappings merge key by key)."""
    for key, value in defaults.items():
        if key == "name":
            continue
        if key not in task:
            task[key] = value
            probs.redirects[(*tpath, key)] = (*dpath, key)
        elif key == "env" and isinstance(value, dict) and isinstance(task[key], dict):
            for var in value:
                if var not in task[key]:
                    probs.redirects[(*tpath, key, var)] = (*dpath, key, var)
            task[key] = {**value, **task[key]}


def _origin(spec: WorkflowSpec, lines: Lines, wpath: Path, mapping_form: bool) -> Origin:
    """Where ``spec``'s fields were written; the lines are read from ``lines`` on first use."""
    names = [t.name for t in spec.tasks]

    def fill(origin: Origin) -> None:
        origin.line = lines.line(wpath)
        origin.fields = lines.keys(wpath)
        origin.defaults = lines.keys((*wpath, "defaults"))
        origin.task_fields = lines.entries((*wpath, "tasks"))
        if len(origin.task_fields) != len(origin.task_names):
            origin.task_fields = [{} for _ in origin.task_names]

    return Origin(prefix=format_path(wpath), task_names=names, fill=fill,
                  task_keys=[f"tasks.{n}" if mapping_form else f"tasks[{i}]"
                             for i, n in enumerate(names)])


def build_workflow(data: Mapping[str, Any], *, source: str | None, origin: Origin,
                   funcs: Sequence[Callable[..., Any] | None] = ()) -> WorkflowSpec:
    """Structure and validate one workflow given as plain data (the Python API's path):
    the same defaults merge, converter and checks as a file, lines taken from ``origin``.
    ``funcs[i]`` (when given) becomes task ``i``'s ``func``."""

    def line_of(path: Path) -> int | None:
        if len(path) > 3 and path[2] == "tasks" and isinstance(path[3], int):
            fields = origin.task_fields[path[3]] if path[3] < len(origin.task_fields) else {}
            return fields.get("")
        return origin.line

    probs = _Problems(source, line_of)
    name = str(data.get("name", ""))
    body = {k: v for k, v in data.items() if k != "name"}
    wdata = _workflow_data(name, body, ("workflows", name), probs)
    spec = None if wdata is None else probs.structure(wdata, WorkflowSpec, ("workflows", name))
    if spec is not None:
        tasks = tuple(attrs.evolve(t, func=f) if f is not None else t
                      for t, f in zip(spec.tasks, [*funcs, *[None] * len(spec.tasks)],
                                      strict=False))
        spec = attrs.evolve(spec, source=source, tasks=tasks)
        register(source, spec.name, origin)
        problems, probs.cycle = check_workflow(spec)
        probs.items += problems
    raise_problems(probs.items, probs.cycle)
    assert spec is not None
    return spec


def structure_options(cls: type[T], options: Mapping[str, Any], where: str) -> T:
    """Plugin options -> the plugin's attrs ``Config``, with the config files' converter and
    error style; ``where`` (e.g. ``"queue.redis"``) prefixes each field path."""
    probs = _Problems(None, lambda _p: None)
    result = probs.structure(dict(options), cls, tuple(where.split(".")) if where else ())
    raise_problems(probs.items)
    assert result is not None
    return result
