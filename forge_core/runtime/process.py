"""The ``process`` runtime: a plain child process in its own process group, with rlimits.

Each container is the leader of a new process group, so a signal reaches the whole group,
and of a new session when Forge has a terminal to cut it from (see ``_spawn``). When the
leader exits, the rest of its group is SIGKILLed before the leader is reaped (the zombie
keeps the group id from being reused), so nothing it started outlives it. A non-detached
container's group is SIGKILLed by a watchdog process if Forge dies. A descendant that calls
``setsid``/``setpgid`` itself escapes the group: use the ``linux`` runtime (cgroups) when
that matters.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import signal as _signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import ClassVar

import anyio
import anyio.abc
import attrs
import psutil

from ..abc import Availability, ContainerSpec, ExitStatus, Handle, Runtime, Stats
from ..exceptions import ForgeError, NotFound, Unsupported
from . import _exits, _spawn, _watchdog
from ._logs import LogFiles, open_log
from ._streams import FdReceiveStream, FdSendStream

__all__ = ["ProcessRuntime"]

log = logging.getLogger(__name__)

_WAITERS = anyio.CapacityLimiter(10_000)
"""Threads that wait for a child where no pidfd is available (non-Linux, old kernels)."""

_ID_PREFIX = secrets.token_hex(3)
_ids = itertools.count()
"""Handle ids: a random prefix per process, then a counter (no random bytes per child)."""

_SPAWNERS = 4
"""Worker threads of a runtime that fork children that need rlimits or another working
directory: the fork and exec of one overlap the event loop's work and other starts."""


@attrs.define(eq=False)
class _Child:
    handle: Handle
    pid: int
    popen: subprocess.Popen[bytes] | None
    """Set when it started through ``Popen`` (which then reaps it)."""
    pidfd: int | None
    waiting: bool = False
    """A waiter is waiting for the exit (and reaps); others wait on ``exited``."""
    exited: anyio.Event | None = None
    status: ExitStatus | None = None
    stdio: tuple[FdSendStream, FdReceiveStream] | None = None
    watchdog: _watchdog.Watchdog | None = None
    log_fd: int | None = None
    """What it logs through, until it is reaped."""


@attrs.define(eq=False)
class ProcessRuntime(Runtime):
    """Runs each container as a child process of Forge (no isolation beyond rlimits).

    Enforces ``resources.memory`` (RLIMIT_AS, per process), ``resources.cpu_time``
    (RLIMIT_CPU, per process) and ``detach``; refuses everything else, including
    ``resources.pids`` (RLIMIT_NPROC counts every process of the user, not the container)
    and ``resources.cpus``.
    """

    name: ClassVar[str] = "process"
    supports: ClassVar[frozenset[str]] = frozenset(
        {"resources.memory", "resources.cpu_time", "detach"}
    )

    _children: dict[str, _Child] = attrs.field(factory=dict, init=False)
    _spawners: anyio.CapacityLimiter = attrs.field(
        factory=lambda: anyio.CapacityLimiter(_SPAWNERS), init=False)
    _logs: LogFiles = attrs.field(factory=LogFiles, init=False)

    @classmethod
    def available(cls) -> Availability:
        if os.name != "posix":
            return Availability.no("the process runtime needs POSIX sessions and process groups")
        return Availability.yes()

    async def start(self, spec: ContainerSpec) -> Handle:
        self.validate(spec)
        env = _environment(spec)
        limits = _spawn.rlimits_for(spec.resources.memory, spec.resources.cpu_time)
        watchdog = None if spec.detach else _watchdog.watchdog()  # running before the child
        log_fd = self._log_fd(spec)
        try:
            if _spawn.direct(spec.workdir, limits):  # a vfork: the loop waits only for the exec
                pid, popen, ours = _launch(spec, env, limits, True, log_fd)
            else:  # a real fork: in a worker thread, so the loop goes on meanwhile
                pid, popen, ours = await anyio.to_thread.run_sync(
                    _launch, spec, env, limits, False, log_fd, limiter=self._spawners)
        except BaseException:
            if log_fd is not None:
                self._logs.close(log_fd)
            raise
        if log_fd is not None and spec.detach:  # it outlives this runtime: the file is its own
            self._logs.close(log_fd)
            log_fd = None
        child = _adopt(spec, pid, popen, ours, watchdog, log_fd)
        self._children[child.handle.id] = child
        log.debug("started %s: pid %s %s", child.handle.id, pid, spec.command[0])
        return child.handle

    def _log_fd(self, spec: ContainerSpec) -> int | None:
        if spec.log_path is None:
            return None
        if spec.detach:
            return open_log(spec.log_path)
        return self._logs.open(spec.log_path)

    async def aclose(self) -> None:
        self._logs.release()

    async def wait(self, handle: Handle) -> ExitStatus:
        child = self._get(handle)
        while child.status is None:
            if not child.waiting:  # the first waiter waits for the exit and reaps
                child.waiting = True
                try:
                    await _wait_exited(child)
                    child.status = _reap(child)
                    if child.log_fd is not None:
                        log_fd, child.log_fd = child.log_fd, None
                        self._logs.close(log_fd)
                finally:  # reaped, or cancelled: then another waiter takes over
                    child.waiting = False
                    if child.exited is not None:
                        exited, child.exited = child.exited, None
                        exited.set()
            else:
                if child.exited is None:
                    child.exited = anyio.Event()
                await child.exited.wait()
        return child.status

    async def signal(self, handle: Handle, signum: int) -> None:
        child = self._get(handle)
        if child.status is None:  # once reaped, its group is already gone
            _killpg(child.pid, signum)

    def discard(self, handle: Handle) -> bool:
        child = self._children.get(handle.id)
        if child is not None and (child.status is None or child.stdio is not None):
            return False  # still running, or pipes to close
        self._children.pop(handle.id, None)  # reaped (with the rest of its group)
        return True

    async def remove(self, handle: Handle) -> None:
        if self.discard(handle):  # gone already, or nothing left to await
            return
        child = self._children[handle.id]
        with anyio.CancelScope(shield=True):
            if child.status is None:
                _killpg(child.pid, _signal.SIGKILL)
                await self.wait(handle)
            if child.stdio is not None:
                for stream in child.stdio:
                    await stream.aclose()
        self._children.pop(handle.id, None)

    async def stats(self, handle: Handle) -> Stats:
        child = self._get(handle)
        if child.status is not None:
            return Stats()
        return await anyio.to_thread.run_sync(_group_stats, child.pid)

    async def list(self) -> list[Handle]:
        return [child.handle for child in self._children.values()]

    async def attach(
        self, handle: Handle
    ) -> tuple[anyio.abc.ByteSendStream, anyio.abc.ByteReceiveStream]:
        child = self._get(handle)
        if child.stdio is None:
            raise Unsupported(f"container {handle.id} was not started with interactive=True")
        return child.stdio

    def _get(self, handle: Handle) -> _Child:
        try:
            return self._children[handle.id]
        except KeyError:
            raise NotFound(f"no container {handle.id} in the process runtime") from None


def _environment(spec: ContainerSpec) -> dict[bytes, bytes]:
    """The child's environment, as the bytes ``exec`` takes (no decoding of Forge's whole
    environment and encoding it again for every child)."""
    env = dict(_spawn.ENVIRON) if spec.inherit_env else {}
    for key, value in spec.env.items():  # os.fsencode's work, without its checks per string
        env[key.encode(_FS_ENCODING, _FS_ERRORS)] = value.encode(_FS_ENCODING, _FS_ERRORS)
    return env


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _launch(
    spec: ContainerSpec, env: Mapping[bytes, bytes], limits: list[_spawn.Limit], direct: bool,
    log_fd: int | None,
) -> tuple[int, subprocess.Popen[bytes] | None, list[int]]:
    """Start the child (``direct``: with ``posix_spawn``), its output going to ``log_fd``
    (which stays the caller's): its pid, its ``Popen`` if it needed one, and the pipe ends
    Forge keeps for an interactive one."""
    if log_fd is None:
        log_fd = _devnull()
    ours: list[int] = []
    theirs: list[int] = []
    stdin, stdout = _devnull(), log_fd
    if spec.interactive:
        stdin, in_w = os.pipe()
        out_r, stdout = os.pipe()
        ours, theirs = [in_w, out_r], [stdin, stdout]
    try:
        if direct:
            pid = _spawn.spawn_direct(spec.command, env=env, stdin=stdin, stdout=stdout,
                                      stderr=log_fd)
            return pid, None, ours
        popen = _spawn.spawn(spec.command, env=env, cwd=spec.workdir, stdin=stdin,
                             stdout=stdout, stderr=log_fd, limits=limits)
        return popen.pid, popen, ours
    except OSError as exc:
        for fd in ours:
            os.close(fd)
        raise _start_error(spec, exc) from None
    finally:
        for fd in theirs:
            os.close(fd)


def _adopt(
    spec: ContainerSpec, pid: int, popen: subprocess.Popen[bytes] | None, ours: list[int],
    watchdog: _watchdog.Watchdog | None, log_fd: int | None,
) -> _Child:
    """Register a started child with the watchdog and wrap it for the runtime."""
    if watchdog is not None and not watchdog.register(pid):  # it died: a new one
        watchdog = _watchdog.protect(pid)
    handle = Handle(
        id=f"proc-{_ID_PREFIX}{next(_ids) & 0xFFFFFF:06x}",
        runtime="process",
        pid=pid,
        name=spec.name,
        started_at=time.time(),
        info={"pgid": pid},
    )
    child = _Child(handle=handle, pid=pid, popen=popen, pidfd=_pidfd(pid), watchdog=watchdog,
                   log_fd=log_fd)
    if ours:
        child.stdio = (FdSendStream(ours[0]), FdReceiveStream(ours[1]))
    return child


_DEVNULL: int | None = None
_DEVNULL_LOCK = threading.Lock()


def _devnull() -> int:
    """One ``/dev/null`` descriptor for every child's stdin (not an open and close per child)."""
    global _DEVNULL
    if _DEVNULL is not None:
        return _DEVNULL
    with _DEVNULL_LOCK:
        if _DEVNULL is None:
            _DEVNULL = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        return _DEVNULL


def _start_error(spec: ContainerSpec, exc: OSError) -> ForgeError:
    if isinstance(exc, FileNotFoundError):
        if spec.workdir is not None and exc.filename == spec.workdir:
            return NotFound(f"working directory not found: {spec.workdir}")
        return NotFound(f"command not found: {spec.command[0]}")
    return ForgeError(f"cannot start {spec.command[0]}: {exc.strerror or exc}")


_PIDFDS = hasattr(os, "pidfd_open") and hasattr(anyio, "wait_readable")


def _pidfd(pid: int) -> int | None:
    if not _PIDFDS:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


async def _wait_exited(child: _Child) -> None:
    """Return once the leader exited, without reaping it (its zombie still holds the pgid)."""
    if child.pidfd is not None:
        await _exits.wait_exited(child.pidfd)
        return
    pid = child.pid
    await anyio.to_thread.run_sync(
        lambda: os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT),
        abandon_on_cancel=True,
        limiter=_WAITERS,
    )


def _reap(child: _Child) -> ExitStatus:
    _killpg(child.pid, _signal.SIGKILL)  # whatever the leader left behind in its group
    if child.watchdog is not None:  # its zombie holds the group id until the wait below
        child.watchdog.unregister(child.pid)
    if child.popen is not None:
        returncode = child.popen.wait()
    else:
        returncode = os.waitstatus_to_exitcode(os.waitpid(child.pid, 0)[1])
    if child.pidfd is not None:
        os.close(child.pidfd)
        child.pidfd = None
    if returncode < 0:
        return ExitStatus(exit_code=None, signal=-returncode)
    return ExitStatus(exit_code=returncode)


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not permitted to signal process group %s (a setuid program?)", pgid)


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pgid:
                members.append(psutil.Process(pid))
    return members


def _group_stats(pgid: int) -> Stats:
    cpu, rss, count = 0.0, 0, 0
    for proc in _group_members(pgid):
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
                count += 1
        except psutil.Error:
            continue
    return Stats(cpu_seconds=cpu, memory_bytes=rss, pids=count)
