"""The Executor interface: where a ready task's work happens, within a concurrency limit.

The engine resolves a task into a :class:`TaskRun` (templating done, shell wrapped when
asked) and awaits :meth:`Executor.submit`; the executor returns an :class:`Outcome` and
never raises for a failing task — only for its own breakage.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio
import attrs

from ._common import Availability
from ._runtime import ContainerSpec

if TYPE_CHECKING:
    from ._queue import Queue
    from ._runtime import Runtime

__all__ = ["Executor", "Outcome", "OutcomeStatus", "TaskRun", "attempt_env"]

OutcomeStatus = Literal["succeeded", "failed", "skipped", "timed_out", "cancelled"]


def attempt_env(
    run_id: str, task: str, attempt: int, output_path: str | os.PathLike[str] | None,
) -> dict[str, str]:
    """The ``FORGE_*`` variables of one attempt that every task process sees."""
    env = {"FORGE_RUN_ID": run_id, "FORGE_TASK": task, "FORGE_ATTEMPT": str(attempt)}
    if output_path is not None:
        env["FORGE_OUTPUT"] = os.fspath(output_path)
    return env


@attrs.frozen(kw_only=True)
class TaskRun:
    """One attempt of one task, fully resolved.

    Exactly one of ``container`` (a command) and ``python`` (``"module:qualname"`` or
    ``"/path/file.py:qualname"``) is set; ``func`` may carry the already-imported callable
    for in-process executors.
    """

    run_id: str
    task: str
    attempt: int
    kind: str = "command"
    container: ContainerSpec | None = None
    python: str | None = None
    func: Callable[..., Any] | None = attrs.field(default=None, eq=False, repr=False)
    inputs: Mapping[str, Any] = attrs.field(factory=dict)
    """Keyword arguments for a Python task (params and upstream outputs it asked for)."""
    timeout: float | None = None
    grace: float = 10.0
    log_path: str | os.PathLike[str] | None = None
    """File that receives the attempt's output (a path: a ``str`` or a ``Path``)."""
    output_path: str | os.PathLike[str] | None = None
    """File the task writes ``key=value`` lines or JSON to (``$FORGE_OUTPUT``)."""
    skip_exit_codes: tuple[int, ...] = ()


@attrs.frozen(kw_only=True)
class Outcome:
    """How one attempt ended."""

    status: OutcomeStatus
    exit_code: int | None = None
    error: str = ""
    outputs: Mapping[str, Any] = attrs.field(factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0
    oom_killed: bool = False

    @property
    def duration(self) -> float:
        return max(0.0, self.finished_at - self.started_at)


class Executor(abc.ABC):
    """Runs :class:`TaskRun` s. Backends: ``local``, ``thread``, ``process`` (core), ``queue``
    (core, through any Queue), ``grpc`` (plugin, remote script workers)."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        concurrency: int = 4,
        runtime: Runtime | None = None,
        queue: Queue | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.runtime = runtime
        self.queue = queue
        self._slots = anyio.Semaphore(self.concurrency)

    @classmethod
    def available(cls) -> Availability:
        return Availability.yes()

    async def submit(self, run: TaskRun) -> Outcome:
        """Run ``run`` once a concurrency slot is free and return its outcome."""
        try:
            self._slots.acquire_nowait()  # a free slot costs no trip through the event loop
        except anyio.WouldBlock:
            await self._slots.acquire()
        try:
            return await self.execute(run)
        finally:
            self._slots.release()

    @abc.abstractmethod
    async def execute(self, run: TaskRun) -> Outcome:
        """Run one attempt (the slot is already held). Honour ``run.timeout`` by stopping the
        work (SIGTERM, ``run.grace``, SIGKILL) and returning ``timed_out``; when cancelled,
        stop the work and re-raise the cancellation."""

    async def aclose(self) -> None:
        """Release workers and pools."""
