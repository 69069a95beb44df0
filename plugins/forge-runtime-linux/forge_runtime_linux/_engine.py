"""The container lifecycle on plain dicts and paths: journal, exit status, signal, remove, gc.

Shared by the ``linux`` Runtime and the fast CLI path, so it imports neither anyio, attrs nor
``forge_core.abc``. Each container has a journal directory ``<home>/containers/<id>/`` written
before anything it names (cgroup, overlay dirs); mounts and network namespaces live only as long
as the container's processes, so the journal plus the cgroup directories are everything
:meth:`Engine.gc` has to reconcile.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from forge_core.exceptions import NotFound

from . import _cgroups

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


def home_tag(home: Path) -> str:
    """A short stable name for ``home`` (its cgroups are ``forge-<tag>/<id>``)."""
    import hashlib

    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


class Engine:
    """Containers under one ``$FORGE_HOME``: the state both front ends (Runtime, CLI) drive."""

    def __init__(self, home: Path, *, userns: bool = True, init: bool = True) -> None:
        self.home = home
        self.dir = home / "containers"
        self.userns = userns
        self.init = init
        self.rootless = os.geteuid() != 0
        self.layout = _cgroups.detect()
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
            with open(self.dir / cid / "state.json") as fh:
                data: dict[str, Any] = json.load(fh)
        except (OSError, ValueError):
            raise NotFound(f"no container {cid!r}; see: forge container list") from None
        with contextlib.suppress(OSError, ValueError), open(self.dir / cid / "exit.json") as fh:
            data["exit"] = json.load(fh)
        return data

    def write_state(self, cid: str, data: dict[str, Any]) -> None:
        """Replace the journal atomically (rename; no fsync: a container does not outlive a
        host crash, and gc() treats a torn journal as abandoned)."""
        path = self.dir / cid / "state.json"
        tmp = self.dir / cid / "state.tmp"
        with open(tmp, "w") as fh:
            json.dump({k: v for k, v in data.items() if k != "exit"}, fh)
        os.replace(tmp, path)

    def list_states(self) -> list[dict[str, Any]]:
        if not self.dir.exists():
            return []
        out = []
        for name in sorted(os.listdir(self.dir)):
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
        return _cgroups.Cgroup(self.layout, data.get("cgroup"))

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
        if (self.dir / data["id"] / "exit.json").exists():
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
        trash = self.dir / f".trash-{cid}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.dir / cid, trash)
            _rmtree(trash)

    # --- garbage collection ----------------------------------------------------------------

    def gc(self) -> list[str]:
        """Finish interrupted deletes, remove journals of containers whose supervisor died
        mid-create, and cgroups no journal claims. Returns what it removed."""
        removed: list[str] = []
        for entry in self.dir.iterdir() if self.dir.exists() else ():
            if entry.name.startswith(".trash-"):
                _rmtree(entry)
                removed.append(entry.name)
                continue
            try:
                data = self.state(entry.name)
            except NotFound:
                # killed between making the directory and writing its journal: the journal
                # comes before any mount or cgroup, so there is nothing else to undo. Young
                # ones may belong to a create still in progress in another process.
                if _age(entry) > _UNJOURNALED_GRACE:
                    _rmtree(entry)
                    removed.append(entry.name)
                continue
            if self._stale(data):
                with contextlib.suppress(NotFound):
                    self.remove(entry.name)
                removed.append(entry.name)
        known = set(os.listdir(self.dir)) if self.dir.exists() else set()
        for parent in {d.parent for d in _cgroups.Cgroup(self.layout, f"{self.tag}/x").dirs()}:
            for child in parent.iterdir() if parent.exists() else ():
                if child.is_dir() and child.name not in known:
                    _cgroups.Cgroup(self.layout, f"{self.tag}/{child.name}").remove()
                    removed.append(f"cgroup {child.name}")
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


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
