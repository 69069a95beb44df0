"""The container lifecycle on plain dicts and paths: journal, exit status, signal, remove, gc.

Shared by the ``linux`` Runtime and the fast CLI path, so it imports neither anyio, attrs nor
``forge_core.abc``. Each container has a journal directory ``<home>/containers/<id>/`` written
before anything it names (cgroup, overlay dirs); mounts and network namespaces live only as long
as the container's processes, so the journal plus the cgroup directories are everything
:meth:`Engine.gc` has to reconcile. Paths are strings: :mod:`pathlib` and :mod:`shutil` would
add ~5 ms to every fast-path start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import time

from forge_core.exceptions import NotFound

from . import _cgroups

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Engine", "alive", "start_time"]

_UNJOURNALED_GRACE = 5.0
"""Seconds after which a container directory with no readable journal counts as abandoned."""


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (tells a live process from a recycled pid)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def alive(pid: int | None, start: str | None) -> bool:
    return bool(pid) and bool(start) and start_time(int(pid or 0)) == start


def namespace_pids(pid1: int) -> list[int]:
    """Processes in the PID namespace whose first process is ``pid1``."""
    try:
        target = os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{name}/ns/pid") == target:
                    found.append(int(name))
    return found


def home_tag(home: str | os.PathLike[str]) -> str:
    """A short stable name for ``home`` (its cgroups are ``forge-<tag>/<id>``)."""
    import hashlib

    return hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:8]


class Engine:
    """Containers under one ``$FORGE_HOME``: the state both front ends (Runtime, CLI) drive.
    ``home`` and ``dir`` (its ``containers`` directory) are strings."""

    def __init__(self, home: str | os.PathLike[str], *, userns: bool = True, init: bool = True) -> None:
        self.home = os.fspath(home)
        self.dir = os.path.join(self.home, "containers")
        self.userns = userns
        self.init = init
        self.rootless = os.geteuid() != 0
        self.children: set[int] = set()
        self._tag = ""

    @property
    def tag(self) -> str:
        """``forge-<hash of home>``: the parent of this home's cgroups."""
        if not self._tag:
            self._tag = "forge-" + home_tag(self.home)
        return self._tag

    # --- journal ---------------------------------------------------------------------------

    def state(self, cid: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self.dir, cid, "state.json")) as fh:
                data: dict[str, Any] = json.load(fh)
        except (OSError, ValueError):
            raise NotFound(f"no container {cid!r}; see: forge container list") from None
        with contextlib.suppress(OSError, ValueError), open(os.path.join(self.dir, cid, "exit.json")) as fh:
            data["exit"] = json.load(fh)
        return data

    def write_state(self, cid: str, data: dict[str, Any]) -> None:
        """Replace the journal atomically (rename; no fsync: a container does not outlive a
        host crash, and gc() treats a torn journal as abandoned)."""
        path = os.path.join(self.dir, cid, "state.json")
        tmp = os.path.join(self.dir, cid, "state.tmp")
        with open(tmp, "w") as fh:
            json.dump({k: v for k, v in data.items() if k != "exit"}, fh)
        os.replace(tmp, path)

    def list_states(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(_listdir(self.dir)):
            if not name.startswith("."):
                with contextlib.suppress(NotFound):
                    out.append(self.state(name))
        return out

    def resolve(self, ref: str) -> str:
        """A container id from a name, an id or a unique id prefix."""
        states = self.list_states()
        for data in states:
            if ref in (data["id"], data.get("name")):
                return str(data["id"])
        found = [d["id"] for d in states if d["id"].startswith(ref)]
        if len(found) == 1:
            return str(found[0])
        raise NotFound(f"no container {ref!r}; see: forge container list")

    def cgroup(self, data: dict[str, Any]) -> _cgroups.Cgroup:
        return _cgroups.Cgroup(data.get("cgroup"))

    def pids(self, data: dict[str, Any]) -> list[int]:
        """Every process of a running container: its cgroup's, else its PID namespace's."""
        cgroup = self.cgroup(data)
        if cgroup.dirs():
            return cgroup.pids()
        if not alive(data.get("pid"), data.get("pid_start")):
            return []
        return namespace_pids(int(data["pid"]))

    def proc_stats(self, data: dict[str, Any]) -> tuple[float, int, int]:
        """CPU seconds, resident bytes and count of a container's processes, from ``/proc``
        (for containers without a cgroup)."""
        cpu, pages, pids = 0, 0, self.pids(data)
        for pid in pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                cpu += int(fields[11]) + int(fields[12])
                with open(f"/proc/{pid}/statm") as fh:
                    pages += int(fh.read().split()[1])
        return cpu / os.sysconf("SC_CLK_TCK"), pages * os.sysconf("SC_PAGE_SIZE"), len(pids)

    # --- status, signals, removal ----------------------------------------------------------

    def exit_info(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """``{"exit_code", "signal", "oom_killed"}`` once the container ended, else ``None``."""
        if "exit" in data:
            return dict(data["exit"])
        if alive(data.get("sup_pid"), data.get("sup_start")):
            return None
        self.reap(data.get("sup_pid"))
        # the supervisor may have written exit.json just before we looked
        if os.path.exists(os.path.join(self.dir, data["id"], "exit.json")):
            return self.exit_info(self.state(data["id"]))
        return {"exit_code": None, "signal": int(signal.SIGKILL), "oom_killed": False}

    def reap(self, pid: int | None) -> None:
        if pid in self.children:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(int(pid or 0), os.WNOHANG)[0]:
                    self.children.discard(int(pid or 0))

    def kill(self, data: dict[str, Any], signum: int) -> None:
        """Send ``signum`` to every process of a running container."""
        if self.exit_info(data) is not None:
            return
        if signum == signal.SIGKILL and alive(data.get("pid"), data.get("pid_start")):
            with contextlib.suppress(ProcessLookupError):  # PID 1 takes its namespace along
                os.kill(int(data["pid"]), signum)
        for pid in self.pids(data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def remove(self, cid: str) -> None:
        """Kill, drop the cgroup, move the journal dir aside and delete it (a crash mid-way is
        finished by :meth:`gc`)."""
        try:
            data = self.state(cid)
        except NotFound:
            return
        data["status"] = "removing"
        self.write_state(cid, data)
        if self.exit_info(data) is None:
            for pid_key, start_key in (("pid", "pid_start"), ("sup_pid", "sup_start")):
                if alive(data.get(pid_key), data.get(start_key)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(data[pid_key]), signal.SIGKILL)
        self.cgroup(data).remove()
        self.reap(data.get("sup_pid"))
        trash = os.path.join(self.dir, f".trash-{cid}-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(os.path.join(self.dir, cid), trash)
            rmtree(trash)

    # --- garbage collection ----------------------------------------------------------------

    def gc(self) -> list[str]:
        """Finish interrupted deletes, remove journals of containers whose supervisor died
        mid-create, and cgroups no journal claims. Returns what it removed."""
        removed: list[str] = []
        for name in _listdir(self.dir):
            entry = os.path.join(self.dir, name)
            if name.startswith(".trash-"):
                rmtree(entry)
                removed.append(name)
                continue
            try:
                data = self.state(name)
            except NotFound:
                # killed between making the directory and writing its journal: the journal
                # comes before any mount or cgroup, so there is nothing else to undo. Young
                # ones may belong to a create still in progress in another process.
                if _age(entry) > _UNJOURNALED_GRACE:
                    rmtree(entry)
                    removed.append(name)
                continue
            if self._stale(data):
                with contextlib.suppress(NotFound):
                    self.remove(name)
                removed.append(name)
        known = set(_listdir(self.dir))
        for parent in {os.path.dirname(d) for d in _cgroups.Cgroup(f"{self.tag}/x").dirs()}:
            for name in _listdir(parent):
                if os.path.isdir(os.path.join(parent, name)) and name not in known:
                    _cgroups.Cgroup(f"{self.tag}/{name}").remove()
                    removed.append(f"cgroup {name}")
        return removed

    def _stale(self, data: dict[str, Any]) -> bool:
        """A delete that was interrupted, or a create whose creator and supervisor both died."""
        if data.get("status") == "removing":
            return True
        return (
            data.get("status") == "creating"
            and not alive(data.get("creator"), data.get("creator_start"))
            and not alive(data.get("sup_pid"), data.get("sup_start"))
        )


def _listdir(path: str) -> list[str]:
    """The names in ``path``; none when it does not exist (or is not a directory)."""
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def rmtree(path: str, dir_fd: int | None = None) -> None:
    """Delete ``path`` and everything below it, ignoring errors as
    ``shutil.rmtree(path, ignore_errors=True)`` does (which costs ~2.5 ms to import). Directories
    are opened with ``O_NOFOLLOW`` relative to their parent's descriptor, so a symlink (even one
    swapped in meanwhile) is unlinked, never followed: nothing outside the tree is touched."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a file or a symlink
            with contextlib.suppress(OSError):
                os.unlink(path, dir_fd=dir_fd)
        return
    try:
        names = os.listdir(fd)
    except OSError:
        names = []
    try:
        for name in names:
            try:
                os.unlink(name, dir_fd=fd)
            except IsADirectoryError:
                rmtree(name, fd)
            except OSError:
                continue
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path, dir_fd=dir_fd)


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0
