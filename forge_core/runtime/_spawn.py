"""Starting one child process: its own session, rlimits, and death with Forge.

Children start with a plain ``vfork``+``exec`` (no Python code runs in the child) unless they
need rlimits, which a ``preexec_fn`` sets (a real ``fork``). Death with Forge is handled by
one watchdog process per Forge process: Forge tells it the process group of every
non-detached child over a pipe, and when that pipe closes — Forge exited or was SIGKILLed —
the watchdog SIGKILLs every group still registered, grandchildren included.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Limit", "Watchdog", "protect", "rlimits_for", "spawn", "watchdog"]

log = logging.getLogger(__name__)

Limit = tuple[int, int, int]
"""(resource, soft, hard) for :func:`resource.setrlimit`."""

_WATCHDOG_CODE = """
import os, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups, rest = set(), b""
while True:
    data = os.read(0, 65536)
    if not data:
        break
    *lines, rest = (rest + data).split(b"\\n")
    for line in lines:
        (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Watchdog:
    """The process that SIGKILLs this Forge process's non-detached children when it dies."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        read_end, self._fd = os.pipe()
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-S", "-c", _WATCHDOG_CODE],
                dict(os.environ),
                file_actions=_watchdog_fds(read_end),
                setsid=True,
            )
        finally:
            os.close(read_end)

        self.broken = False

    def register(self, pgid: int) -> bool:
        return self._send(b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        self._send(b"-%d\n" % pgid)

    def _send(self, line: bytes) -> bool:
        try:
            os.write(self._fd, line)
        except OSError as exc:  # someone killed it: a new one takes over
            if not self.broken:
                log.warning("the child watchdog is gone (%s); starting a new one", exc)
            self.broken = True
        return not self.broken


def protect(pgid: int) -> Watchdog | None:
    """Register ``pgid`` with the watchdog (a fresh one if the last one died)."""
    for _ in range(2):
        current = watchdog()
        if current is None or current.register(pgid):
            return current
    return None


def _watchdog_fds(read_end: int) -> list[tuple[Any, ...]]:
    """stdin from the pipe, stdout/stderr to /dev/null, no other inheritable fd of Forge (it
    would hold a caller's pipe open for as long as the watchdog lives)."""
    actions: list[tuple[Any, ...]] = []
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(fd_dir):
        fd = int(name)
        with contextlib.suppress(OSError):
            if fd > 2 and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
    actions += [
        (os.POSIX_SPAWN_DUP2, read_end, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return actions


_watchdog: Watchdog | None = None
_watchdog_lock = threading.Lock()  # children start from several worker threads


def watchdog() -> Watchdog | None:
    """This process's watchdog, started on first use (``None`` where it cannot run)."""
    global _watchdog
    current = _watchdog
    if current is not None and not current.broken and current.owner == os.getpid():
        return current
    with _watchdog_lock:
        if _watchdog is None or _watchdog.broken or _watchdog.owner != os.getpid():
            if not hasattr(os, "posix_spawn") or not sys.executable:
                return None
            try:
                _watchdog = Watchdog()
            except OSError as exc:
                log.warning("cannot start the child watchdog (children may outlive Forge): %s",
                            exc)
                return None
        return _watchdog


def _clamp(res: int, soft: int, hard: int) -> Limit:
    import resource

    _cur_soft, cur_hard = resource.getrlimit(res)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    return (res, soft, hard)


def rlimits_for(memory: int | None, cpu_time: float | None) -> list[Limit]:
    """The rlimits that enforce an address-space cap and a CPU-time budget.

    CPU time gets a soft limit (SIGXCPU, catchable) and a hard limit one second later (SIGKILL).
    """
    limits: list[Limit] = []
    if memory is None and cpu_time is None:
        return limits
    import resource  # POSIX only; the module must still import elsewhere

    if memory is not None:
        limits.append(_clamp(resource.RLIMIT_AS, memory, memory))
    if cpu_time is not None:
        soft = max(1, math.ceil(cpu_time))
        limits.append(_clamp(resource.RLIMIT_CPU, soft, soft + 1))
    return limits


def _child_setup(limits: Sequence[Limit]) -> Callable[[], None]:
    import resource

    def setup() -> None:  # runs in the child between fork and exec
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))

    return setup


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | Mapping[bytes, bytes],
    cwd: str | None,
    stdin: int,
    stdout: int,
    stderr: int,
    limits: Sequence[Limit],
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session, with every other fd of Forge closed.

    Raises what :class:`subprocess.Popen` raises (``FileNotFoundError`` above all); the caller
    maps it.
    """
    return subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        close_fds=True,
        start_new_session=True,
        preexec_fn=_child_setup(limits) if limits else None,  # only for rlimits: it costs a fork
    )
