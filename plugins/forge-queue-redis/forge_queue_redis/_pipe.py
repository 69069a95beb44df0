"""One pipelined connection that runs the queue's Lua scripts with the least Python per call.

Every script call is one pre-encoded ``EVALSHA`` written straight to the socket; replies are
parsed by hiredis as they arrive and handed to the callers in order, so concurrent calls from
one process share the connection and Redis's per-iteration fsync without waiting for each
other. It skips redis-py's pool checkout and command packing, which cost more than the round
trip itself. Errors surface as redis-py's ``RedisError`` family or ``OSError``, which the
queue maps.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
from redis import exceptions as rexc

__all__ = ["Pipe"]


def _reader() -> hiredis.Reader:
    """hiredis parses replies (RESP2) in C; an error reply comes back as a value, not raised,
    so one in a batch cannot desynchronise the replies after it."""
    return hiredis.Reader(protocolError=rexc.InvalidResponse, replyError=rexc.ResponseError)


def _classify(reply: Any) -> Any:
    """The redis-py error class the queue tells apart (loading after a restart, a script the
    server forgot); any other reply as it is."""
    if isinstance(reply, rexc.ResponseError):
        message = str(reply)
        if message.startswith("LOADING"):
            return rexc.BusyLoadingError(message)
        if message.startswith("NOSCRIPT"):
            return rexc.NoScriptError(message)
    return reply


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _arg(value: Any) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _sha(body: bytes) -> bytes:
    return hashlib.sha1(body, usedforsecurity=False).hexdigest().encode()


def command(*args: Any) -> bytes:
    """One command in RESP."""
    return b"*%d\r\n%s" % (len(args), b"".join(_arg(a) for a in args))


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost: BaseException | None = None
        self._reader = _reader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while self.waiting:
            value = self._reader.gets()
            if value is False:  # the rest of a reply is still on its way
                return
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(_classify(value))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("redis closed the connection")
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(ConnectionResetError(f"redis connection lost: {self.lost}"))
                fut.exception()  # a caller that gave up on it must not make asyncio log it


class Pipe:
    """Scripts by name over one lazily (re)connected TCP connection."""

    def __init__(self, kwargs: Mapping[str, Any], scripts: Mapping[str, str], prefix: str,
                 timeout: float) -> None:
        self._kwargs = kwargs
        self._bodies = {name: body.encode() for name, body in scripts.items()}
        self._heads = {name: _bulk(b"EVALSHA") + _bulk(_sha(body)) + b"$1\r\n1\r\n"
                       + _bulk(prefix.encode()) for name, body in self._bodies.items()}
        self._timeout = timeout
        self._proto: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None

    async def script(self, name: str, args: Sequence[Any]) -> Any:
        """Run script ``name`` with ``args`` (``KEYS[1]`` is the prefix); loads it once if the
        server does not know it (after a restart). Raises the error reply or ``OSError``."""
        packed = self.packed(name, args)
        reply = await self.send(packed)
        if isinstance(reply, rexc.NoScriptError):
            loaded = await self.send(command(b"SCRIPT", b"LOAD", self._bodies[name]))
            if isinstance(loaded, rexc.RedisError):
                raise loaded
            reply = await self.send(packed)
        if isinstance(reply, rexc.RedisError):
            raise reply
        return reply

    def sibling(self) -> Pipe:
        """Another connection to the same server, for calls that block."""
        return Pipe(self._kwargs, {}, "", self._timeout)

    def packed(self, name: str, args: Sequence[Any]) -> bytes:
        """The ``EVALSHA`` of script ``name`` with ``args``, encoded."""
        return b"*%d\r\n%s%s" % (len(args) + 4, self._heads[name],
                                  b"".join(_arg(a) for a in args))

    async def send(self, packed: bytes) -> Any:
        """Write one pre-encoded command and await its reply (error replies are returned)."""
        return (await self.send_all(packed, 1))[0]

    async def send_all(self, packed: bytes, count: int) -> list[Any]:
        """Write ``count`` pre-encoded commands in one go and await every reply. Redis runs
        them back to back; a blocking one holds back those after it."""
        proto = self._proto
        if proto is None or proto.lost is not None or self._loop is not asyncio.get_running_loop():
            proto = await self._connect()
        assert proto.transport is not None
        assert self._loop is not None
        futs = [self._loop.create_future() for _ in range(count)]
        proto.transport.write(packed)
        proto.waiting.extend(futs)
        try:
            async with asyncio.timeout(self._timeout):
                return [await fut for fut in futs]
        except TimeoutError:
            proto.transport.abort()  # a reply that never came: start over on a new connection
            raise

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._proto, self._connecting = loop, None, asyncio.Lock()
        assert self._connecting is not None
        async with self._connecting:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            kw = self._kwargs
            async with asyncio.timeout(self._timeout):
                _, proto = await loop.create_connection(_Protocol, kw.get("host", "localhost"),
                                                        kw.get("port", 6379))
            self._proto = proto
            hello = []
            if kw.get("password"):
                hello.append(command(b"AUTH", *[v for v in (kw.get("username"),
                                                             kw["password"]) if v]))
            if kw.get("db"):
                hello.append(command(b"SELECT", kw["db"]))
            for packed in hello:
                reply = await self.send(packed)
                if isinstance(reply, rexc.RedisError):
                    proto.transport.abort()  # type: ignore[union-attr]
                    raise rexc.ResponseError(f"connecting: {reply}")
            return proto

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
