"""The ``linux`` Runtime: daemonless containers from snapshot images.

A thin async front over :class:`~._engine.Engine` (journal, status, removal, gc) and
:mod:`._launch` (the start), which the fast CLI path drives directly. A forked supervisor
unshares the namespaces, forks the container's PID 1 and records its exit in ``exit.json``.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import platform
from pathlib import Path
from typing import Any

import anyio
import attrs

from forge_core.abc import Availability, ContainerSpec, ExitStatus, Handle, Image, ImageStore, Runtime, Stats
from forge_core.exceptions import Unsupported
from forge_core.home import forge_home

from . import _cgroups, _launch
from ._engine import Engine

__all__ = ["LinuxRuntime", "request"]

log = logging.getLogger(__name__)


def request(spec: ContainerSpec) -> dict[str, Any]:
    """``spec`` as the plain data the engine and the journal use."""
    return {
        "command": list(spec.command),
        "name": spec.name,
        "image": spec.image,
        "env": dict(spec.env),
        "hostname": spec.hostname,
        "workdir": spec.workdir,
        "user": spec.user,
        "network": spec.network,
        "detach": spec.detach,
        "tmpfs": list(spec.tmpfs),
        "labels": dict(spec.labels),
        "volumes": [{"source": v.source, "target": v.target, "read_only": v.read_only} for v in spec.volumes],
        "ports": [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in spec.ports],
        "resources": {k: getattr(spec.resources, k) for k in spec.resources.asked()},
        "log_path": str(spec.log_path) if spec.log_path else None,
    }


def image_dict(image: Image) -> dict[str, Any]:
    return {"id": image.id, "rootfs": str(image.rootfs), "config": dict(image.config)}


class LinuxRuntime(Runtime):
    """Namespaces, cgroups (v2, v1, hybrid), an overlay root and a seccomp filter."""

    name = "linux"
    supports = frozenset(
        {
            "image",
            "user",
            "hostname",
            "volumes",
            "tmpfs",
            "ports",
            "detach",
            "network.private",
            "network.none",
            "resources.memory",
            "resources.cpus",
            "resources.pids",
        }
    )

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

    def __init__(
        self, config: Config | None = None, image_store: ImageStore | None = None, **_services: object
    ) -> None:
        self._config = config or LinuxRuntime.Config()
        self._home = Path(self._config.home) if self._config.home else forge_home()
        if image_store is None:
            from .images import SnapshotImageStore

            image_store = SnapshotImageStore(SnapshotImageStore.Config(root=str(self._home / "images")))
        self._images = image_store
        self._engine = Engine(self._home, userns=self._config.userns, init=self._config.init)
        self._attached: dict[str, tuple[int, int]] = {}

    @classmethod
    def available(cls) -> Availability:
        if platform.system() != "Linux":
            return Availability.no("needs Linux")
        if platform.machine() != "x86_64":
            return Availability.no("the seccomp filter is written for x86_64")
        if os.geteuid() != 0 and not _userns_allowed():
            return Availability.no(
                "rootless containers need unprivileged user namespaces "
                "(sysctl user.max_user_namespaces / kernel.unprivileged_userns_clone)"
            )
        return Availability.yes()

    @property
    def home(self) -> Path:
        return self._home

    @property
    def rootless(self) -> bool:
        return self._engine.rootless

    @property
    def engine(self) -> Engine:
        return self._engine

    # --- start ---------------------------------------------------------------------------

    async def start(self, spec: ContainerSpec, *, stdio: tuple[int, int, int] | None = None) -> Handle:
        """Start ``spec``; ``stdio`` (three fds) overrides ``log_path`` (the CLI's foreground run)."""
        self.validate(spec)
        if spec.image is None:
            raise Unsupported("the linux runtime needs an image (ContainerSpec.image)")
        req = request(spec)
        _launch.check_request(self._engine, req)
        image = image_dict(await self._images.get(spec.image))
        if not spec.interactive:
            return await self._launch(req, image, stdio)
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            handle = await self._launch(req, image, (in_r, out_w, out_w))
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            raise
        finally:
            os.close(in_r)
            os.close(out_w)
        self._attached[handle.id] = (in_w, out_r)
        return handle

    async def _launch(
        self, req: dict[str, Any], image: dict[str, Any], stdio: tuple[int, int, int] | None
    ) -> Handle:
        pending = _launch.prepare(self._engine, req, image, stdio)
        try:
            while True:
                await anyio.wait_readable(pending.sync_r)
                if not pending.feed():
                    break
        except BaseException:
            with anyio.CancelScope(shield=True):
                _launch.finish_quietly(self._engine, pending)
            raise
        return self.handle(_launch.finish(self._engine, pending))

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
        return self._engine.state(cid)

    def write_state(self, cid: str, data: dict[str, Any]) -> None:
        self._engine.write_state(cid, data)

    def cgroup(self, data: dict[str, Any]) -> _cgroups.Cgroup:
        return self._engine.cgroup(data)

    def _status(self, data: dict[str, Any]) -> ExitStatus | None:
        """The exit status if the container ended, else ``None``."""
        info = self._engine.exit_info(data)
        if info is None:
            return None
        return ExitStatus(
            exit_code=info.get("exit_code"),
            signal=info.get("signal"),
            oom_killed=bool(info.get("oom_killed")),
        )

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
                await anyio.wait_readable(fd)
            finally:
                os.close(fd)
            self._engine.reap(data.get("sup_pid"))

    async def signal(self, handle: Handle, signum: int) -> None:
        from forge_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self._engine.kill(self.state(handle.id), signum)

    async def remove(self, handle: Handle) -> None:
        self._engine.remove(handle.id)

    def remove_sync(self, cid: str) -> None:
        self._engine.remove(cid)

    async def stats(self, handle: Handle) -> Stats:
        data = self.state(handle.id)
        cgroup = self.cgroup(data)
        cpu, memory, pids = cgroup.stats() if cgroup.dirs() else self._engine.proc_stats(data)
        if data.get("init") and pids:  # the init shim is Forge's, not the container's
            pids -= 1
        return Stats(cpu_seconds=cpu, memory_bytes=memory, pids=pids)

    def handle(self, data: dict[str, Any]) -> Handle:
        return Handle(
            id=data["id"],
            runtime=self.name,
            pid=data.get("pid"),
            name=data.get("name"),
            started_at=float(data.get("created", 0.0)),
            info=data,
        )

    async def list(self) -> list[Handle]:
        return [self.handle(d) for d in self.list_states()]

    def list_states(self) -> builtins.list[dict[str, Any]]:
        return self._engine.list_states()

    def resolve(self, ref: str) -> str:
        """A container id from a name, an id or a unique id prefix."""
        return self._engine.resolve(ref)

    def is_running(self, data: dict[str, Any]) -> bool:
        return self._engine.exit_info(data) is None

    def logs_path(self, cid: str) -> Path:
        return Path(self._engine.dir, cid, "log")

    # --- garbage collection --------------------------------------------------------------

    def gc(self) -> builtins.list[str]:
        """Finish interrupted deletes, remove journals of containers whose supervisor died
        mid-create, and cgroups no journal claims. Returns what it removed."""
        return self._engine.gc()

    async def prune(self) -> builtins.list[str]:
        """Delete every stopped container."""
        gone = []
        for data in self.list_states():
            if self._engine.exit_info(data) is not None:
                self._engine.remove(data["id"])
                gone.append(data["id"])
        return gone

    @property
    def tag(self) -> str:
        return self._engine.tag

    @property
    def containers_dir(self) -> Path:
        return Path(self._engine.dir)


def _userns_allowed() -> bool:
    for path in ("/proc/sys/user/max_user_namespaces", "/proc/sys/kernel/unprivileged_userns_clone"):
        with contextlib.suppress(OSError, ValueError), open(path) as fh:
            if int(fh.read()) < 1:
                return False
    return True
