"""Waiting for children to exit through their pidfds, all of them in one epoll set that the
asyncio loop watches as a single descriptor.

Registering each child's pidfd with the loop itself costs a trip through the loop's
selector bookkeeping (a key object, a lookup that misses, a register and an unregister, all
Python) per child; here a child costs one ``epoll_ctl`` in C, and the loop calls back once
per wake-up, however many children ended. Other anyio backends wait with
:func:`anyio.wait_readable`.
"""

from __future__ import annotations

import asyncio
import select
import weakref

import anyio

__all__ = ["wait_exited"]

_ONCE = select.EPOLLIN | select.EPOLLONESHOT if hasattr(select, "epoll") else 0


class _Exits:
    """The children one loop waits for: pidfd -> the future their exit resolves."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def _ready(self) -> None:
        for fd, _events in self._epoll.poll(0):
            future = self._waiting.pop(fd, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def wait(self, pidfd: int) -> None:
        future = self._loop.create_future()
        self._epoll.register(pidfd, _ONCE)  # nothing reads the set before the await below
        self._waiting[pidfd] = future
        try:
            await future
        finally:  # out of the set, so the next waiter (after a cancel) can register it again
            self._waiting.pop(pidfd, None)
            self._epoll.unregister(pidfd)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Exits] = (
    weakref.WeakKeyDictionary())


async def wait_exited(pidfd: int) -> None:
    """Return once the process behind ``pidfd`` has exited (it is not reaped)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another anyio backend
        loop = None
    if loop is None or not _ONCE:
        await anyio.wait_readable(pidfd)
        return
    exits = _by_loop.get(loop)
    if exits is None:
        try:
            exits = _by_loop[loop] = _Exits(loop)
        except NotImplementedError:  # a loop that cannot watch descriptors
            await anyio.wait_readable(pidfd)
            return
    await exits.wait(pidfd)
