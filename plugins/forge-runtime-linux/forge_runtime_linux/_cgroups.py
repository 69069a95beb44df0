"""cgroup v2, v1 and hybrid layouts behind one small class: create with limits, join, kill,
read stats and OOM kills, remove.

The layout is read from ``/proc/self/mountinfo``: a v1 controller mounted anywhere is used as
v1 (hybrid hosts mount an empty cgroup2 at ``/sys/fs/cgroup/unified`` next to v1 controllers;
that hierarchy holds no controller so it is ignored), and a cgroup2 mount that has the
controller is used as v2. A limit no mounted controller can enforce is refused. Paths are
strings (the fast CLI path imports this module, and :mod:`pathlib` costs it ~3 ms).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

from forge_core.exceptions import Unsupported

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Cgroup", "Layout", "detect", "host_layout"]

_V1_USED = ("memory", "cpu", "cpuacct", "pids")
_LIMIT_CONTROLLER = {"memory": "memory", "cpus": "cpu", "pids": "pids"}


class Layout:
    """Where each controller lives: ``v1`` maps controller -> mount, ``v2`` is the unified mount
    and ``v2_controllers`` the ones Forge uses there. ``rootless``: no hierarchy is delegated to
    us, so no cgroup is made and every limit is refused. (A plain class, not attrs or a
    NamedTuple: the fast CLI path imports this module and either costs a millisecond.)"""

    __slots__ = ("rootless", "v1", "v2", "v2_controllers")

    def __init__(
        self, *, v1: dict[str, str], v2: str | None, v2_controllers: frozenset[str], rootless: bool = False
    ) -> None:
        self.v1, self.v2, self.v2_controllers, self.rootless = v1, v2, v2_controllers, rootless

    @property
    def mode(self) -> str:
        if self.v1 and self.v2 is not None:
            return "hybrid"
        return "v1" if self.v1 else ("v2" if self.v2 is not None else "none")

    def has(self, controller: str) -> bool:
        return controller in self.v1 or controller in self.v2_controllers


_host: Layout | None = None


def host_layout() -> Layout:
    """This host's layout, read once per process on first use: a container that asked for no
    limit never needs it (and ``/proc/self/mountinfo`` is long on hosts with many mounts)."""
    global _host
    if _host is None:
        _host = detect()
    return _host


def detect() -> Layout:
    """Read the host's cgroup layout."""
    v1: dict[str, str] = {}
    v2: str | None = None
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            mountpoint = fields[4]
            if fstype == "cgroup":
                for opt in options:
                    if opt in _V1_USED:
                        v1.setdefault(opt, mountpoint)
            elif fstype == "cgroup2" and v2 is None:
                v2 = mountpoint
    controllers: frozenset[str] = frozenset()
    if v2 is not None:
        with contextlib.suppress(OSError), open(os.path.join(v2, "cgroup.controllers")) as fh:
            controllers = frozenset(fh.read().split())
    used = frozenset(_V1_USED) - set(v1)  # a v2 controller Forge never writes (hugetlb…) needs no cgroup
    return Layout(v1=v1, v2=v2, v2_controllers=controllers & used, rootless=os.geteuid() != 0)


def refuse_unenforceable(limits: dict[str, Any], layout: Layout | None = None) -> None:
    """Raise :class:`Unsupported` for a limit (``Resources`` field name -> value, only those
    asked for) that no mounted controller, or our rights, can enforce in ``layout`` (default:
    the host's, read only when a limit is asked for)."""
    for limit in sorted(set(limits) & set(_LIMIT_CONTROLLER)):
        controller = _LIMIT_CONTROLLER[limit]
        layout = layout or host_layout()
        if layout.rootless:
            raise Unsupported(
                f"cannot enforce {limit} rootless: no cgroup is delegated to uid {os.geteuid()} "
                f"(cgroup layout: {layout.mode}; v1 controllers cannot be delegated); run as root "
                "or drop the limit"
            )
        if not layout.has(controller):
            raise Unsupported(
                f"cannot enforce {limit}: no {controller} cgroup controller is available "
                f"on this host (cgroup layout: {layout.mode})"
            )
    if limits.get("cpu_time") is not None:
        raise Unsupported("the linux runtime does not enforce cpu_time; use cpus")


class Cgroup:
    """One container's cgroup in every hierarchy Forge uses; ``relpath`` ``None``: the container
    has none (it asked for no limit, so it skips the ~10 ms a cgroup v1 migration costs)."""

    def __init__(self, relpath: str | None) -> None:
        self.relpath = relpath

    @property
    def layout(self) -> Layout:
        return host_layout()

    @property
    def _rel(self) -> str:
        if self.relpath is None:
            raise Unsupported("this container has no cgroup (it asked for no limit)")
        return self.relpath

    def dirs(self) -> list[str]:
        if self.relpath is None or self.layout.rootless:
            return []
        out = [os.path.join(mount, self.relpath) for c, mount in self.layout.v1.items() if c in _V1_USED]
        if self.layout.v2 is not None and self.layout.v2_controllers:
            out.append(os.path.join(self.layout.v2, self.relpath))
        return list(dict.fromkeys(out))

    def create(self, limits: dict[str, Any]) -> None:
        """Make the directories and write ``limits`` (as :func:`refuse_unenforceable` takes them)."""
        refuse_unenforceable(limits)
        if not self.dirs():
            return
        if self.layout.v2 is not None and self.layout.v2_controllers:
            self._enable_v2_parent()
        for path in self.dirs():
            os.makedirs(path, exist_ok=True)
        self._limit(limits)

    def _enable_v2_parent(self) -> None:
        assert self.layout.v2 is not None
        wanted = " ".join(f"+{c}" for c in sorted(self.layout.v2_controllers & {"memory", "cpu", "pids"}))
        parent = os.path.join(self.layout.v2, self._rel.split("/")[0])
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent)
        for level in (self.layout.v2, parent):
            with contextlib.suppress(OSError):
                _write(os.path.join(level, "cgroup.subtree_control"), wanted)

    def _file(self, controller: str, v1name: str, v2name: str) -> str:
        if controller in self.layout.v1:
            return os.path.join(self.layout.v1[controller], self._rel, v1name)
        assert self.layout.v2 is not None
        return os.path.join(self.layout.v2, self._rel, v2name)

    def _limit(self, limits: dict[str, Any]) -> None:
        memory, cpus, pids = limits.get("memory"), limits.get("cpus"), limits.get("pids")
        try:
            if memory is not None:
                if "memory" in self.layout.v1:
                    _write(self._file("memory", "memory.limit_in_bytes", ""), str(memory))
                    swap = self._file("memory", "memory.memsw.limit_in_bytes", "")
                    if os.path.exists(swap):
                        _write(swap, str(memory))
                else:
                    _write(self._file("memory", "", "memory.max"), str(memory))
                    with contextlib.suppress(FileNotFoundError):
                        _write(self._file("memory", "", "memory.swap.max"), "0")
            if cpus is not None:
                period = 100_000
                quota = max(1000, int(cpus * period))
                if "cpu" in self.layout.v1:
                    _write(self._file("cpu", "cpu.cfs_period_us", ""), str(period))
                    _write(self._file("cpu", "cpu.cfs_quota_us", ""), str(quota))
                else:
                    _write(self._file("cpu", "", "cpu.max"), f"{quota} {period}")
            if pids is not None:
                _write(self._file("pids", "pids.max", "pids.max"), str(pids))
        except OSError as exc:
            raise Unsupported(
                f"the kernel refused a resource limit ({exc.strerror}: {exc.filename})"
            ) from None

    def join(self, pid: int = 0) -> None:
        """Move ``pid`` (0: the caller) into every hierarchy."""
        for path in self.dirs():
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def pids(self) -> list[int]:
        for path in self.dirs():
            with contextlib.suppress(OSError):
                return [int(x) for x in _read(os.path.join(path, "cgroup.procs")).split()]
        return []

    def kill(self, signum: int = signal.SIGKILL) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def oom_killed(self) -> bool:
        if not self.dirs():
            return False
        try:
            if "memory" in self.layout.v1:
                text = _read(self._file("memory", "memory.oom_control", ""))
            elif "memory" in self.layout.v2_controllers:
                text = _read(self._file("memory", "", "memory.events"))
            else:
                return False
        except OSError:
            return False
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def stats(self) -> tuple[float, int, int]:
        """CPU seconds, memory bytes and process count."""

        def read(controller: str, v1name: str, v2name: str) -> str:
            with contextlib.suppress(OSError, AssertionError):
                return _read(self._file(controller, v1name, v2name))
            return ""

        cpu = 0.0
        if "cpuacct" in self.layout.v1:
            cpu = int(read("cpuacct", "cpuacct.usage", "") or 0) / 1e9
        elif "cpu" in self.layout.v2_controllers:
            fields = dict(line.split() for line in read("cpu", "", "cpu.stat").splitlines())
            cpu = int(fields.get("usage_usec", 0)) / 1e6
        mem = read("memory", "memory.usage_in_bytes", "memory.current") if self.layout.has("memory") else ""
        pids = read("pids", "pids.current", "pids.current") if self.layout.has("pids") else ""
        return cpu, int(mem or 0), int(pids or len(self.pids()))

    def remove(self) -> None:
        """Kill what is left and remove every directory; a missing one is fine."""
        for attempt in range(50):
            busy = False
            for path in self.dirs():
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    busy = True
            if not busy:
                return
            self.kill()
            time.sleep(0.002 * (attempt + 1))


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
