"""The ``linux`` Runtime: daemonless containers from snapshot images.

Each container has a journal directory ``$FORGE_HOME/containers/<id>/`` written before
anything is made (cgroup, overlay dirs); a forked supervisor unshares the namespaces,
forks the container's PID 1 and records its exit in ``exit.json``. Mounts and network
namespaces live only as long as the container's processes, so the journal plus the
cgroup directories are everything :meth:`LinuxRuntime.gc` has to reconcile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import attrs

from forge_core.abc import Availability, ContainerSpec, ExitStatus, Handle, ImageStore, Runtime, Stats
from forge_core.exceptions import BackendUnavailable, NotFound, Unsupported

from . import _cgroups
from ._home import forge_home

__all__ = ["LinuxRuntime"]

log = logging.getLogger(__name__)


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int | None, start: str | None) -> bool:
    return bool(pid) and bool(start) and _start_time(int(pid or 0)) == start


def _resolv(network: str) -> str:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        lines = []
    if network != "host":
        lines = [ln for ln in lines if not (ln.startswith("nameserver") and ("127." in ln or "::1" in ln))]
    return "\n".join(lines) + "\n"


class LinuxRuntime(Runtime):
    """Namespaces, cgroups (v2, v1, hybrid), an overlay root and a seccomp filter."""

    name = "linux"
    supports = frozenset({
        "image", "user", "hostname", "volumes", "tmpfs", "ports", "detach",
        "network.private", "network.none", "resources.memory", "resources.cpus", "resources.pids",
    })

    @attrs.frozen(kw_only=True)
    class Config:
        home: str | None = None
        """State directory; default ``$FORGE_HOME``."""
        userns: bool = True
        """As root, run in a user namespace that maps container ids 0-65535 to the unprivileged
        host range the image's files were shifted into at import; ``False`` keeps host ids
        (container root is host root, confined by capabilities, seccomp and namespaces).
        Rootless containers always run in a user namespace."""
        init: bool = True
        """Run a reaping init shim as PID 1 that forwards signals to the command (its only
        child). ``False`` makes the command PID 1 itself, which the kernel shields from
        SIGTERM unless it installs a handler (Docker's default without ``--init``)."""

    def __init__(self, config: Config | None = None, image_store: ImageStore | None = None, **_services: object) -> None:
        self._config = config or LinuxRuntime.Config()
        self._home = Path(self._config.home) if self._config.home else forge_home()
        self._dir = self._home / "containers"
        if image_store is None:
            from .images import SnapshotImageStore

            image_store = SnapshotImageStore(SnapshotImageStore.Config(root=str(self._home / "images")))
        self._images = image_store
        self._rootless = os.geteuid() != 0
        self._layout = _cgroups.detect()
        self._tag = "forge-" + _home_tag(self._home)
        self._children: set[int] = set()
        self._attached: dict[str, tuple[int, int]] = {}

    @classmethod
    def available(cls) -> Availability:
        if platform.system() != "Linux":
            return Availability.no("needs Linux")
        if platform.machine() != "x86_64":
            return Availability.no("the seccomp filter is written for x86_64")
        if os.geteuid() != 0 and not _userns_allowed():
            return Availability.no("rootless containers need unprivileged user namespaces "
                                   "(sysctl user.max_user_namespaces / kernel.unprivileged_userns_clone)")
        return Availability.yes()

    @property
    def rootless(self) -> bool:
        return self._rootless

    @property
    def home(self) -> Path:
        return self._home

    # --- start ---------------------------------------------------------------------------

    async def start(self, spec: ContainerSpec, *, stdio: tuple[int, int, int] | None = None) -> Handle:
        """Start ``spec``; ``stdio`` (three fds) overrides ``log_path`` (the CLI's foreground run)."""
        self.validate(spec)
        if spec.image is None:
            raise Unsupported("the linux runtime needs an image (ContainerSpec.image)")
        if any(p.protocol not in ("tcp", "udp") for p in spec.ports):
            raise Unsupported("only tcp and udp ports can be published")
        if self._rootless and not self._config.userns:
            raise Unsupported("userns=False (--userns host) needs root: rootless containers always "
                              "run in a user namespace")
        for vol in spec.volumes:
            if not os.path.isabs(vol.source) or not os.path.exists(vol.source):
                raise NotFound(f"volume source {vol.source!r} does not exist (use an absolute host path)")
        _cgroups.refuse_unenforceable(self._layout, spec.resources)
        image = await self._images.get(spec.image)
        if spec.name and any(h.name == spec.name for h in await self.list()):
            raise Unsupported(f"a container named {spec.name!r} already exists; delete it first")
        cid = secrets.token_hex(6)
        from ._launch import launch

        if not spec.interactive:
            return await launch(self, cid, spec, image, stdio)
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            handle = await launch(self, cid, spec, image, (in_r, out_w, out_w))
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            raise
        finally:
            os.close(in_r)
            os.close(out_w)
        self._attached[cid] = (in_w, out_r)
        return handle

    async def attach(self, handle: Handle) -> tuple[anyio.abc.ByteSendStream, anyio.abc.ByteReceiveStream]:
        """Stdin and stdout of an ``interactive`` container started by this runtime object."""
        from forge_core.runtime import FdReceiveStream, FdSendStream

        try:
            in_w, out_r = self._attached.pop(handle.id)
        except KeyError:
            raise Unsupported(f"container {handle.id} was not started interactive by this process") from None
        return FdSendStream(in_w), FdReceiveStream(out_r)

    # --- wait / signal / remove ----------------------------------------------------------

    def state(self, cid: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self._dir / cid / "state.json").read_text())
        except (OSError, ValueError):
            raise NotFound(f"no container {cid!r}; see: forge container list") from None
        exit_path = self._dir / cid / "exit.json"
        if exit_path.exists():
            with contextlib.suppress(OSError, ValueError):
                data["exit"] = json.loads(exit_path.read_text())
        return data

    def write_state(self, cid: str, data: dict[str, Any]) -> None:
        data = {k: v for k, v in data.items() if k != "exit"}
        path = self._dir / cid / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def cgroup(self, data: dict[str, Any]) -> _cgroups.Cgroup:
        return _cgroups.Cgroup(self._layout, data["cgroup"])

    def _status(self, data: dict[str, Any]) -> ExitStatus | None:
        """The exit status if the container ended, else ``None``."""
        if "exit" in data:
            e = data["exit"]
            return ExitStatus(exit_code=e.get("exit_code"), signal=e.get("signal"), oom_killed=bool(e.get("oom_killed")))
        if _alive(data.get("sup_pid"), data.get("sup_start")):
            return None
        self._reap(data.get("sup_pid"))
        # the supervisor may have written exit.json just before we looked
        if (self._dir / data["id"] / "exit.json").exists():
            return self._status(self.state(data["id"]))
        return ExitStatus(exit_code=None, signal=signal.SIGKILL)

    def _reap(self, pid: int | None) -> None:
        if pid in self._children:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(int(pid or 0), os.WNOHANG)[0]:
                    self._children.discard(int(pid or 0))

    async def wait(self, handle: Handle) -> ExitStatus:
        while True:
            data = self.state(handle.id)
            status = self._status(data)
            if status is not None:
                return status
            try:
                fd = os.pidfd_open(int(data["sup_pid"]))
            except ProcessLookupError:
                continue
            try:
                if _alive(data.get("sup_pid"), data.get("sup_start")):
                    await anyio.wait_readable(fd)
            finally:
                os.close(fd)
            self._reap(data.get("sup_pid"))

    async def signal(self, handle: Handle, signum: int) -> None:
        with contextlib.suppress(NotFound):
            data = self.state(handle.id)
            if self._status(data) is not None:
                return
            cgroup = self.cgroup(data)
            if (signum == signal.SIGKILL or not cgroup.dirs()) and _alive(data.get("pid"), data.get("pid_start")):
                with contextlib.suppress(ProcessLookupError):  # rootless (no cgroup): PID 1 forwards
                    os.kill(int(data["pid"]), signum)
            cgroup.kill(signum)

    async def remove(self, handle: Handle) -> None:
        self.remove_sync(handle.id)

    def remove_sync(self, cid: str) -> None:
        """Kill, drop the cgroup, move the journal dir aside and delete it (a crash mid-way is
        finished by :meth:`gc`)."""
        try:
            data = self.state(cid)
        except NotFound:
            return
        data["status"] = "removing"
        self.write_state(cid, data)
        if self._status(data) is None:
            if _alive(data.get("pid"), data.get("pid_start")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(data["pid"]), signal.SIGKILL)
            if _alive(data.get("sup_pid"), data.get("sup_start")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(data["sup_pid"]), signal.SIGKILL)
        self.cgroup(data).remove()
        self._reap(data.get("sup_pid"))
        trash = self._dir / f".trash-{cid}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._dir / cid, trash)
            shutil.rmtree(trash, ignore_errors=True)

    async def stats(self, handle: Handle) -> Stats:
        data = self.state(handle.id)
        stats = self.cgroup(data).stats()
        if data.get("init") and stats.pids:  # the init shim is Forge's, not the container's
            stats = Stats(cpu_seconds=stats.cpu_seconds, memory_bytes=stats.memory_bytes, pids=stats.pids - 1)
        return stats

    def handle(self, data: dict[str, Any]) -> Handle:
        return Handle(
            id=data["id"], runtime=self.name, pid=data.get("pid"), name=data.get("name"),
            started_at=float(data.get("created", 0.0)), info=data,
        )

    async def list(self) -> list[Handle]:
        return [self.handle(d) for d in self.list_states()]

    def list_states(self) -> list[dict[str, Any]]:
        if not self._dir.exists():
            return []
        out = []
        for entry in sorted(self._dir.iterdir()):
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(NotFound):
                out.append(self.state(entry.name))
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

    def is_running(self, data: dict[str, Any]) -> bool:
        return self._status(data) is None

    def logs_path(self, cid: str) -> Path:
        return self._dir / cid / "log"

    # --- garbage collection --------------------------------------------------------------

    def gc(self) -> list[str]:
        """Finish interrupted deletes, remove journals of containers whose supervisor died
        mid-create, and cgroups no journal claims. Returns what it removed."""
        removed: list[str] = []
        if self._dir.exists():
            for entry in self._dir.iterdir():
                if entry.name.startswith(".trash-"):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
                    continue
                try:
                    data = self.state(entry.name)
                except NotFound:
                    # killed between making the directory and writing its journal: the journal
                    # comes before any mount or cgroup, so there is nothing else to undo. Young
                    # ones may belong to a create still in progress in another process.
                    if _age(entry) > _UNJOURNALED_GRACE:
                        shutil.rmtree(entry, ignore_errors=True)
                        removed.append(entry.name)
                    continue
                if self._stale(data):
                    with contextlib.suppress(NotFound):
                        self.remove_sync(entry.name)
                    removed.append(entry.name)
        known = {e.name for e in self._dir.iterdir()} if self._dir.exists() else set()
        for parent in {d.parent for d in _cgroups.Cgroup(self._layout, f"{self._tag}/x").dirs()}:
            if not parent.exists():
                continue
            for child in parent.iterdir():
                if child.is_dir() and child.name not in known:
                    _cgroups.Cgroup(self._layout, f"{self._tag}/{child.name}").remove()
                    removed.append(f"cgroup {child.name}")
        return removed

    def _stale(self, data: dict[str, Any]) -> bool:
        """A delete that was interrupted, or a create whose creator and supervisor both died."""
        if data.get("status") == "removing":
            return True
        return (data.get("status") == "creating"
                and not _alive(data.get("creator"), data.get("creator_start"))
                and not _alive(data.get("sup_pid"), data.get("sup_start")))

    async def prune(self) -> list[str]:
        """Delete every stopped container."""
        gone = []
        for data in self.list_states():
            if self._status(data) is not None:
                self.remove_sync(data["id"])
                gone.append(data["id"])
        return gone

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def containers_dir(self) -> Path:
        return self._dir

    def remember_child(self, pid: int) -> None:
        self._children.add(pid)


def _userns_allowed() -> bool:
    for path, least in (("/proc/sys/user/max_user_namespaces", 1), ("/proc/sys/kernel/unprivileged_userns_clone", 1)):
        with contextlib.suppress(OSError, ValueError), open(path) as fh:
            if int(fh.read()) < least:
                return False
    return True


def _home_tag(home: Path) -> str:
    import hashlib

    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


def listener(host_ip: str, port: int, protocol: str = "tcp") -> socket.socket:
    """A host-side socket for a published port (listening for tcp), bound before the fork."""
    try:
        if protocol == "tcp":
            return socket.create_server((host_ip, port))
        family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host_ip, port))
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise BackendUnavailable(f"cannot publish {host_ip}:{port}/{protocol}: {exc.strerror}") from None


def _now() -> float:
    return time.time()


_UNJOURNALED_GRACE = 5.0
"""Seconds after which a container directory with no readable journal counts as abandoned."""


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
