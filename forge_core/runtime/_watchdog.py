"""Death with Forge: one watchdog process per Forge process SIGKILLs the process group of
every non-detached child still running when Forge dies, grandchildren included.

Forge writes each group id into a slot of a file both processes map (no system call and no
wake-up of the watchdog per child); the watchdog sleeps on a pipe that only Forge holds, and
when that pipe closes — Forge exited or was SIGKILLed — it reads the slots and kills. A
watchdog that was itself killed is replaced at the next start, and its replacement takes over
the groups it guarded.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import sys
import tempfile
import threading
from typing import Any

__all__ = ["Watchdog", "protect", "watchdog"]

log = logging.getLogger(__name__)

_CODE = """
import os, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
while os.read(0, 4096):
    pass
size = os.fstat(3).st_size
for pgid in memoryview(os.pread(3, size, 0)).cast("i"):
    if pgid > 0:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
"""

_SLOTS = 4096
"""Group-id slots to start with; the file doubles when they run out."""


def _slot_file() -> int:
    """A file only Forge and its watchdog see (a memfd on Linux, an unlinked file elsewhere),
    on a descriptor above 3 (the watchdog gets it as fd 3)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("forge-watchdog", os.MFD_CLOEXEC)
    else:
        fd, path = tempfile.mkstemp(prefix="forge-watchdog-")
        os.unlink(path)
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        os.close(fd)


class Watchdog:
    """The process that SIGKILLs this Forge process's non-detached children when it dies."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.broken = False
        self._lock = threading.Lock()
        self._slots: dict[int, int] = {}
        self._free: list[int] = []
        self._used = 0
        self._successor: Watchdog | None = None
        """The watchdog that took over this one's groups when it died (see :meth:`adopt`)."""
        self._file = _slot_file()
        try:
            self._map(_SLOTS)
            read_end, self._pipe = os.pipe()
            try:
                self.pid = os.posix_spawn(
                    sys.executable, [sys.executable, "-S", "-c", _CODE], dict(os.environ),
                    file_actions=_fds(read_end, self._file), setsid=True)
            finally:
                os.close(read_end)
        except BaseException:
            os.close(self._file)
            raise

    def _map(self, slots: int) -> None:
        os.ftruncate(self._file, slots * 4)
        self._mmap = mmap.mmap(self._file, slots * 4)
        self._view = memoryview(self._mmap).cast("i")

    def _grow(self) -> None:
        self._view.release()
        self._mmap.close()
        self._map(2 * (os.fstat(self._file).st_size // 4))

    def register(self, pgid: int) -> bool:
        """Note ``pgid`` for killing; ``False`` if the watchdog is gone (it was killed)."""
        if not self._alive():
            return False
        with self._lock:
            if self._free:
                slot = self._free.pop()
            else:
                if self._used == len(self._view):
                    self._grow()
                slot, self._used = self._used, self._used + 1
            self._view[slot] = pgid
            self._slots[pgid] = slot
        return True

    def unregister(self, pgid: int) -> None:
        with self._lock:
            slot = self._slots.pop(pgid, None)
            if slot is not None:
                self._view[slot] = 0
                self._free.append(slot)
            successor = self._successor
        if successor is not None:  # it guards this group now: it must forget it too
            successor.unregister(pgid)

    def adopt(self, dead: Watchdog) -> None:
        """Guard the groups ``dead`` was guarding: their processes still run, and would
        outlive Forge otherwise. Registered under ``dead``'s lock, so a group reaped
        meanwhile is either not taken over or unregistered here too."""
        with dead._lock:
            for pgid in dead._slots:
                self.register(pgid)
            dead._successor = self

    def _alive(self) -> bool:
        if not self.broken:
            try:
                dead = os.waitpid(self.pid, os.WNOHANG)[0] != 0
            except ChildProcessError:  # reaped by someone else: it exited
                dead = True
            if dead:
                log.warning("the child watchdog is gone; starting a new one")
                self.broken = True
        return not self.broken


def _fds(read_end: int, slots: int) -> list[tuple[Any, ...]]:
    """stdin from the pipe, fd 3 the slot file, stdout/stderr to /dev/null, no other
    inheritable fd of Forge (it would hold a caller's pipe open for as long as the watchdog
    lives)."""
    actions: list[tuple[Any, ...]] = []
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(fd_dir):
        fd = int(name)
        with contextlib.suppress(OSError):
            if fd > 3 and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
    actions += [
        (os.POSIX_SPAWN_DUP2, read_end, 0),
        (os.POSIX_SPAWN_DUP2, slots, 3),
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
            dead = _watchdog if _watchdog is not None and _watchdog.owner == os.getpid() else None
            try:
                _watchdog = Watchdog()
            except OSError as exc:
                log.warning("cannot start the child watchdog (children may outlive Forge): %s",
                            exc)
                return None
            if dead is not None:  # killed: its children still need guarding
                _watchdog.adopt(dead)
        return _watchdog


def protect(pgid: int) -> Watchdog | None:
    """Register ``pgid`` with the watchdog (a fresh one if the last one died)."""
    for _ in range(2):
        current = watchdog()
        if current is None or current.register(pgid):
            return current
    return None
