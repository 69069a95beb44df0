"""Stopping a run in the foreground on Ctrl-C or SIGTERM, as `docker stop` and Airflow's task
runner do: the first signal cancels the run — each running task gets SIGTERM, then SIGKILL
after its ``grace``, and is recorded as cancelled — and a second one stops waiting: Forge exits
at once, its watchdog SIGKILLs the tasks, and the run is left to ``forge workflow resume`` as a
crash would leave it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import anyio
import anyio.abc

__all__ = ["Stopped", "until_stopped"]

T = TypeVar("T")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """The run was cancelled by signal ``signum``; the command exits with ``exit_code``."""

    def __init__(self, signum: int) -> None:
        super().__init__("interrupted" if signum == signal.SIGINT else "terminated")
        self.exit_code = 128 + signum


async def until_stopped(work: Callable[[], Awaitable[T]],
                        before_exit: Callable[[], object] = lambda: None) -> T:
    """``await work()``, cancelled by the first SIGINT or SIGTERM (then raises
    :class:`Stopped`); a second signal calls ``before_exit`` (restore the terminal) and exits
    the process with 128 + that signal."""
    if sys.platform == "win32":  # no signal handlers in an asyncio loop there: Ctrl-C as is
        return await work()
    work_scope = anyio.CancelScope()
    received: list[int] = []
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(_watch, work_scope, received, before_exit)
        with work_scope:
            try:
                result = await work()
            except Exception as exc:  # raised below as it is, not in an ExceptionGroup
                failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if work_scope.cancelled_caught:
        raise Stopped(received[0])
    return result


async def _watch(work_scope: anyio.CancelScope, received: list[int],
                 before_exit: Callable[[], object],
                 *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    with anyio.open_signal_receiver(*_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            if received:
                _exit_now(signum, before_exit)
            received.append(signum)
            sys.stderr.write("stopping: running tasks get SIGTERM, then SIGKILL after their "
                             "grace period (Ctrl-C again to stop waiting)\n")
            work_scope.cancel()


def _exit_now(signum: int, before_exit: Callable[[], object]) -> NoReturn:
    before_exit()
    sys.stderr.write("stopped without waiting: the watchdog kills the running tasks; "
                     "finish the run with: forge workflow resume last\n")
    sys.stderr.flush()
    os._exit(128 + signum)  # what a kill leaves, and a resume finishes
