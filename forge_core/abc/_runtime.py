"""The Runtime interface: run one command in isolation, watch it, stop it, clean it up.

Backends: ``process`` (core, a plain child process in its own session with rlimits),
``linux`` (namespaces, cgroups, a rootfs), ``windows`` (Job Objects). A runtime refuses
any part of a :class:`ContainerSpec` it cannot enforce (see :attr:`Runtime.supports`)
instead of silently ignoring it.
"""

from __future__ import annotations

import abc
import os
import signal as _signal
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import anyio
import attrs

from ..exceptions import Unsupported
from ._common import Availability

__all__ = [
    "ContainerSpec",
    "ExitStatus",
    "Handle",
    "PortMapping",
    "Resources",
    "Runtime",
    "Stats",
    "Volume",
]


def _argv(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Resources:
    """Limits for one container. ``None`` means "no limit asked"."""

    memory: int | None = None
    """Bytes of memory (address space under ``process``, a cgroup limit under ``linux``)."""
    cpus: float | None = None
    """CPU share in cores (cgroup quota); ``process`` cannot enforce it and refuses."""
    pids: int | None = None
    """Maximum number of processes/threads."""
    cpu_time: float | None = None
    """Seconds of CPU time before the kernel kills the process (RLIMIT_CPU)."""

    def asked(self) -> frozenset[str]:
        """Names of the limits that were asked for."""
        return frozenset(name for name in _LIMITS if getattr(self, name) is not None)


_LIMITS = tuple(f.name for f in attrs.fields(Resources))


@attrs.frozen(kw_only=True)
class Volume:
    """A host path mounted into a container."""

    source: str
    target: str
    read_only: bool = False


@attrs.frozen(kw_only=True)
class PortMapping:
    """A host port forwarded to a container port."""

    host_port: int
    container_port: int
    host_ip: str = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"


@attrs.frozen(kw_only=True)
class ContainerSpec:
    """Everything a runtime needs to start one command.

    ``command`` is an argv list and is never given to a shell; a caller that wants a
    shell puts ``("/bin/sh", "-c", text)`` there itself.
    """

    command: tuple[str, ...] = attrs.field(converter=_argv)
    name: str | None = None
    image: str | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    inherit_env: bool = True
    """Whether the process starts from the caller's environment (``process`` runtime only)."""
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    network: Literal["private", "none", "host"] = "host"
    resources: Resources = attrs.field(factory=Resources)
    volumes: tuple[Volume, ...] = ()
    tmpfs: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    log_path: str | os.PathLike[str] | None = None
    """File that receives stdout and stderr (appended; a ``str`` or a ``Path``). ``None``
    discards them unless interactive."""
    interactive: bool = False
    """Keep stdin and stdout as pipes, reachable through :meth:`Runtime.attach`."""
    detach: bool = False
    """Survive the death of the process that started it."""
    labels: Mapping[str, str] = attrs.field(factory=dict)

    def used_features(self) -> frozenset[str]:
        """Feature names this spec asks for, matched against :attr:`Runtime.supports`."""
        used = [f"resources.{name}" for name in self.resources.asked()]
        used += [name for name in ("image", "user", "hostname", "volumes", "tmpfs", "ports")
                 if getattr(self, name)]
        if self.network != "host":
            used.append(f"network.{self.network}")
        if self.detach:
            used.append("detach")
        return frozenset(used)


@attrs.frozen(kw_only=True)
class Handle:
    """A started container, as its runtime knows it."""

    id: str
    runtime: str
    pid: int | None = None
    name: str | None = None
    started_at: float = 0.0
    info: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ExitStatus:
    """How a container ended: an exit code, or the signal that killed it."""

    exit_code: int | None
    signal: int | None = None
    oom_killed: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.oom_killed:
            return "killed: out of memory (oom_killed)"
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        return f"exit code {self.exit_code}"


@attrs.frozen(kw_only=True)
class Stats:
    """A point-in-time resource reading of a container."""

    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    pids: int = 0


class Runtime(abc.ABC):
    """Runs one command in isolation.

    Subclasses implement the narrow abstract hooks; :meth:`stop`, :meth:`run` and
    :meth:`validate` are shared behaviour they never re-implement.
    """

    name: ClassVar[str] = ""
    supports: ClassVar[frozenset[str]] = frozenset()
    """Features of :class:`ContainerSpec` this runtime enforces (see ``used_features``)."""

    @classmethod
    def available(cls) -> Availability:
        """Whether this runtime works on this machine (kernel features, OS, binaries)."""
        return Availability.yes()

    def validate(self, spec: ContainerSpec) -> None:
        """Raise :class:`Unsupported` naming every asked feature this runtime cannot enforce."""
        missing = sorted(spec.used_features() - self.supports)
        if missing:
            raise Unsupported(
                f"the {self.name!r} runtime cannot enforce {', '.join(missing)}; "
                "remove it or use a runtime that can (e.g. install forge-runtime-linux)"
            )
        if not spec.command:
            raise Unsupported("a container needs a command")

    @abc.abstractmethod
    async def start(self, spec: ContainerSpec) -> Handle:
        """Start ``spec`` and return once the command is running.

        Raises :class:`Unsupported` for features it cannot enforce (call :meth:`validate`),
        :class:`~forge_core.exceptions.BackendUnavailable` when the host cannot run it, and
        :class:`~forge_core.exceptions.NotFound` for a missing image or executable.
        """

    @abc.abstractmethod
    async def wait(self, handle: Handle) -> ExitStatus:
        """Wait for the container to end and return how it ended. Safe to call repeatedly."""

    @abc.abstractmethod
    async def signal(self, handle: Handle, signum: int) -> None:
        """Send ``signum`` to every process of the container (its whole process group or
        cgroup). A container that already ended is not an error."""

    @abc.abstractmethod
    async def remove(self, handle: Handle) -> None:
        """Release everything the container holds (files, cgroups, mounts). Kills it first
        if it still runs. Removing twice is not an error."""

    @abc.abstractmethod
    async def stats(self, handle: Handle) -> Stats:
        """Current CPU, memory and process count of the container."""

    @abc.abstractmethod
    async def list(self) -> list[Handle]:
        """Containers this runtime knows of (running or ended but not removed)."""

    async def aclose(self) -> None:
        """Release what the runtime keeps between containers (it may start more later).
        Containers it started are left as they are."""

    async def attach(self, handle: Handle) -> tuple[anyio.abc.ByteSendStream, anyio.abc.ByteReceiveStream]:
        """Stdin and stdout pipes of an ``interactive`` container."""
        raise Unsupported(f"the {self.name!r} runtime does not support attaching to stdio")

    async def stop(self, handle: Handle, grace: float = 10.0) -> ExitStatus:
        """SIGTERM the whole container, wait up to ``grace`` seconds, then SIGKILL it."""
        await self.signal(handle, _signal.SIGTERM)
        with anyio.move_on_after(grace):
            return await self.wait(handle)
        await self.signal(handle, _signal.SIGKILL)
        return await self.wait(handle)

    async def run(
        self, spec: ContainerSpec, *, timeout: float | None = None, grace: float = 10.0
    ) -> tuple[ExitStatus, bool]:
        """Start, wait (stopping it after ``timeout``), remove. Returns (status, timed_out).

        Cancelled while it runs (Ctrl-C, a run being stopped), the container is stopped as on
        a timeout — SIGTERM, up to ``grace`` seconds, SIGKILL — before the cancellation goes
        on; whatever happened, nothing it started survives."""
        handle = await self.start(spec)
        ended: tuple[ExitStatus, bool] | None = None
        try:
            ended = await self._wait_or_stop(handle, timeout, grace)
            return ended
        finally:
            if ended is None or not self.discard(handle):
                with anyio.CancelScope(shield=True):
                    if ended is None:
                        await self.stop(handle, grace)
                    await self.signal(handle, _signal.SIGKILL)  # what the leader left behind
                    await self.remove(handle)

    async def _wait_or_stop(
        self, handle: Handle, timeout: float | None, grace: float
    ) -> tuple[ExitStatus, bool]:
        if timeout is None:
            return await self.wait(handle), False
        status: ExitStatus | None = None
        with anyio.move_on_after(timeout):
            status = await self.wait(handle)
        if status is not None:
            return status, False
        with anyio.CancelScope(shield=True):
            stopped = await self.stop(handle, grace)
        return stopped, True

    def discard(self, handle: Handle) -> bool:
        """Forget a container that ended and left nothing behind (no process, file, cgroup
        or mount to release), without a trip through the event loop; ``False`` when it
        needs :meth:`remove`. The default always says ``False``."""
        return False
