"""Task logs of a workflow with secrets: the attempt's output goes into a pipe, and a pump in
the engine masks it on its way to the log file, so a secret never reaches the disk — not
even while the attempt runs or after the engine is killed.

The pipe is a FIFO in a private directory under ``$FORGE_HOME/pipes``, handed to the
executor as the attempt's ``log_path``: every executor and runtime that opens a log path by
name (the process and linux runtimes, Python tasks' tracebacks, the queue's command agents)
writes through it unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import attrs

from ..abc import Executor, Outcome, TaskRun
from ..secrets import StreamRedactor

__all__ = ["LogPipes"]

log = logging.getLogger(__name__)

_PIPE_SIZE = 1 << 20
"""Bytes a writer can put in the pipe before it waits for the pump (Linux F_SETPIPE_SZ)."""


@attrs.define
class LogPipes:
    """One private directory of FIFOs per run, ``ROOT/RUN_ID-*`` (a killed engine's is
    removed when its run resumes); :meth:`submit` runs an attempt through one."""

    new_redactor: Callable[[], StreamRedactor | None]
    root: Path
    run_id: str
    _dir: Path | None = attrs.field(default=None, init=False)
    _made: int = attrs.field(default=0, init=False)

    async def submit(self, executor: Executor, run: TaskRun) -> Outcome:
        """``executor.submit(run)`` with the attempt's output masked into ``run.log_path``."""
        redactor = self.new_redactor()
        if run.log_path is None or redactor is None:
            return await executor.submit(run)
        try:
            pump = _Pump.open(self._fifo(), run.log_path, redactor)
        except OSError as exc:  # never fall back to writing the log unmasked
            now = time.time()
            return Outcome(status="failed", error=f"cannot open the log of {run.task}: {exc}",
                           started_at=now, finished_at=now)
        outcome: Outcome | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump.run)
                try:
                    outcome = await executor.submit(_through(run, pump.fifo))
                finally:
                    tg.cancel_scope.cancel()
        finally:
            pump.close()
        assert outcome is not None  # submit returned, or its exception left above
        return outcome

    def close(self) -> None:
        """Remove the FIFO directory (the FIFOs hold no data on disk)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _fifo(self) -> Path:
        if self._dir is None:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for stale in self.root.glob(f"{self.run_id}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            self._dir = Path(tempfile.mkdtemp(prefix=f"{self.run_id}-", dir=self.root))  # 0700
        self._made += 1
        path = self._dir / f"{self._made}.fifo"  # task names may hold any character
        os.mkfifo(path, 0o600)
        return path


@attrs.define
class _Pump:
    fifo: Path
    read_fd: int
    log_fd: int
    redactor: StreamRedactor

    @classmethod
    def open(cls, fifo: Path, log_path: str | os.PathLike[str], redactor: StreamRedactor) -> _Pump:
        # read-write: the pump is a writer too, so the pipe never reads as ended between
        # the task closing it and a late writer (a traceback, the executor's error line)
        read_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        try:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            os.close(read_fd)
            raise
        return cls(fifo=fifo, read_fd=read_fd, log_fd=log_fd, redactor=redactor)

    async def run(self) -> None:
        while True:
            await anyio.wait_readable(self.read_fd)
            self.drain()

    def drain(self) -> None:
        """Move everything the pipe holds now, masked, to the log file."""
        while True:
            try:
                data = os.read(self.read_fd, 65536)
            except BlockingIOError:
                return
            self._write(self.redactor.feed(data))

    def close(self) -> None:
        """Drain the pipe, write what was held back, release both ends and the FIFO."""
        try:
            self.drain()
            self._write(self.redactor.flush())
        finally:
            os.close(self.read_fd)
            os.close(self.log_fd)
            self.fifo.unlink(missing_ok=True)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.log_fd, view):]
            except OSError as exc:  # a full disk loses log lines, never the run
                log.warning("cannot write a task log: %s", exc)
                return


def _through(run: TaskRun, fifo: Path) -> TaskRun:
    """``run`` logging into ``fifo``: its own log path, and its command's where that is the
    same file (the engine's resolver gives a command the attempt's log path)."""
    container = run.container
    if container is not None and container.log_path == run.log_path:
        container = attrs.evolve(container, log_path=fifo)
    return attrs.evolve(run, log_path=fifo, container=container)
