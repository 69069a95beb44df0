"""anyio byte streams over the non-blocking pipe ends of an interactive child's stdin/stdout."""

from __future__ import annotations

import os

import anyio
import anyio.abc

__all__ = ["FdReceiveStream", "FdSendStream"]


class FdReceiveStream(anyio.abc.ByteReceiveStream):
    """Reads a pipe; :class:`anyio.EndOfStream` once every writer closed it."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)


class FdSendStream(anyio.abc.ByteSendStream):
    """Writes a pipe; :class:`anyio.BrokenResourceError` once the reader is gone."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._closed = False

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self._fd)
                continue
            except BrokenPipeError:
                raise anyio.BrokenResourceError from None
            view = view[written:]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)
