"""Load and call a Python task: shared by the in-process executors and run as a child script.

This module imports only the standard library, so ``python .../_pyrun.py REQUEST`` starts
fast: the process executor writes a JSON request (target, inputs, ``sys.path``, result
file), this script calls the task and writes a JSON result; its stdout and stderr are the
task's log.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
import zlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["TaskError", "call", "describe", "load_target", "main", "to_outputs"]

_FILE_MODULES: dict[str, Any] = {}


class TaskError(Exception):
    """A Python task failed in a way that has a one-line message (and maybe an exit code)."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _load_file(path: str) -> Any:
    module = _FILE_MODULES.get(path)
    if module is not None:
        return module
    import importlib.util

    name = f"forge_task_{zlib.crc32(path.encode()):08x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"cannot load python task file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _FILE_MODULES[path] = module
    return module


def load_target(target: str) -> Callable[..., Any]:
    """Import ``"module:qualname"`` or ``"/abs/path/file.py:qualname"`` and return the callable.

    Raises :class:`TaskError` for a malformed or missing target; errors raised while the
    module itself runs propagate.
    """
    where, sep, qualname = target.rpartition(":")
    if not sep or not where or not qualname:
        raise TaskError(f"python task {target!r} must look like 'module:function' or "
                        "'/path/file.py:function'")
    if where.endswith(".py") or os.sep in where:
        if not os.path.isfile(where):
            raise TaskError(f"python task file not found: {where}")
        obj = _load_file(where)
    else:
        try:
            obj = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and (where == exc.name or where.startswith(exc.name + ".")):
                raise TaskError(f"python task module not found: {where}") from None
            raise
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            message = f"python task {target!r}: {where} has no attribute {qualname!r}"
            raise TaskError(message) from None
    if not callable(obj):
        raise TaskError(f"python task {target!r} is not callable")
    return obj  # type: ignore[no-any-return]


def call(func: Callable[..., Any], inputs: Mapping[str, Any]) -> Any:
    """Call ``func(**inputs)``; a coroutine it returns runs to completion in a fresh event loop."""
    value = func(**inputs)
    if isinstance(value, types.CoroutineType):
        import asyncio  # only when needed: it costs a child process ~25 ms to import

        return asyncio.run(value)
    return value


OUTPUT_LIMIT = 1 << 20
"""Most bytes a task's outputs may take (1 MiB, as JSON or as its output file): outputs are
stored with the run and filled into later tasks' commands; bulk data goes in a file whose
path is the output."""


def to_outputs(value: Any) -> dict[str, Any]:
    """A task's return value as outputs: a dict as is, anything else under ``"return"``.

    Raises :class:`TaskError` when the outputs are not JSON-serialisable.
    """
    if value is None:
        return {}
    outputs = value if isinstance(value, dict) else {"return": value}
    if not all(isinstance(key, str) for key in outputs):
        raise TaskError("a python task's returned dict must have string keys")
    try:
        size = len(json.dumps(outputs))
    except (TypeError, ValueError) as exc:
        raise TaskError(f"python task outputs are not JSON-serialisable: {exc}") from None
    if size > OUTPUT_LIMIT:
        raise TaskError(f"python task outputs take more than {OUTPUT_LIMIT >> 20} MiB as JSON; "
                        "write bulk data to a file and return its path")
    return outputs


def describe(exc: BaseException) -> tuple[str, int | None, bool]:
    """(message, exit code, whether a traceback helps) for an exception a task raised."""
    if isinstance(exc, TaskError):
        return str(exc), exc.exit_code, False
    exceptions = sys.modules.get("forge_core.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.TaskFailed):
        return str(exc), exc.exit_code, False
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 1
        return f"exit code {code}", code, False
    return f"{type(exc).__name__}: {exc}", None, True


def run_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Call the task a request names; the JSON-able result the parent reads back."""
    try:
        value = call(load_target(request["target"]), request.get("inputs", {}))
        return {"status": "succeeded", "outputs": to_outputs(value)}
    except SystemExit as exc:
        if exc.code in (None, 0):
            return {"status": "succeeded", "outputs": {}}
        message, code, _ = describe(exc)
        return {"status": "failed", "error": message, "exit_code": code}
    except Exception as exc:
        message, code, show = describe(exc)
        if show:
            import traceback

            traceback.print_exc()
        else:
            print(f"task failed: {message}", file=sys.stderr)
        return {"status": "failed", "error": message, "exit_code": code}


def main(argv: list[str]) -> int:
    """``_pyrun.py REQUEST_FILE``: run the request, write the result file, exit 0 or 1."""
    with open(argv[1], encoding="utf-8") as fh:
        request = json.load(fh)
    sys.path[:] = request.get("sys_path", sys.path)
    result = run_request(request)
    sys.stdout.flush()
    with open(request["result"], "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0 if result["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
