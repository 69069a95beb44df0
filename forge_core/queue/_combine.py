"""Group commit for puts: calls that arrive while one write is in flight wait and go in the
next write together, so N concurrent callers pay one fsync (sqlite) or one script run (Redis)
instead of N.

Each caller gets its own ids or its own error. A write, once started, is shielded from
cancellation and settles every caller of its batch, so a cancelled writer never leaves rows
written but unanswered (which would send them again); a caller cancelled while it waits
leaves its rows out and hands the writer's role on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
import attrs

__all__ = ["PutCombiner"]

Row = TypeVar("Row")


@attrs.define
class _Entry(Generic[Row]):
    rows: list[Row]
    ids: list[str] | None = None
    error: Exception | None = None
    wake: anyio.Event = attrs.field(factory=anyio.Event)


@attrs.define
class PutCombiner(Generic[Row]):
    """Calls ``write(rows) -> ids`` (one id per row, in order) once for the rows of every
    caller waiting at that moment. One caller at a time writes; when its batch is done it
    hands the role to the first caller that arrived meanwhile, so nobody waits for more than
    the write in progress and its own."""

    _write: Callable[[list[Row]], Awaitable[list[str]]]
    _pending: list[_Entry[Row]] = attrs.field(factory=list, init=False)
    _writing: bool = attrs.field(default=False, init=False)

    async def put(self, rows: list[Row]) -> list[str]:
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
            with anyio.CancelScope(shield=True):
                await self._settle(batch)
        finally:
            self._writing = False
            for done in batch:
                done.wake.set()
            if self._pending:
                self._pending[0].wake.set()

    async def _settle(self, batch: list[_Entry[Row]]) -> None:
        """One write for the whole batch, then each entry's share of the ids."""
        try:
            ids = await self._write([row for entry in batch for row in entry.rows])
        except Exception as exc:  # a failed write fails every caller of its batch
            for entry in batch:
                entry.error = exc
            return
        start = 0
        for entry in batch:
            entry.ids, start = ids[start:start + len(entry.rows)], start + len(entry.rows)
