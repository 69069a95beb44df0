"""``exec``: run one more command inside a running container by joining its cgroup and
namespaces (setns), then forking so the command lands in its PID namespace."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from forge_core.exceptions import NotFound, Unsupported

from . import _child, _sys
from ._cgroups import Cgroup

_NS = (
    ("ipc", _sys.CLONE_NEWIPC),
    ("uts", _sys.CLONE_NEWUTS),
    ("net", _sys.CLONE_NEWNET),
    ("pid", _sys.CLONE_NEWPID),
    ("cgroup", _sys.CLONE_NEWCGROUP),
    ("mnt", _sys.CLONE_NEWNS),
)


def exec_in(
    data: dict[str, Any],
    cgroup: Cgroup,
    argv: list[str],
    user: str | None,
    workdir: str | None,
    env: dict[str, str],
) -> int:
    """Run ``argv`` in the container with this process's stdio; returns its exit code."""
    pid = data.get("pid")
    if not pid or not os.path.exists(f"/proc/{pid}"):
        raise Unsupported(f"container {data['id']} is not running")
    spaces = ((("user", _sys.CLONE_NEWUSER),) if data.get("userns") else ()) + _NS  # the user namespace first
    fds = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag) for name, flag in spaces]
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        code = 127
        with contextlib.suppress(BaseException):
            os.close(sync_r)
            cgroup.join()
            for fd, flag in fds:
                _sys.setns(fd, flag)
                if flag == _sys.CLONE_NEWUSER:
                    os.setresgid(0, 0, 0)
                    os.setresuid(0, 0, 0)
            inner = os.fork()
            if inner:
                code = os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1])
                code = code if code >= 0 else 128 - code
            else:
                plan = {
                    **data,
                    "command": argv,
                    "env": {**data.get("env", {}), **env},
                    "user": user or data.get("user"),
                    "workdir": workdir or data.get("workdir"),
                }
                try:
                    _child._harden()
                    _child._become_user(plan)
                    _child._exec(plan, sync_w)
                except BaseException as exc:
                    _child.send(sync_w, error=str(exc))
                os._exit(127)
        os._exit(code)
    for fd, _ in fds:
        os.close(fd)
    os.close(sync_w)
    report = os.read(sync_r, 65536)
    os.close(sync_r)
    status = os.waitpid(child, 0)[1]
    if report:
        raise NotFound(report.decode().strip().split('"error": ', 1)[-1].strip('"}'))
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
