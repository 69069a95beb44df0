"""The ``process`` executor: every task, Python ones included, in a child process.

A Python task runs as ``python .../_pyrun.py REQUEST`` through the executor's runtime: the
request (target, JSON inputs, the parent's ``sys.path``) and the result travel as files in
a private temporary directory, the child's stdout and stderr are the task's log, and a
timeout or cancellation kills it for real. The runtime must see the host's filesystem (the
default :class:`~forge_core.runtime.ProcessRuntime` does).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from ..abc import ContainerSpec, Outcome, TaskRun
from ..exceptions import ForgeError
from ._base import BaseExecutor, finish, forge_env, outcome, python_failure, write_log

__all__ = ["ProcessExecutor"]

_PYRUN = str(Path(__file__).with_name("_pyrun.py"))


class ProcessExecutor(BaseExecutor):
    """Up to ``concurrency`` tasks at once, each in its own child process."""

    name = "process"

    async def _run_python(self, run: TaskRun, started: float) -> Outcome:
        target = run.python if run.python is not None else _importable(run.func)
        if target is None:
            return outcome("failed", started, error=(
                "the process executor needs an importable python target ('module:function' "
                "or '/path/file.py:function'), not a local or lambda function"))
        workdir = tempfile.mkdtemp(prefix="forge-py-")
        try:
            return await self._run_child(run, target, Path(workdir), started)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _run_child(self, run: TaskRun, target: str, workdir: Path, started: float) -> Outcome:
        result_path = workdir / "result.json"
        request = {"target": target, "inputs": dict(run.inputs), "sys_path": sys.path,
                   "result": str(result_path)}
        try:
            (workdir / "request.json").write_text(json.dumps(request), encoding="utf-8")
        except (TypeError, ValueError) as exc:
            error = f"python task inputs are not JSON-serialisable: {exc}"
            return outcome("failed", started, error=error)
        spec = ContainerSpec(
            # cast: ContainerSpec's converter=tuple confuses mypy's attrs plugin
            command=cast(Any, (sys.executable, _PYRUN, str(workdir / "request.json"))),
            env={**forge_env(run), "PYTHONUNBUFFERED": "1"},
            log_path=run.log_path,
        )
        try:
            status, timed_out = await self._runtime.run(spec, timeout=run.timeout, grace=run.grace)
        except ForgeError as exc:
            write_log(run.log_path, f"forge: {exc}\n")
            return outcome("failed", started, error=str(exc))
        result = None if timed_out else _read_result(result_path)
        if result is None:
            if status.ok and not timed_out:
                return outcome("failed", started, exit_code=0,
                               error="the python task process exited without reporting a result")
            return finish(run, status, timed_out, started)
        if result.get("status") == "succeeded":
            return outcome("succeeded", started, exit_code=0, outputs=result.get("outputs", {}))
        return python_failure(run, result.get("exit_code"), str(result.get("error")), started)


def _importable(func: Any) -> str | None:
    """``module:qualname`` for a module-level function a child process can import again."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None

