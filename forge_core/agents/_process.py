"""One agent process seen through a Runtime: start it with stdio pipes, send it task lines,
read its JSON lines (the contract in docs/agents.md), and stop it."""

from __future__ import annotations

import json
import logging
import math
import signal
from typing import Any

import anyio
import anyio.abc
import attrs

from ..abc import ContainerSpec, ExitStatus, Handle, Runtime, Stats

log = logging.getLogger(__name__)

__all__ = ["AgentProcess"]


@attrs.define
class AgentProcess:
    """A started agent: its handle, stdin and a line reader over its stdout."""

    runtime: Runtime
    handle: Handle
    _stdin: anyio.abc.ByteSendStream
    _stdout: anyio.abc.ByteReceiveStream
    _buffer: bytes = b""

    @classmethod
    async def start(cls, runtime: Runtime, spec: ContainerSpec) -> AgentProcess:
        handle = await runtime.start(attrs.evolve(spec, interactive=True))
        stdin, stdout = await runtime.attach(handle)
        return cls(runtime, handle, stdin, stdout)

    @property
    def pid(self) -> int | None:
        return self.handle.pid

    async def send(self, message: dict[str, Any]) -> bool:
        """Write one JSON line; ``False`` when the agent's stdin is gone."""
        try:
            await self._stdin.send(json.dumps(message).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True

    async def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next JSON message; ``None`` at end of output. Non-JSON lines become
        ``{"type": "output", "line": …}``. Raises ``TimeoutError`` after ``timeout``."""
        with anyio.fail_after(math.inf if timeout is None else timeout):
            while b"\n" not in self._buffer:
                try:
                    chunk = await self._stdout.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        text = line.decode(errors="replace").strip()
        try:
            message = json.loads(text)
        except ValueError:
            return {"type": "output", "line": text}
        return message if isinstance(message, dict) else {"type": "output", "line": text}

    async def signal(self, signum: int) -> None:
        await self.runtime.signal(self.handle, signum)

    async def stats(self) -> Stats:
        return await self.runtime.stats(self.handle)

    async def wait(self) -> ExitStatus:
        return await self.runtime.wait(self.handle)

    async def stop(self, grace: float) -> ExitStatus:
        """Close stdin (the agent's cue to exit), then SIGTERM, ``grace``, SIGKILL the group."""
        with anyio.CancelScope(shield=True):
            await self._stdin.aclose()
            await self.runtime.signal(self.handle, signal.SIGCONT)
            status = await self.runtime.stop(self.handle, grace)
            await self.runtime.remove(self.handle)
        return status

    async def kill(self) -> ExitStatus:
        with anyio.CancelScope(shield=True):
            await self.runtime.signal(self.handle, signal.SIGKILL)
            status = await self.runtime.wait(self.handle)
            await self.runtime.remove(self.handle)
        return status
