"""Starting one child process: its own session, rlimits, and death with its parent.

The fast path is a plain ``vfork``+``exec`` (no Python code in the child); a child that must
die with Forge is exec'd through util-linux ``setpriv --pdeathsig KILL`` when present. Only a
child that needs rlimits (or a host without ``setpriv``) pays for a ``preexec_fn`` (a real
``fork``). ``PR_SET_PDEATHSIG`` fires when the *thread* that spawned the child exits, so
spawning happens in the calling (event-loop) thread, never in a worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = ["Limit", "rlimits_for", "spawn", "which"]

_PR_SET_PDEATHSIG = 1

Limit = tuple[int, int, int]
"""(resource, soft, hard) for :func:`resource.setrlimit`."""


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    func: Callable[..., int] = libc.prctl
    return func


_PRCTL = _load_prctl()
_SETPRIV = shutil.which("setpriv") if _PRCTL is not None else None


def _clamp(res: int, soft: int, hard: int) -> Limit:
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
    if memory is not None:
        limits.append(_clamp(resource.RLIMIT_AS, memory, memory))
    if cpu_time is not None:
        soft = max(1, math.ceil(cpu_time))
        limits.append(_clamp(resource.RLIMIT_CPU, soft, soft + 1))
    return limits


def which(name: str, env: Mapping[str, str], cwd: str | None) -> str | None:
    """Where ``exec`` would find ``name`` for a child with ``env`` and ``cwd``, or ``None``."""
    if os.sep in name:
        path = name if os.path.isabs(name) or cwd is None else os.path.join(cwd, name)
        return name if os.access(path, os.X_OK) and not os.path.isdir(path) else None
    return shutil.which(name, path=env.get("PATH", os.defpath))


def _child_setup(limits: Sequence[Limit], pdeathsig: bool, parent: int) -> Callable[[], None]:
    prctl = _PRCTL

    def setup() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))
        if pdeathsig and prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:  # Forge died before the prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    stdin: int,
    stdout: int,
    stderr: int,
    limits: Sequence[Limit],
    die_with_parent: bool,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session, with every other fd of Forge closed.

    Raises what :class:`subprocess.Popen` raises (``FileNotFoundError`` above all); the caller
    maps it.
    """
    preexec: Callable[[], None] | None = None
    command = list(argv)
    if limits or (die_with_parent and _PRCTL is not None and _SETPRIV is None):
        preexec = _child_setup(limits, die_with_parent, os.getpid())
    elif die_with_parent and _SETPRIV is not None:
        command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
    return subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        close_fds=True,
        start_new_session=True,
        preexec_fn=preexec,  # only when rlimits must be set in the child
    )
