"""The ``thread`` and ``local`` executors: Python tasks in worker threads of the Forge process.

A thread cannot be killed: a Python task that outlives its timeout (or its cancellation) is
abandoned — Forge reports ``timed_out`` (or re-raises the cancellation) at once, while the
thread runs on in the background until the function returns. ``async def`` tasks run in the
event loop instead, where a timeout really cancels them. Command tasks are child processes.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ..abc import Outcome, Runtime, TaskRun
from ._base import BaseExecutor, outcome, python_failure, traceback_text, write_log
from ._pyrun import call, describe, load_target, to_outputs

if TYPE_CHECKING:
    from ..abc import Queue

__all__ = ["LocalExecutor", "ThreadExecutor"]

log = logging.getLogger(__name__)


class ThreadExecutor(BaseExecutor):
    """Up to ``concurrency`` tasks at once; Python tasks in worker threads (print output is not
    captured — only a failing task's traceback reaches its log file)."""

    name = "thread"

    def __init__(
        self,
        *,
        concurrency: int = 4,
        runtime: Runtime | None = None,
        queue: Queue | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, runtime=runtime, queue=queue)
        self._threads = anyio.CapacityLimiter(self.concurrency)
        self._targets: dict[str, Callable[..., Any]] = {}

    async def _run_python(self, run: TaskRun, started: float) -> Outcome:
        try:
            func = await self._load(run)
            with anyio.move_on_after(math.inf if run.timeout is None else run.timeout) as scope:
                value = await self._call(func, run)
            if scope.cancelled_caught:
                return self._timed_out(run, started)
            return outcome("succeeded", started, outputs=to_outputs(value))
        except (Exception, SystemExit) as exc:
            return _failed(run, exc, started)

    async def _load(self, run: TaskRun) -> Callable[..., Any]:
        if run.func is not None:
            return run.func
        assert run.python is not None
        func = self._targets.get(run.python)
        if func is None:
            func = await anyio.to_thread.run_sync(load_target, run.python, limiter=self._threads)
            self._targets[run.python] = func
        return func

    async def _call(self, func: Callable[..., Any], run: TaskRun) -> Any:
        if inspect.iscoroutinefunction(func):
            return await func(**run.inputs)
        return await anyio.to_thread.run_sync(
            functools.partial(call, func, run.inputs), abandon_on_cancel=True, limiter=self._threads
        )

    def _timed_out(self, run: TaskRun, started: float) -> Outcome:
        log.warning(
            "task %s timed out after %gs; its thread cannot be killed and is abandoned",
            run.task, run.timeout,
        )
        write_log(run.log_path, f"forge: timed out after {run.timeout:g}s (thread abandoned)\n")
        return outcome("timed_out", started, error=f"timed out after {run.timeout:g}s")


class LocalExecutor(ThreadExecutor):
    """One task at a time, in this process (concurrency is always 1).

    Python tasks run in a worker thread, not the event-loop thread, so the engine stays
    responsive (events, timeouts, cancellation) while a task computes.
    """

    name = "local"

    def __init__(
        self,
        *,
        concurrency: int = 1,
        runtime: Runtime | None = None,
        queue: Queue | None = None,
    ) -> None:
        super().__init__(concurrency=1, runtime=runtime, queue=queue)


def _failed(run: TaskRun, exc: BaseException, started: float) -> Outcome:
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return outcome("succeeded", started)
    message, code, show_traceback = describe(exc)
    write_log(run.log_path, traceback_text(exc) if show_traceback else f"task failed: {message}\n")
    return python_failure(run, code, message, started)

