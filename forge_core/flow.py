"""The Python API for workflows: decorated functions and commands become the very same
:class:`~forge_core.spec.WorkflowSpec` a YAML file gives, through the same converter and checks.

A task function's parameters are filled by name at run time: a workflow param of that name, or
the outputs (a dict) of an upstream task of that name. Decorated functions stay plain functions.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .config._loader import build_workflow
from .config._origins import Origin
from .spec import WorkflowSpec

if TYPE_CHECKING:
    from .state import RunRecord

__all__ = ["Workflow"]

F = TypeVar("F", bound=Callable[..., Any])
Dependency = str | Callable[..., Any]
Dependencies = Dependency | Sequence[Dependency]


class Workflow:
    """A workflow built in Python: ``Workflow("etl", schedule="0 2 * * *", params={...})``.

    Keywords are :class:`~forge_core.spec.WorkflowSpec` fields (durations may be ``"5m"``),
    plus ``defaults``: task fields every task gets unless it sets its own, as in YAML.
    ``forge run file.py`` finds every ``Workflow`` at a module's top level.
    """

    def __init__(self, name: str, **options: Any) -> None:
        caller = sys._getframe(1)
        self.name = name
        self.source = os.path.abspath(caller.f_code.co_filename)
        self._line = caller.f_lineno
        self._options = options
        self._tasks: list[dict[str, Any]] = []
        self._funcs: list[Callable[..., Any] | None] = []
        self._lines: list[int] = []
        self._names: dict[Callable[..., Any], str] = {}

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, tasks={[t['name'] for t in self._tasks]!r})"

    @overload
    def task(self, func: F, /) -> F: ...

    @overload
    def task(self, func: None = None, /, *, name: str | None = None,
             depends_on: Dependencies = (), **options: Any) -> Callable[[F], F]: ...

    def task(self, func: F | None = None, /, *, name: str | None = None,
             depends_on: Dependencies = (), **options: Any) -> F | Callable[[F], F]:
        """Make a function a Python task (``@wf.task`` or ``@wf.task(retries=3, ...)``).

        ``depends_on`` takes task names or decorated functions; ``options`` are any
        :class:`~forge_core.spec.TaskSpec` fields. The function is returned unchanged.
        """

        def register(f: F) -> F:
            task_name = name or f.__name__
            where = os.path.abspath(inspect.getsourcefile(f) or f.__code__.co_filename)
            self._add({"name": task_name, "python": f"{where}:{f.__qualname__}",
                       "depends_on": self._dependency_names(depends_on), **options},
                      f, f.__code__.co_firstlineno)
            self._names[f] = task_name
            return f

        return register(func) if func is not None else register

    def command(self, name: str, command: str | Sequence[str], *,
                depends_on: Dependencies = (), **options: Any) -> str:
        """Add a command task (argv list, or a string split like a shell would but never given
        to one unless ``shell=True``); returns its name for use in ``depends_on``."""
        line = sys._getframe(1).f_lineno
        argv = command if isinstance(command, str) else list(command)
        self._add({"name": name, "command": argv,
                   "depends_on": self._dependency_names(depends_on), **options}, None, line)
        return name

    def spec(self) -> WorkflowSpec:
        """The validated :class:`WorkflowSpec`; :class:`ConfigError` names file, line, field."""
        origin = Origin(prefix=f"workflows.{self.name}", line=self._line,
                        fields={"": self._line},
                        task_names=[str(t["name"]) for t in self._tasks],
                        task_keys=[f"tasks[{i}]" for i in range(len(self._tasks))],
                        task_fields=[{"": line} for line in self._lines])
        data = {**self._options, "name": self.name, "tasks": [dict(t) for t in self._tasks]}
        return build_workflow(data, source=self.source, origin=origin, funcs=self._funcs)

    def run(self, params: Mapping[str, Any] | None = None, *, home: str | os.PathLike[str] | None = None,
            ) -> RunRecord:
        """Run the workflow now, in this process, as ``forge run`` would, on the embedded
        defaults: state and logs under ``home`` (default ``$FORGE_HOME``, else the XDG data
        folder), so ``forge workflow history`` and ``forge logs`` show the run. Returns the
        finished record (``record.state``, each task's outputs); raises
        :class:`~forge_core.exceptions.ConfigError` for a bad workflow or param before
        anything runs. Not from inside an event loop: there, ``await``
        :func:`forge_core.runner.run_workflow`."""
        import anyio

        from .runner import run_workflow
        from .state import forge_home, open_store

        spec = self.spec()
        folder = Path(home) if home is not None else forge_home()
        store = open_store(folder)
        try:
            return anyio.run(lambda: run_workflow(spec, store=store, home=folder, params=params))
        finally:
            store.close()

    def _add(self, data: dict[str, Any], func: Callable[..., Any] | None, line: int) -> None:
        self._tasks.append(data)
        self._funcs.append(func)
        self._lines.append(line)

    def _dependency_names(self, deps: Dependencies) -> list[Any]:
        items = [deps] if isinstance(deps, str) or callable(deps) else list(deps)
        return [self._names.get(d, getattr(d, "__name__", d)) if callable(d) else d
                for d in items]
