"""Group commit for puts: calls that arrive while one transaction is being written wait and go
in the next one together, so N concurrent callers pay one fsync instead of N.

Each caller gets its own ids or its own error. Results are written into the waiting entries by
the worker thread itself, so a flusher cancelled mid-write still leaves every entry of its batch
settled, and a waiter that finds no flusher running takes the role over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs

__all__ = ["PutCombiner"]


@attrs.define
class _Entry:
    rows: list[dict[str, Any]]
    ids: list[str] | None = None
    error: BaseException | None = None
    wake: anyio.Event = attrs.field(factory=anyio.Event)


@attrs.define
class PutCombiner:
    """Runs ``write(rows) -> ids`` (blocking; ``offload`` runs it in a worker thread) once for
    the rows of every caller waiting at that moment. One caller at a time writes; when its batch
    is done it hands the role to the first caller that arrived meanwhile, so nobody waits for
    more than the write in progress and its own."""

    _write: Callable[[list[dict[str, Any]]], list[str]]
    _offload: Callable[[Callable[[list[_Entry]], None], list[_Entry]], Awaitable[None]]
    _pending: list[_Entry] = attrs.field(factory=list, init=False)
    _writing: bool = attrs.field(default=False, init=False)

    async def put(self, rows: list[dict[str, Any]]) -> list[str]:
        entry = _Entry(rows)
        self._pending.append(entry)
        try:
            while entry.ids is None and entry.error is None:
                if not self._writing:
                    await self._flush()
                else:
                    await entry.wake.wait()
                    entry.wake = anyio.Event()
        except BaseException:  # cancelled while waiting: leave, and never strand the others
            if entry in self._pending:
                self._pending.remove(entry)
            if not self._writing and self._pending:
                self._pending[0].wake.set()
            raise
        if entry.error is not None:
            raise entry.error
        assert entry.ids is not None
        return entry.ids

    async def _flush(self) -> None:
        self._writing = True
        batch, self._pending = self._pending, []
        try:
            await self._offload(self._settle, batch)
        finally:
            self._writing = False
            for done in batch:
                done.wake.set()
            if self._pending:
                self._pending[0].wake.set()

    def _settle(self, batch: list[_Entry]) -> None:
        """In the worker thread: one write for the whole batch, then each entry's share (set
        here, so a writer cancelled while the thread runs still settles every entry)."""
        try:
            ids = self._write([row for entry in batch for row in entry.rows])
        except Exception as exc:  # a failed write fails every caller of its batch
            for entry in batch:
                entry.error = exc
            return
        start = 0
        for entry in batch:
            entry.ids, start = ids[start:start + len(entry.rows)], start + len(entry.rows)
