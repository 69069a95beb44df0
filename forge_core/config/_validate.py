"""Semantic checks on a structured workflow: names, dependencies, cycles, limits, templates.

Every problem is collected and raised together as one :class:`ConfigError` (a
:class:`CycleError` when one of them is a cycle). Lines come from :mod:`._origins`, filled by
the loader and the Python API; a spec built any other way is still checked, without lines.
"""

from __future__ import annotations

import functools
import inspect
import re
import shutil
from collections.abc import Callable, Iterator

from ..dag._graph import Graph
from ..exceptions import ConfigError, ConfigProblem, CycleError
from ..spec import TaskSpec, WorkflowSpec
from ._convert import suggest
from ._origins import locator

__all__ = ["check_workflow", "hook_warnings", "raise_problems", "validate_workflow"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_TEMPLATE_OPEN = re.compile(r"\$\{\{(.*?)(\}\}|$)")
_REF = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*")
_NAMESPACES = ("params", "tasks", "run")
_HOOK_FIELDS = ("on_failure", "on_success", "on_retry", "on_sla_miss")
_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "retries": (lambda v: v >= 0, "must not be negative"),
    "timeout": (lambda v: v > 0, "must be greater than 0"),
    "grace": (lambda v: v >= 0, "must not be negative"),
    "retry_delay": (lambda v: v >= 0, "must not be negative"),
    "retry_backoff": (lambda v: v >= 1, "must be at least 1 (1 keeps the delay constant)"),
    "max_retry_delay": (lambda v: v >= 0, "must not be negative"),
    "sla": (lambda v: v > 0, "must be greater than 0"),
    "skip_exit_code": (lambda v: 0 <= v <= 255, "must be an exit code from 0 to 255"),
}
_WORKFLOW_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "concurrency": (lambda v: v >= 1, "must be at least 1"),
    "max_active_runs": (lambda v: v >= 1, "must be at least 1"),
    "retention": (lambda v: v >= 1, "must be at least 1"),
    "pause_after_failures": (lambda v: v >= 1, "must be at least 1"),
    "catchup": (lambda v: v >= 0, "must not be negative"),
}


def validate_workflow(spec: WorkflowSpec) -> None:
    """Raise :class:`ConfigError` listing every problem in ``spec`` (file, line, field)."""
    problems, cycle = check_workflow(spec)
    raise_problems(problems, cycle)


def raise_problems(problems: list[ConfigProblem], cycle: list[str] | None = None) -> None:
    """Raise one error for ``problems`` (sorted by file and line): a :class:`CycleError`
    carrying ``cycle`` when there is one, else a :class:`ConfigError`. No-op when empty."""
    if not problems:
        return
    unique = list({str(p): p for p in problems}.values())
    unique.sort(key=lambda p: (p.file or "", p.line or 0))
    if cycle is None:
        raise ConfigError(unique)
    err = CycleError(cycle)
    err.problems = unique
    err.args = ("\n".join(str(p) for p in unique),)
    raise err


def check_workflow(spec: WorkflowSpec) -> tuple[list[ConfigProblem], list[str] | None]:
    """Every problem in ``spec``, and the dependency cycle if there is one."""
    locate = locator(spec)
    problems: list[ConfigProblem] = []

    def add(task: int | None, field: str, message: str) -> None:
        problems.append(ConfigProblem(message, file=spec.source, **locate(task, field)))

    _check_workflow_fields(spec, add)
    seen: dict[str, int] = {}
    for i, task in enumerate(spec.tasks):
        if task.name in seen:
            add(i, "name",
                f"duplicate task name {task.name!r}; the first is tasks[{seen[task.name]}]")
        seen.setdefault(task.name, i)
        _check_task(task, functools.partial(add, i))
    deps: dict[str, tuple[str, ...]] = {}
    for task in spec.tasks:
        deps.setdefault(task.name, task.depends_on)
    graph = Graph(deps)
    _check_dependencies(spec, graph, seen, add)
    cycle = graph.find_cycle()
    if cycle is not None:
        if len(cycle) > 2:  # a task that depends on itself is said so above
            add(seen[cycle[0]], "depends_on", f"dependency cycle: {' -> '.join(cycle)}")
    else:
        for i, task in enumerate(spec.tasks):
            for field, message in _template_problems(spec, task, graph):
                add(i, field, message)
            if task.func is not None:
                for message in _parameter_problems(spec, task, graph):
                    add(i, "", message)
    return problems, cycle


def schedule_problems(spec: WorkflowSpec) -> list[ConfigProblem]:
    """A ``schedule`` or ``timezone`` the scheduler cannot read. Checked apart from
    :func:`check_workflow`, by ``forge workflow validate`` and the daemon: it imports
    croniter, which a run started by hand never needs."""
    if spec.schedule is None:
        return []
    from ..abc import Trigger
    from ..scheduler.cron import CronScheduler

    scheduler = CronScheduler()
    found = []
    # each field checked alone, so that each problem names its own line
    for field, trigger in (("timezone", Trigger(expression="@daily", timezone=spec.timezone)),
                           ("schedule", Trigger(expression=spec.schedule))):
        try:
            scheduler.validate(trigger)
        except ConfigError as exc:
            found.append((field, str(exc)))
    if not found:
        return []
    locate = locator(spec)  # only to name a problem's line
    return [ConfigProblem(message, file=spec.source, **locate(None, field))
            for field, message in found]


def hook_warnings(spec: WorkflowSpec) -> list[ConfigProblem]:
    """Hook references that will fail when called, though the config is valid: a name that
    is not under ``hooks:`` is run as a command line, and its command is not on ``PATH``
    (a hook defined nowhere, or misspelt). A command given by path is not checked: it runs
    in the working directory of whoever runs the workflow."""
    from ..hooks import hook_argv, hook_spec  # only here: it imports what hooks need to run

    locate = locator(spec)
    warnings = []
    for i, task in enumerate(spec.tasks):
        for field in _HOOK_FIELDS:
            ref = getattr(task, field)
            if ref is None or ref in spec.hooks:
                continue
            try:
                program = (hook_argv(hook_spec(ref, spec)) or [ref])[0]
            except ValueError:  # unbalanced quotes: it fails when called, as it fails here
                program = ref
            if "/" not in program and shutil.which(program) is None:
                message = (f"{ref!r} is neither a hook under 'hooks:' nor a command on PATH; "
                           "it will fail when called")
                warnings.append(ConfigProblem(message, file=spec.source, **locate(i, field)))
    return warnings


def _check_workflow_fields(spec: WorkflowSpec, add: Callable[[int | None, str, str], None]) -> None:
    if not _NAME.fullmatch(spec.name):
        add(None, "", f"workflow name {spec.name!r} may use only letters, digits, '_' and '-'")
    if not spec.tasks:
        add(None, "tasks", "workflow has no tasks; add at least one under 'tasks:'")
    for field, (ok, message) in _WORKFLOW_CHECKS.items():
        value = getattr(spec, field)
        if value is not None and not ok(value):
            add(None, field, f"{field} {message}, got {value}")
    for name, secret in spec.secrets.items():
        if (secret.env is None) == (secret.file is None):
            add(None, f"secrets.{name}", "a secret needs exactly one of 'env' or 'file'")
    for name, hook in spec.hooks.items():
        if hook.command is None and hook.webhook is None:
            add(None, f"hooks.{name}", "a hook needs a 'command' or a 'webhook'")


def _check_task(task: TaskSpec, add: Callable[[str, str], None]) -> None:
    if not _NAME.fullmatch(task.name):
        add("name", f"task name {task.name!r} may use only letters, digits, '_' and '-'")
    if task.command is None and task.python is None:
        add("", f"task {task.name!r} needs a 'command' or a 'python' callable")
    elif task.command is not None and task.python is not None:
        add("python", f"task {task.name!r} has both 'command' and 'python'; keep one")
    elif task.command is not None and not (task.command.strip() if isinstance(task.command, str)
                                           else task.command):
        add("command", "command is empty")
    elif task.python is not None and task.func is None and ":" not in task.python:
        add("python", f"expected 'module:function' or 'path/file.py:function', got {task.python!r}")
    for field, (ok, message) in _CHECKS.items():
        value = getattr(task, field)
        if value is not None and not ok(value):
            add(field, f"{field} {message}, got {value}")
    for field in ("memory", "cpus", "pids", "cpu_time"):
        value = getattr(task.resources, field)
        if value is not None and value <= 0:
            add(f"resources.{field}", f"resources.{field} must be greater than 0, got {value}")


def _check_dependencies(spec: WorkflowSpec, graph: Graph, seen: dict[str, int],
                        add: Callable[[int | None, str, str], None]) -> None:
    names = list(seen)
    for i, task in enumerate(spec.tasks):
        for dep in task.depends_on:
            if dep == task.name:
                add(i, "depends_on", f"task {task.name!r} depends on itself")
            elif dep not in seen:
                add(i, "depends_on", f"task {task.name!r} depends on unknown task {dep!r}"
                    f"{suggest(dep, names)}")


def _strings(task: TaskSpec) -> Iterator[tuple[str, str]]:
    if isinstance(task.command, str):
        yield "command", task.command
    elif task.command is not None:
        for arg in task.command:
            yield "command", arg
    for key, value in task.env.items():
        yield f"env.{key}", value
    if task.workdir is not None:
        yield "workdir", task.workdir


def _template_problems(spec: WorkflowSpec, task: TaskSpec, graph: Graph) -> Iterator[
        tuple[str, str]]:
    for field, text in _strings(task):
        if "${{" not in text:
            continue
        for m in _TEMPLATE_OPEN.finditer(text):
            ref = _REF.fullmatch(m.group(1))
            if not m.group(2) or ref is None:
                yield field, (f"malformed template {m.group(0)!r}: expected ${{{{ params.NAME }}}}"
                              " or ${{ tasks.NAME.outputs.KEY }}")
                continue
            message = _reference_problem(spec, task, graph, ref.group(1))
            if message:
                yield field, message


def _reference_problem(spec: WorkflowSpec, task: TaskSpec, graph: Graph, ref: str) -> str:
    parts = ref.split(".")
    if parts[0] not in _NAMESPACES:
        return (f"unknown template namespace {parts[0]!r} in ${{{{ {ref} }}}}; "
                f"use {', '.join(_NAMESPACES)}{suggest(parts[0], _NAMESPACES)}")
    if parts[0] == "params":
        if len(parts) != 2:
            return f"expected ${{{{ params.NAME }}}}, got ${{{{ {ref} }}}}"
        if parts[1] not in spec.params:
            return (f"${{{{ {ref} }}}} uses param {parts[1]!r}, which is not declared in the "
                    f"workflow's params{suggest(parts[1], list(spec.params))}")
    elif parts[0] == "tasks":
        if len(parts) != 4 or parts[2] != "outputs":
            return f"expected ${{{{ tasks.NAME.outputs.KEY }}}}, got ${{{{ {ref} }}}}"
        if parts[1] not in graph:
            return (f"${{{{ {ref} }}}} refers to unknown task {parts[1]!r}"
                    f"{suggest(parts[1], graph.nodes)}")
        if not graph.is_upstream(parts[1], of=task.name):
            return (f"${{{{ {ref} }}}} needs task {parts[1]!r} to run first; "
                    f"add it to depends_on (directly or through another task)")
    return ""


def _parameter_problems(spec: WorkflowSpec, task: TaskSpec, graph: Graph) -> Iterator[str]:
    assert task.func is not None
    try:
        signature = inspect.signature(task.func)
    except (TypeError, ValueError):
        return
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        if p.default is p.empty and p.name not in spec.params and not (
                p.name in graph and graph.is_upstream(p.name, of=task.name)):
            yield (f"parameter {p.name!r} of {task.func.__qualname__}() is neither a workflow "
                   f"param nor an upstream task; declare it in params, depend on a task named "
                   f"{p.name!r}, or give it a default")

