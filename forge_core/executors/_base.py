"""What the core executors share: command tasks through a Runtime, and turning an end into an
:class:`~forge_core.abc.Outcome`."""

from __future__ import annotations

import abc
import logging
import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..abc import (
    ContainerSpec,
    Executor,
    ExitStatus,
    Outcome,
    OutcomeStatus,
    Runtime,
    TaskRun,
    attempt_env,
)
from ..exceptions import ForgeError
from ..runtime import ProcessRuntime
from ._outputs import OutputError, read_outputs

if TYPE_CHECKING:
    from ..abc import Queue

__all__ = ["BaseExecutor", "finish", "forge_env", "outcome", "python_failure", "write_log"]

log = logging.getLogger(__name__)


def outcome(status: OutcomeStatus, started: float, **fields: Any) -> Outcome:
    """An :class:`Outcome` that finished now."""
    return Outcome(status=status, started_at=started, finished_at=time.time(), **fields)


def forge_env(run: TaskRun) -> dict[str, str]:
    """The ``FORGE_*`` variables of ``run`` that every task process sees."""
    return attempt_env(run.run_id, run.task, run.attempt, run.output_path)


def write_log(path: str | os.PathLike[str] | None, text: str) -> None:
    """Append ``text`` to a task's log file, if it has one; a failure to log is only logged."""
    if path is None:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        log.warning("cannot write task log %s: %s", path, exc)


def python_failure(run: TaskRun, exit_code: int | None, error: str, started: float) -> Outcome:
    """A failed Python task, or a skipped one when it exited with one of ``skip_exit_codes``."""
    if exit_code is not None and exit_code in run.skip_exit_codes:
        return outcome("skipped", started, exit_code=exit_code)
    return outcome("failed", started, exit_code=exit_code, error=error)


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


class BaseExecutor(Executor):
    """Runs command tasks through ``runtime`` (a :class:`ProcessRuntime` unless one is given);
    subclasses decide where Python tasks run."""

    def __init__(
        self,
        *,
        concurrency: int = 4,
        runtime: Runtime | None = None,
        queue: Queue | None = None,
    ) -> None:
        self._owns_runtime = runtime is None
        runtime = runtime if runtime is not None else ProcessRuntime()
        super().__init__(concurrency=concurrency, runtime=runtime, queue=queue)
        self._runtime: Runtime = runtime
        self._made_dirs: set[str] = set()

    async def aclose(self) -> None:
        if self._owns_runtime:
            await self._runtime.aclose()

    async def execute(self, run: TaskRun) -> Outcome:
        started = time.time()
        if run.container is not None:
            return await self._run_command(run, started)
        if run.python is not None or run.func is not None:
            return await self._run_python(run, started)
        error = f"task {run.task!r} has no command and no python target"
        return outcome("failed", started, error=error)

    @abc.abstractmethod
    async def _run_python(self, run: TaskRun, started: float) -> Outcome:
        """Run a Python task (``run.python`` / ``run.func``) and say how it ended."""

    async def _run_command(self, run: TaskRun, started: float) -> Outcome:
        assert run.container is not None
        try:
            spec = self._command_spec(run, run.container)
        except OSError as exc:
            return outcome("failed", started, error=f"cannot prepare {run.output_path}: {exc}")
        try:
            status, timed_out = await self._runtime.run(spec, timeout=run.timeout, grace=run.grace)
        except ForgeError as exc:
            write_log(run.log_path, f"forge: {exc}\n")
            return outcome("failed", started, error=str(exc))
        return finish(run, status, timed_out, started)

    def _command_spec(self, run: TaskRun, container: ContainerSpec) -> ContainerSpec:
        if run.output_path is not None:
            folder = os.path.dirname(run.output_path)
            if folder not in self._made_dirs:  # one mkdir per run folder, not per task
                Path(folder).mkdir(parents=True, exist_ok=True)
                self._made_dirs.add(folder)
        return _with_forge_env(run, container)


def _with_forge_env(run: TaskRun, container: ContainerSpec) -> ContainerSpec:
    """``container`` with the attempt's ``FORGE_*`` variables and log file (the engine's
    resolver already put them there; a run built by other code may lack them)."""
    env = forge_env(run)
    if container.log_path is not None and container.env.items() >= env.items():
        return container
    return attrs.evolve(
        container,
        env={**container.env, **env},
        log_path=container.log_path if container.log_path is not None else run.log_path,
    )


def finish(run: TaskRun, status: ExitStatus, timed_out: bool, started: float) -> Outcome:
    """The outcome of a command that ended with ``status`` (outputs read on success or skip)."""
    code = status.exit_code
    if timed_out:
        error = f"timed out after {run.timeout:g}s"
        return outcome("timed_out", started, exit_code=code, error=error)
    if code is not None and (code == 0 or code in run.skip_exit_codes):
        try:
            outputs = read_outputs(run.output_path)
        except OutputError as exc:
            return outcome("failed", started, exit_code=code, error=str(exc))
        status_name: OutcomeStatus = "skipped" if code in run.skip_exit_codes else "succeeded"
        return outcome(status_name, started, exit_code=code, outputs=outputs)
    return outcome(
        "failed", started, exit_code=code, error=status.describe(), oom_killed=status.oom_killed
    )
