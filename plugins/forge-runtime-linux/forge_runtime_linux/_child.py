"""What runs after the fork: the supervisor (outside the PID namespace, relays published
ports, records the exit) and the container's PID 1 (mounts, pivot_root, drops privileges,
execs the command). PID 1 uses only already-imported modules (after pivot_root the host's
Python library is gone); the supervisor, which never pivots, loads the port relay when needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from . import _seccomp, _sys
from ._cgroups import Cgroup

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    import socket
    from typing import Any

#: Docker's default capability set, by number
KEEP_CAPS = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def send(fd: int, **msg: Any) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(msg) + "\n").encode())


def supervise(
    plan: dict[str, Any], cgroup: Cgroup, sync_w: int, go_r: int, listeners: list[tuple[socket.socket, int]]
) -> None:
    """Body of the supervisor process; never returns."""
    code = 0
    try:
        _close_except({0, 1, 2, sync_w, go_r, *plan["stdio"], *(lst.fileno() for lst, _ in listeners)})
        if plan["detach"]:
            os.setsid()
            if os.fork():
                os._exit(0)
        else:
            _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != plan["parent"]:
                os._exit(1)
        _sys.set_name("forge-sup")
        _namespaces(plan, sync_w, go_r)
        if plan["network"] == "private":
            _sys.loopback_up()
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        pid1 = os.fork()
        if pid1 == 0:
            os.close(st_r)
            init(plan, cgroup, sync_w, st_w)
        os.close(st_w)
        os.close(go_r)
        for fd in set(plan["stdio"]) - {0, 1, 2}:
            os.close(fd)
        if plan["detach"]:  # hold no terminal: the CLI that started us is gone
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            os.close(null)
        send(sync_w, pid=pid1, sup=os.getpid())
        os.close(sync_w)
        status = _wait(pid1, listeners)
        reported = os.read(st_r, 64)  # the init shim's report of the command's own status
        code = _record(plan, cgroup, int(reported) if reported else status)
    except BaseException as exc:  # report and die: nothing may return into the parent's code
        send(sync_w, error=f"container setup failed: {exc}", kind="backend")
        code = 1
    os._exit(code)


def _namespaces(plan: dict[str, Any], sync_w: int, go_r: int) -> None:
    """Unshare the container's namespaces and mount its root filesystem.

    As root the overlay is mounted by host root in a private mount namespace *before* the user
    namespace exists (so copy-up runs with host credentials and nothing needs ``userxattr``);
    PID 1 later unshares a mount namespace of its own, owned by the user namespace, and
    pivots into it. Rootless, the overlay can only be mounted inside the user namespace.
    """
    flags = _sys.CLONE_NEWUTS | _sys.CLONE_NEWIPC | _sys.CLONE_NEWPID
    if plan["network"] != "host":
        flags |= _sys.CLONE_NEWNET
    if plan["rootless"]:
        _sys.unshare(flags | _sys.CLONE_NEWUSER | _sys.CLONE_NEWNS)
        _await_maps(sync_w, go_r)
        _root_mount(plan)
        return
    _sys.unshare(_sys.CLONE_NEWNS)
    _root_mount(plan)
    if plan["userns"]:
        _sys.unshare(flags | _sys.CLONE_NEWUSER)
        _await_maps(sync_w, go_r)
    else:
        _sys.unshare(flags)


def _await_maps(sync_w: int, go_r: int) -> None:
    """Ask the parent (outside the user namespace) to write our id maps; wait until it has."""
    send(sync_w, map=os.getpid())
    if os.read(go_r, 1) != b"1":
        raise OSError("the id maps of the user namespace could not be written")


def _root_mount(plan: dict[str, Any]) -> None:
    """The container's copy-on-write root at ``merged``, in this process's mount namespace."""
    _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
    root = plan["merged"]
    if plan["overlay"]:
        opts = f"lowerdir={plan['lower']},upperdir={plan['upper']},workdir={plan['work']}"
        if plan["rootless"]:
            opts += ",userxattr"
        _sys.mount("overlay", root, "overlay", 0, opts)
    else:
        _sys.mount(plan["upper"], root, None, _sys.MS_BIND | _sys.MS_REC)


def _close_except(keep: set[int]) -> None:
    """Close every inherited descriptor but ``keep``: nothing of Forge leaks into a container."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _wait(pid1: int, listeners: list[tuple[socket.socket, int]]) -> int:
    """Wait for PID 1, relaying published ports meanwhile (only then is the relay loaded)."""
    if not listeners:
        return os.waitpid(pid1, 0)[1]
    from ._relay import wait_relaying

    return wait_relaying(pid1, listeners)


def _record(plan: dict[str, Any], cgroup: Cgroup, status: int) -> int:
    result = {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "oom_killed": cgroup.oom_killed(),
    }
    cgroup.kill()
    path = os.path.join(plan["dir"], "exit.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(result, fh)
    os.replace(path + ".tmp", path)
    return 0


# --- PID 1 of the container ------------------------------------------------------------


def init(plan: dict[str, Any], cgroup: Cgroup, sync_w: int, st_w: int) -> None:
    """Body of the container's first process; execs the command or dies reporting why."""
    try:
        _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
        _sys.set_name("forge-init")
        cgroup.join()  # while still host root (unmapped): the cgroup files are host root's
        _sys.unshare(_sys.CLONE_NEWNS)
        _open_host_paths(plan)
        if plan["userns"]:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        with contextlib.suppress(OSError):
            _sys.unshare(_sys.CLONE_NEWCGROUP)
        _stdio(plan)
        _filesystem(plan)
        _sys.sethostname(plan["hostname"])
        _harden()
        if plan["init"]:
            _reaper(plan, sync_w, st_w)
        _become_user(plan)
        _exec(plan, sync_w)
    except BaseException as exc:
        kind = "notfound" if isinstance(exc, FileNotFoundError) else "backend"
        send(sync_w, error=f"container setup failed: {exc}", kind=kind)
    os._exit(127)


def _open_host_paths(plan: dict[str, Any]) -> None:
    """Hold the root and volume sources open while we can still reach them: once container
    root is an unprivileged host uid it may not traverse, say, ``/root`` or a 0700 tmp dir."""
    flags = os.O_PATH | os.O_CLOEXEC
    _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
    # the overlay came from a more privileged mount namespace, so it is locked here and
    # pivot_root refuses it; a bind of it onto itself made here is not
    _sys.mount(plan["merged"], plan["merged"], None, _sys.MS_BIND | _sys.MS_REC)
    plan["root_fd"] = os.open(plan["merged"], flags | os.O_DIRECTORY)
    plan["volume_fds"] = [os.open(v["source"], flags) for v in plan["volumes"]]


def _stdio(plan: dict[str, Any]) -> None:
    for target, fd in enumerate(plan["stdio"]):
        os.dup2(fd, target)


def _mkdirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _filesystem(plan: dict[str, Any]) -> None:
    os.fchdir(plan["root_fd"])
    os.mkdir(".forge-oldroot", 0o700)
    _sys.pivot_root(".", ".forge-oldroot")
    os.chdir("/")
    _mounts_inside(plan)
    _etc_files(plan)
    _sys.umount2("/.forge-oldroot", _sys.MNT_DETACH)
    os.rmdir("/.forge-oldroot")


def _mounts_inside(plan: dict[str, Any]) -> None:
    nosuid = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
    _mkdirs("/proc")
    _sys.mount("proc", "/proc", "proc", nosuid)
    _mkdirs("/sys")
    try:
        _sys.mount("sysfs", "/sys", "sysfs", nosuid | _sys.MS_RDONLY)
    except OSError:
        _sys.mount("/.forge-oldroot/sys", "/sys", None, _sys.MS_BIND | _sys.MS_REC)
        _sys.mount(None, "/sys", None, _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_RDONLY | nosuid)
    _mkdirs("/dev")
    _sys.mount("tmpfs", "/dev", "tmpfs", _sys.MS_NOSUID, "mode=755,size=65536k")
    for dev in _DEVICES:
        open(f"/dev/{dev}", "w").close()
        _sys.mount(f"/.forge-oldroot/dev/{dev}", f"/dev/{dev}", None, _sys.MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(target, f"/dev/{name}")
    for sub, fstype, opts in (
        ("pts", "devpts", "newinstance,ptmxmode=0666,mode=620"),
        ("shm", "tmpfs", "mode=1777"),
    ):
        _mkdirs(f"/dev/{sub}")
        _sys.mount(fstype, f"/dev/{sub}", fstype, _sys.MS_NOSUID | _sys.MS_NOEXEC, opts)
    for vol, fd in zip(plan["volumes"], plan["volume_fds"], strict=True):
        _mkdirs(vol["target"])
        _sys.mount(f"/proc/self/fd/{fd}", vol["target"], None, _sys.MS_BIND | _sys.MS_REC)
        if vol["read_only"]:
            _read_only(vol["target"])
    for target in plan["tmpfs"]:
        _mkdirs(target)
        _sys.mount("tmpfs", target, "tmpfs", _sys.MS_NOSUID | _sys.MS_NODEV, "mode=1777")


def _read_only(target: str) -> None:
    """Remount a bind mount read-only, keeping the flags a user namespace may not clear."""
    kept = os.statvfs(target).f_flag & (_sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC)
    _sys.mount(None, target, None, _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_RDONLY | kept)


def _etc_files(plan: dict[str, Any]) -> None:
    _mkdirs("/etc")
    files = {
        "/etc/hostname": plan["hostname"] + "\n",
        "/etc/hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{plan['hostname']}\n",
        "/etc/resolv.conf": plan["resolv"],
    }
    for path, text in files.items():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o644)


def _harden() -> None:
    for cap in range(_sys.last_cap() + 1):
        if cap not in KEEP_CAPS:
            _sys.prctl(_sys.PR_CAPBSET_DROP, cap)
    with contextlib.suppress(OSError):
        _sys.prctl(_sys.PR_CAP_AMBIENT, _sys.PR_CAP_AMBIENT_CLEAR_ALL)
    _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1)
    _seccomp.install()


def _lookup_user(spec: str | None) -> tuple[int, int, str]:
    if not spec:
        return 0, 0, "/root"
    name, _, group = spec.partition(":")
    uid, gid, home = None, None, "/"
    for fields in _table("/etc/passwd", 6):
        if name in (fields[0], fields[2]):
            uid, gid, home = int(fields[2]), int(fields[3]), fields[5]
    if uid is None:
        if not name.isdigit():
            raise FileNotFoundError(f"no user {name!r} in the image's /etc/passwd")
        uid, gid = int(name), int(name)
    if group:
        gid = int(group) if group.isdigit() else _group_id(group)
    return uid, int(gid or 0), home


def _table(path: str, width: int) -> list[list[str]]:
    """The colon-separated lines of ``/etc/passwd``-style ``path`` with at least ``width`` fields."""
    try:
        with open(path) as fh:
            rows = [line.split(":") for line in fh.read().splitlines()]
    except OSError:
        return []
    return [row for row in rows if len(row) >= width]


def _group_id(name: str) -> int:
    for fields in _table("/etc/group", 3):
        if fields[0] == name:
            return int(fields[2])
    raise FileNotFoundError(f"no group {name!r} in the image's /etc/group")


def _become_user(plan: dict[str, Any]) -> None:
    uid, gid, home = _lookup_user(plan["user"])
    plan["env"].setdefault("HOME", home)
    try:
        os.setgroups([gid])
    except PermissionError:
        if not plan["rootless"]:  # a rootless single-id map denies setgroups
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _exec(plan: dict[str, Any], sync_w: int) -> None:
    path, env = _command(plan, {sync_w})
    os.execve(path, plan["command"], env)  # noqa: S606 -- the user's argv, run directly: never through a shell


def _command(plan: dict[str, Any], keep: set[int]) -> tuple[str, dict[str, str]]:
    """Enter the working directory, close every descriptor but stdio and ``keep`` (close-on-exec
    pipes), and resolve the executable: what is left to do before the exec."""
    env = {"PATH": _PATH, "HOSTNAME": plan["hostname"], **plan["env"]}
    workdir = plan["workdir"] or "/"
    with contextlib.suppress(OSError):
        _mkdirs(workdir)
    os.chdir(workdir)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        os.set_inheritable(fd, False)
        low = fd + 1
    os.closerange(low, 65536)
    argv = plan["command"]
    path = argv[0] if "/" in argv[0] else _which(argv[0], env["PATH"])
    if path is None:
        raise FileNotFoundError(f"executable {argv[0]!r} not found in the image")
    return path, env


def _which(name: str, search: str) -> str | None:
    for folder in search.split(":"):
        path = os.path.join(folder or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _reaper(plan: dict[str, Any], sync_w: int, st_w: int) -> None:
    """Stay PID 1: spawn the command (``posix_spawn``: a vfork, not a copy of this Python
    process), forward signals to it, reap every zombie."""
    holder = [0]

    def forward(signum: int, _frame: object) -> None:
        if holder[0]:
            with contextlib.suppress(ProcessLookupError):  # already reaped
                os.kill(holder[0], signum)

    # handlers first: a signal sent right after start() returns must reach the command
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    for sig in forwarded:
        signal.signal(sig, forward)
    _become_user(plan)  # PID 1 runs as the command's user too: it only reaps and forwards
    path, env = _command(plan, {sync_w, st_w})
    child = holder[0] = os.posix_spawn(path, plan["command"], env, setsigdef=forwarded)
    os.close(sync_w)
    while True:
        pid, status = os.wait()
        if pid == child:
            os.write(st_w, str(status).encode())
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
