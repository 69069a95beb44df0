"""The Queue interface: durable work items for long-lived agents.

At-least-once delivery with leases. Each reservation carries a fencing ``token``;
:meth:`Queue.ack`, :meth:`Queue.nack`, :meth:`Queue.extend` and :meth:`Queue.checkpoint`
succeed only with the item's current token, so a holder whose lease expired and was
reclaimed can never complete or fail work now handed to someone else
(:class:`~forge_core.exceptions.LeaseLost`). Times are Unix seconds (``time.time()``).
Waiting is built in: :meth:`Queue.reserve_wait` and :meth:`Queue.wait` sleep on narrow hooks
that a backend overrides to wake the moment work arrives or an item finishes.
"""

from __future__ import annotations

import abc
import builtins
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import anyio
import attrs

from ..exceptions import LeaseLost
from ._common import Availability

__all__ = ["ItemState", "Lease", "NewItem", "Queue", "QueueItem", "QueueStats"]

ItemState = Literal["pending", "reserved", "done", "dead", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "dead", "cancelled"})


def _check_priority(_: object, __: object, value: int) -> None:
    if not 1 <= value <= 5:
        raise ValueError(f"priority must be 1 (highest) to 5 (lowest), not {value}")


@attrs.frozen(kw_only=True)
class NewItem:
    """A work item to put on a queue. ``payload`` must be JSON-serialisable."""

    kind: str
    payload: Any = None
    priority: int = attrs.field(default=3, validator=_check_priority)
    delay: float = 0.0
    run_at: float | None = None
    """Absolute time before which it is not delivered (wins over ``delay``)."""
    key: str | None = None
    """Idempotency key: a second put with the same key is a no-op returning the first id."""
    max_deliveries: int = 5
    tags: tuple[str, ...] = ()
    """An item with tags goes only to consumers holding all of them."""


@attrs.frozen(kw_only=True)
class QueueItem:
    """A work item as the queue holds it."""

    id: str
    kind: str
    payload: Any
    priority: int
    state: ItemState
    deliveries: int
    max_deliveries: int
    created_at: float
    run_at: float
    key: str | None = None
    tags: tuple[str, ...] = ()
    checkpoint: Any = None
    result: Any = None
    last_error: str | None = None
    consumer: str | None = None
    lease_expires_at: float | None = None
    token: int = 0
    finished_at: float | None = None


@attrs.frozen(kw_only=True)
class Lease:
    """The right to work on one item until ``expires_at``, proven by ``token``."""

    item: QueueItem
    token: int
    consumer: str
    expires_at: float


@attrs.frozen(kw_only=True)
class QueueStats:
    by_state: Mapping[str, int]
    pending_by_priority: Mapping[int, int]
    oldest_pending_age: float | None
    """Seconds the oldest deliverable pending item has waited, ``None`` when none waits."""


class Queue(abc.ABC):
    """Durable, shared work items. Backends: ``sqlite`` (core), ``redis`` (plugin)."""

    name: ClassVar[str] = ""

    @classmethod
    def available(cls) -> Availability:
        return Availability.yes()

    @abc.abstractmethod
    async def put(self, item: NewItem) -> str:
        """Store ``item`` durably before returning its id. A known idempotency key returns the
        existing id and changes nothing."""

    async def put_many(self, items: Sequence[NewItem]) -> list[str]:
        """Put many items; backends override this with one round trip / transaction."""
        return [await self.put(item) for item in items]

    @abc.abstractmethod
    async def reserve(
        self,
        consumer: str,
        lease: float,
        *,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        exclude_kinds: Sequence[str] = (),
    ) -> Lease | None:
        """Lease the most urgent deliverable item (priority, then run_at, then age), or ``None``.

        ``kinds`` keeps only those kinds, ``exclude_kinds`` drops some (the agent manager's
        open circuit breakers), and an item with tags goes only to a consumer holding all of
        them. Expired leases are reclaimed first: their items become deliverable again (or dead
        once ``max_deliveries`` is reached). Each reservation gets a new, larger fencing token.
        Never blocks: see :meth:`reserve_wait`."""

    @abc.abstractmethod
    async def ack(self, lease: Lease, result: Any = None) -> None:
        """Mark the item done with ``result``. :class:`LeaseLost` if the token is stale."""

    async def settle(self, acks: Sequence[tuple[Lease, Any]], consumer: str, lease: float, *,
                     want: int, kinds: Sequence[str] | None = None, tags: Sequence[str] = (),
                     exclude_kinds: Sequence[str] = ()) -> tuple[builtins.list[str],
                                                               builtins.list[Lease]]:
        """Ack each ``(lease, result)`` of ``acks``, then reserve up to ``want`` more items
        (never blocking), in one round trip where the backend can: how a busy agent hands in
        results and takes its next tasks. Returns the ids whose ack was refused (lease lost)
        and the new leases."""
        lost: builtins.list[str] = []
        for done, result in acks:
            try:
                await self.ack(done, result)
            except LeaseLost:
                lost.append(done.item.id)
        taken: builtins.list[Lease] = []
        while len(taken) < want:
            got = await self.reserve(consumer, lease, kinds=kinds, tags=tags,
                                     exclude_kinds=exclude_kinds)
            if got is None:
                break
            taken.append(got)
        return lost, taken

    @abc.abstractmethod
    async def nack(self, lease: Lease, error: str, *, retry_at: float | None = None,
                   final: bool = False) -> None:
        """Record a failed delivery; deliver again at ``retry_at`` (default now) or move it to
        the dead letters when ``max_deliveries`` is spent or ``final`` is true (an error not
        worth retrying). :class:`LeaseLost` if stale."""

    @abc.abstractmethod
    async def extend(self, lease: Lease, seconds: float) -> Lease:
        """Heartbeat: push the lease's expiry ``seconds`` from now. :class:`LeaseLost` if stale."""

    @abc.abstractmethod
    async def checkpoint(self, lease: Lease, data: Any) -> None:
        """Save progress; the next delivery's ``item.checkpoint`` carries it."""

    @abc.abstractmethod
    async def cancel(self, item_id: str) -> bool:
        """Cancel a pending or reserved item; ``False`` when it had already finished."""

    @abc.abstractmethod
    async def get(self, item_id: str) -> QueueItem:
        """One item; :class:`~forge_core.exceptions.NotFound` if unknown."""

    @abc.abstractmethod
    async def list(
        self, *, state: ItemState | None = None, kind: str | None = None, limit: int = 100
    ) -> list[QueueItem]:
        """Items, newest first, optionally filtered."""

    @abc.abstractmethod
    async def requeue(self, item_id: str) -> None:
        """Make a dead or cancelled item pending again with a fresh delivery budget."""

    @abc.abstractmethod
    async def stats(self) -> QueueStats:
        """Depth by state and by priority, and the oldest waiting age."""

    @abc.abstractmethod
    async def set_rate_limit(self, kind: str, per_second: float | None, burst: int = 1) -> None:
        """Deliver at most ``per_second`` items of ``kind`` (bursts of ``burst``), shared by
        every client of the queue; ``None`` removes the limit."""

    async def dead_letters(self, limit: int = 100) -> builtins.list[QueueItem]:
        """Items that spent their deliveries."""
        return await self.list(state="dead", limit=limit)

    # -- waiting: concrete loops over narrow hooks ---------------------------------------------
    async def reserve_wait(
        self,
        consumer: str,
        lease: float,
        *,
        timeout: float,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        exclude_kinds: Sequence[str] = (),
        recheck: float = 1.0,
    ) -> Lease | None:
        """:meth:`reserve`, waiting up to ``timeout`` seconds for work, or ``None``.

        Between attempts it sleeps in :meth:`wait_for_work`, at most ``recheck`` seconds at a
        time, so items that become due by the clock (delays, expired leases) are seen too."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.reserve(consumer, lease, kinds=kinds, tags=tags,
                                     exclude_kinds=exclude_kinds)
            left = deadline - time.monotonic()
            if got is not None or left <= 0:
                return got
            await self.wait_for_work(min(left, recheck), kinds=kinds)

    async def wait(self, item_id: str, *, timeout: float | None = None) -> QueueItem:
        """The item once it is done, dead or cancelled, or as it is when ``timeout`` passes.
        :class:`~forge_core.exceptions.NotFound` if unknown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            item = await self.get(item_id)
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if item.state in FINISHED or left <= 0:
                return item
            await self.wait_for_finish(item_id, min(left, 1.0))

    async def wait_for_work(self, timeout: float, *, kinds: Sequence[str] | None = None) -> None:
        """Hook: return when new work of ``kinds`` may be deliverable, or after ``timeout``.
        Returning early by mistake is harmless. The default sleeps a short while; backends
        override it to wake on a put (Redis: BLPOP on a wake list; sqlite: a commit)."""
        await anyio.sleep(min(timeout, 0.01))

    async def wait_for_finish(self, item_id: str, timeout: float) -> None:
        """Hook: return when ``item_id`` may have finished, or after ``timeout``. The default
        sleeps a short while; backends override it to wake on the finishing transition."""
        await anyio.sleep(min(timeout, 0.01))

    async def aclose(self) -> None:
        """Release connections."""
