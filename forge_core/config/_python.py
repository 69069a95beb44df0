"""Workflows written in Python: import a file by path and collect its ``Workflow`` objects.

The module gets a unique name (so ``if __name__ == "__main__"`` blocks stay quiet) and the
file's folder is on ``sys.path`` while it imports, as when running it as a script.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path as FsPath
from types import ModuleType

from ..exceptions import ConfigError, ConfigProblem
from ..spec import ProjectSpec, WorkflowSpec
from ._loader import load_project
from ._validate import raise_problems

__all__ = ["load_any", "load_python"]


def load_any(path: FsPath) -> ProjectSpec:
    """:func:`load_python` for ``.py`` files, :func:`load_project` for everything else."""
    path = FsPath(path)
    return load_python(path) if path.suffix == ".py" else load_project(path)


def load_python(path: FsPath) -> ProjectSpec:
    """Import ``path`` and return every module-level ``forge_core.flow.Workflow`` as specs."""
    from ..flow import Workflow

    file = str(FsPath(path).resolve())
    module = _import(file)
    found = list({id(v): v for v in vars(module).values() if isinstance(v, Workflow)}.values())
    if not found:
        raise ConfigError([ConfigProblem("no forge_core.flow.Workflow at the module's top level; "
                                         "create one with Workflow('name')", file=file)])
    workflows: dict[str, WorkflowSpec] = {}
    problems: list[ConfigProblem] = []
    cycle: list[str] | None = None
    for wf in found:
        try:
            spec = wf.spec()
        except ConfigError as exc:
            problems += exc.problems
            cycle = cycle or getattr(exc, "cycle", None)
            continue
        if spec.name in workflows:
            problems.append(ConfigProblem(f"two workflows are named {spec.name!r}",
                                          file=spec.source, field=f"workflows.{spec.name}"))
        workflows[spec.name] = spec
    raise_problems(problems, cycle)
    return ProjectSpec(workflows=workflows, source=file)


def _import(file: str) -> ModuleType:
    name = "forge_user_" + hashlib.sha256(file.encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None or not FsPath(file).is_file():
        raise ConfigError([ConfigProblem("cannot read the file: not a Python file", file=file)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(FsPath(file).parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ConfigError([ConfigProblem(f"invalid Python: {exc.msg}", file=exc.filename or file,
                                         line=exc.lineno)]) from None
    except (Exception, SystemExit) as exc:  # the user's module failed: say where, no traceback
        sys.modules.pop(name, None)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == file]
        line = frames[-1].lineno if frames else None
        raise ConfigError([ConfigProblem(f"importing the file failed: {type(exc).__name__}: {exc}",
                                         file=file, line=line)]) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module
