"""The supervisor's port relay: tcp streams and udp datagrams between host-side sockets (bound
before the fork) and the container's loopback, in one single-threaded selector loop (a process
that unshared a PID namespace cannot create threads)."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
from typing import Any

__all__ = ["wait_relaying"]


def wait_relaying(pid1: int, listeners: list[tuple[socket.socket, int]]) -> int:
    """Wait for PID 1 while relaying published ports; returns its wait status."""
    pidfd = os.pidfd_open(pid1)
    sel = selectors.DefaultSelector()
    sel.register(pidfd, selectors.EVENT_READ, None)
    for lst, port in listeners:
        kind = "datagram" if lst.type == socket.SOCK_DGRAM else "listen"
        sel.register(lst, selectors.EVENT_READ, (kind, lst, port, {}))
    open_ends: dict[socket.socket, int] = {}
    while True:
        for key, _ in sel.select():
            if key.data is None:
                return os.waitpid(pid1, 0)[1]
            kind = key.data[0]
            if kind == "listen":
                _accept(sel, key.data[1], key.data[2], open_ends)
            elif kind == "datagram":
                _datagram_in(sel, key.data[1], key.data[2], key.data[3])
            elif kind == "reply":
                _datagram_back(key.fileobj, key.data[1], key.data[2])  # type: ignore[arg-type]
            else:
                _pump(sel, key.fileobj, key.data[1], open_ends)  # type: ignore[arg-type]


_UDP_PEERS = 256
"""Host-side UDP clients remembered per published port; the oldest is forgotten beyond this."""


def _datagram_in(
    sel: selectors.BaseSelector, outer: socket.socket, port: int, peers: dict[Any, socket.socket]
) -> None:
    """Forward a datagram from a host client into the container, through one connected socket
    per client so that the container's replies find their way back."""
    try:
        data, addr = outer.recvfrom(65535)
    except OSError:
        return
    inner = peers.get(addr)
    if inner is None:
        if len(peers) >= _UDP_PEERS:
            oldest = next(iter(peers))
            sel.unregister(peers[oldest])
            peers.pop(oldest).close()
        inner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inner.connect(("127.0.0.1", port))
        inner.setblocking(False)
        peers[addr] = inner
        sel.register(inner, selectors.EVENT_READ, ("reply", outer, addr))
    with contextlib.suppress(OSError):
        inner.send(data)


def _datagram_back(inner: socket.socket, outer: socket.socket, addr: Any) -> None:
    with contextlib.suppress(OSError):
        outer.sendto(inner.recv(65535), addr)


def _accept(
    sel: selectors.BaseSelector, lst: socket.socket, port: int, open_ends: dict[socket.socket, int]
) -> None:
    """Connect to the container's port from inside its network namespace."""
    try:
        conn, _addr = lst.accept()
    except OSError:
        return
    try:
        inner = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        conn.close()
        return
    for a, b in ((conn, inner), (inner, conn)):
        a.settimeout(None)
        sel.register(a, selectors.EVENT_READ, ("pipe", b))
    open_ends[conn] = open_ends[inner] = 2


def _pump(
    sel: selectors.BaseSelector, src: socket.socket, dst: socket.socket, open_ends: dict[socket.socket, int]
) -> None:
    try:
        data = src.recv(65536)
        if data:
            dst.sendall(data)
            return
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        data = b""
    sel.unregister(src)
    open_ends[src] -= 1
    open_ends[dst] -= 1
    if open_ends[src] <= 0 or open_ends[dst] <= 0:
        for s in (src, dst):
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            s.close()
            open_ends.pop(s, None)
