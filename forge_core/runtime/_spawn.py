"""Starting one child process as the leader of a new process group, with only stdin, stdout
and stderr open.

The group is what a timeout signals. When Forge has a controlling terminal, the child also
leads a new session, so it cannot read, or be stopped by, that terminal: opening
``/dev/tty`` fails at once (``ENXIO``) instead of stopping it with ``SIGTTIN`` until its
timeout. With no terminal (the daemon, a service, CI, or a ``forge`` command that gave its
terminal up: :func:`release_terminal`) there is nothing to cut it from, and the group alone
is the same isolation. It is also much cheaper: ``setsid`` gives each child a scheduler
autogroup of its own, which the kernel creates, moves the child into and frees. A fan-out of
``true`` tasks ran 1.51x the bare loop with a session per child and 1.46x without, in the
root cgroup; in any other cpu cgroup (as a systemd service with CPU accounting runs) 2.15x
against 1.46x (benchmarks/README.md, fourteenth session).

A child that needs no rlimits and runs in Forge's own working directory starts with
``posix_spawn`` (a ``vfork`` and ``exec``, no Python code, no thread); the others go through
:class:`subprocess.Popen`, whose ``preexec_fn`` sets the rlimits (a real ``fork``).

Descriptors a ``posix_spawn`` child must not inherit: on Python 3.13+ the child closes every
one above 2 itself (``POSIX_SPAWN_CLOSEFROM``). Before that, Forge lists its inheritable
descriptors and has the child close them — about twenty system calls per start — unless the
process declared its descriptors its own (:func:`own_descriptors`, as the ``forge`` command
and daemon do): then one ``close_range`` marks them all close-on-exec before each start.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["ENVIRON", "Limit", "direct", "own_descriptors", "own_process", "release_terminal",
           "rlimits_for", "spawn", "spawn_direct"]

Limit = tuple[int, int, int]
"""(resource, soft, hard) for :func:`resource.setrlimit`."""

_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name))
"""Signals Python ignores, set back to their default in a child (as ``Popen`` does)."""

ENVIRON: Mapping[bytes, bytes] = getattr(os.environ, "_data", None) or os.environb
"""Forge's own environment as bytes (CPython's dict behind ``os.environ``, which putenv
keeps current; ``os.environb`` elsewhere)."""

_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"

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
    """Start ``argv`` as the leader of a new process group (and session, see the module),
    with every other fd of Forge closed.

    Raises what :class:`subprocess.Popen` raises (``FileNotFoundError`` above all); the caller
    maps it.
    """
    session = own_terminal()
    return subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        close_fds=True,
        start_new_session=session,
        process_group=None if session else 0,
        preexec_fn=_child_setup(limits) if limits else None,  # only for rlimits: it costs a fork
    )


def direct(cwd: str | None, limits: Sequence[Limit]) -> bool:
    """Whether :func:`spawn_direct` can start a child in ``cwd`` with ``limits``."""
    return hasattr(os, "posix_spawn") and not limits and (cwd is None or cwd == os.getcwd())


def spawn_direct(
    argv: Sequence[str], *, env: Mapping[bytes, bytes], stdin: int, stdout: int, stderr: int,
) -> int:
    """Start ``argv`` (looked up in the ``PATH`` of ``env``, as ``Popen`` does) as the leader of
    a new process group (and session, see the module), with every other fd of Forge closed;
    returns its pid.

    Raises ``OSError`` (``FileNotFoundError`` for a missing command); the caller maps it.
    """
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2)]
    if _CLOSEFROM is not None:
        actions.append((_CLOSEFROM, 3))
    elif _cloexec is None or _cloexec(3, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC) != 0:
        actions[:0] = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()
                       if fd not in (stdin, stdout, stderr)]
    group: dict[str, Any] = {"setsid": True} if own_terminal() else {"setpgroup": 0}
    if b"/" not in os.fsencode(argv[0]) and env.get(b"PATH") == ENVIRON.get(b"PATH"):
        # the child looks it up in PATH, which is Forge's own
        return os.posix_spawnp(argv[0], list(argv), env, file_actions=actions,
                               setsigdef=_DEFAULT_SIGNALS, **group)
    return os.posix_spawn(_executable(argv[0], env), list(argv), env, file_actions=actions,
                          setsigdef=_DEFAULT_SIGNALS, **group)


@functools.cache
def own_terminal() -> bool:
    """Whether this process has a controlling terminal, which its children must be cut from
    by a session of their own. Asked once (and again after :func:`release_terminal`): a
    process gains one only as a session leader opening a terminal, which Forge never does."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:  # ENXIO: none; a /dev without it: none a child could open either
        return False
    os.close(fd)
    return True


def release_terminal() -> bool:
    """Give up this process's controlling terminal (``TIOCNOTTY``), so the children it starts
    have none to reach without a session each (see the module). Returns whether it gave one
    up.

    Only for a process that is Forge's own and asks its terminal nothing (the ``forge``
    command running workflows, the daemon). Its process group stays the terminal's
    foreground group, so Ctrl-C, Ctrl-Z, a window resize and a hang-up still reach it, and it
    still writes to the terminal through its standard streams. A session leader keeps its
    terminal: giving it up would hang up its whole session."""
    try:
        import fcntl
        import termios
    except ImportError:  # not POSIX: no controlling terminal to give up
        return False
    notty = getattr(termios, "TIOCNOTTY", None)
    if notty is None or os.getsid(0) == os.getpid():
        return False
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:  # none to give up
        return False
    try:
        fcntl.ioctl(fd, notty)
    except OSError:
        return False
    finally:
        os.close(fd)
    own_terminal.cache_clear()
    return True


def own_process() -> None:
    """Declare this process Forge's own (the ``forge`` command running workflows, the
    daemon): neither its descriptors (:func:`own_descriptors`) nor its terminal
    (:func:`release_terminal`) are for the children it starts."""
    own_descriptors()
    release_terminal()


_CLOSEFROM: int | None = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)
"""Python 3.13+ with glibc 2.34+: the child closes what it must not inherit."""
_CLOSE_RANGE_CLOEXEC = 4
_cloexec: Callable[[int, int, int], int] | None = None
"""``close_range`` once the process declared its descriptors its own."""


def own_descriptors() -> bool:
    """Declare that no descriptor of this process is meant for the children Forge starts:
    before each start, one ``close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`` (Linux 5.11+) marks
    them all close-on-exec, as Python opens its own, instead of a listing of
    ``/proc/self/fd``. Only for a process that is Forge's own (the ``forge`` command, the
    daemon): a library caller's deliberately inheritable descriptor would lose that flag.
    Returns whether it took effect (Linux with glibc, where Python lacks
    ``POSIX_SPAWN_CLOSEFROM``)."""
    global _cloexec
    if _CLOSEFROM is not None or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        close_range = ctypes.CDLL(None, use_errno=True).close_range  # glibc 2.34+
    except (OSError, AttributeError):
        return False
    close_range.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
    close_range.restype = ctypes.c_int
    if close_range(3, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC) != 0:  # a kernel before 5.11
        return False
    _cloexec = close_range
    return True


def _inheritable_fds() -> list[int]:
    """Descriptors above 2 a child would inherit (Python opens none, but a caller may have)."""
    found = []
    for name in os.listdir(_FD_DIR):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the listing's own descriptor, closed by now
                pass
    return found


def _executable(command: str, env: Mapping[bytes, bytes]) -> bytes:
    """``command`` itself if it names a path, else its first executable match in ``PATH``."""
    name = os.fsencode(command)
    if b"/" in name:
        return name
    path = env.get(b"PATH", os.fsencode(os.defpath))
    for folder in path.split(b":"):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(2, "No such file or directory", command)
