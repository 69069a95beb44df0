"""``QueueConformance``: the behaviour every :class:`~forge_core.abc.Queue` backend must show.

Subclass it in a backend's tests and override the ``queue`` fixture to yield a fresh, empty
queue; every test then runs against that backend.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from ..abc import Lease, NewItem, Queue, QueueItem
from ..exceptions import ForgeError, LeaseLost, NotFound

__all__ = ["QueueConformance"]


async def _reserve(queue: Queue, consumer: str = "c1", lease: float = 30.0, **kw: Any) -> Lease:
    got = await queue.reserve(consumer, lease, **kw)
    assert got is not None, "expected a deliverable item"
    return got


@pytest.mark.anyio
class QueueConformance:
    """Conformance tests for a Queue backend; override the ``queue`` fixture."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def queue(self) -> AsyncIterator[Queue]:
        pytest.fail("subclass QueueConformance and override the `queue` fixture")
        yield  # pragma: no cover  # noqa: PT022

    # -- put --------------------------------------------------------------------------------
    async def test_put_stores_a_pending_item(self, queue: Queue) -> None:
        """A put item comes back from get as pending with what was put."""
        item_id = await queue.put(NewItem(kind="k", payload={"a": [1, 2]}, priority=2, tags=("x",)))
        item = await queue.get(item_id)
        assert (item.kind, item.payload, item.priority) == ("k", {"a": [1, 2]}, 2)
        assert item.state == "pending"
        assert (item.deliveries, item.tags, item.token) == (0, ("x",), 0)

    async def test_put_many_returns_ids_in_order(self, queue: Queue) -> None:
        """put_many stores every item and returns their ids in input order."""
        ids = await queue.put_many([NewItem(kind="k", payload=i) for i in range(50)])
        assert len(set(ids)) == 50
        assert [(await queue.get(i)).payload for i in ids] == list(range(50))

    async def test_duplicate_key_is_a_no_op(self, queue: Queue) -> None:
        """A second put with a known idempotency key returns the first id and changes nothing."""
        first = await queue.put(NewItem(kind="k", payload=1, key="once"))
        again = await queue.put(NewItem(kind="k", payload=2, key="once"))
        batch = await queue.put_many([NewItem(kind="k", payload=3, key="once")])
        assert again == first
        assert batch == [first]
        assert (await queue.get(first)).payload == 1
        assert (await queue.stats()).by_state.get("pending") == 1

    async def test_duplicate_key_after_completion_is_still_a_no_op(self, queue: Queue) -> None:
        """A key stays known after its item is done, so a replayed put does not run twice."""
        first = await queue.put(NewItem(kind="k", key="done-once"))
        await queue.ack(await _reserve(queue))
        assert await queue.put(NewItem(kind="k", key="done-once")) == first
        assert await queue.reserve("c", 30) is None

    async def test_concurrent_puts_each_get_their_own_item(self, queue: Queue) -> None:
        """Puts racing each other (a backend may write them together) each get the id of their
        own item, and racing puts with one key get one item."""
        ids: dict[int, str] = {}

        async def put(i: int) -> None:
            ids[i] = await queue.put(NewItem(kind="k", payload=i, key=f"race-{i % 20}"))

        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(put, i)
        assert len(set(ids.values())) == 20
        assert all(ids[i] == ids[i % 20] for i in range(30))
        for i in range(20):  # which racer of a key wins is not specified; one of them does
            assert (await queue.get(ids[i])).payload in {i, i + 20}

    # -- reserve ----------------------------------------------------------------------------
    async def test_reserve_on_empty_queue_returns_none(self, queue: Queue) -> None:
        """Nothing to deliver gives None."""
        assert await queue.reserve("c1", 30) is None

    async def test_reserve_orders_by_priority_then_run_at_then_age(self, queue: Queue) -> None:
        """The most urgent item goes first: priority, then run_at, then age."""
        now = time.time()
        await queue.put(NewItem(kind="k", payload="p3-old", priority=3, run_at=now - 5))
        await queue.put(NewItem(kind="k", payload="p3-a", priority=3, run_at=now - 1))
        await queue.put(NewItem(kind="k", payload="p3-b", priority=3, run_at=now - 1))
        await queue.put(NewItem(kind="k", payload="p1", priority=1))
        await queue.put(NewItem(kind="k", payload="p5", priority=5, run_at=now - 100))
        order = [(await _reserve(queue)).item.payload for _ in range(5)]
        assert order == ["p1", "p3-old", "p3-a", "p3-b", "p5"]

    async def test_delayed_item_waits_until_due(self, queue: Queue) -> None:
        """An item with a delay is not delivered before its time, then is."""
        await queue.put(NewItem(kind="k", payload="later", delay=0.4))
        await queue.put(NewItem(kind="k", payload="future", run_at=time.time() + 3600, delay=0))
        assert await queue.reserve("c1", 30) is None
        await anyio.sleep(0.5)
        assert (await _reserve(queue)).item.payload == "later"
        assert await queue.reserve("c1", 30) is None

    async def test_reserve_filters_by_kind(self, queue: Queue) -> None:
        """A consumer asking for kinds gets only those kinds."""
        await queue.put(NewItem(kind="a", priority=1))
        await queue.put(NewItem(kind="b", priority=5))
        assert (await _reserve(queue, kinds=["b"])).item.kind == "b"
        assert await queue.reserve("c1", 30, kinds=["b"]) is None

    async def test_tagged_items_go_only_to_consumers_with_every_tag(self, queue: Queue) -> None:
        """Tags route: an item goes only to a consumer holding all its tags."""
        await queue.put(NewItem(kind="k", payload="gpu", tags=("gpu", "big"), priority=1))
        await queue.put(NewItem(kind="k", payload="any", priority=5))
        assert (await _reserve(queue, tags=["gpu"])).item.payload == "any"
        assert await queue.reserve("c", 30, tags=["gpu"]) is None
        assert await queue.reserve("c", 30) is None
        assert (await _reserve(queue, tags=["big", "gpu", "x"])).item.payload == "gpu"

    async def test_reservation_sets_lease_fields_and_counts_delivery(self, queue: Queue) -> None:
        """A reservation records consumer, expiry, token and one more delivery."""
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue, consumer="alice", lease=10)
        item = await queue.get(lease.item.id)
        assert (item.state, item.consumer, item.deliveries, item.token) == (
            "reserved", "alice", 1, lease.token)
        assert lease.expires_at == pytest.approx(time.time() + 10, abs=5)

    async def test_tokens_increase_with_every_reservation(self, queue: Queue) -> None:
        """Fencing tokens are strictly increasing across reservations of any item."""
        await queue.put_many([NewItem(kind="k") for _ in range(3)])
        tokens = [(await _reserve(queue)).token for _ in range(3)]
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue)
        await queue.nack(lease, "again")
        tokens += [lease.token, (await _reserve(queue)).token]
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == len(tokens)

    async def test_concurrent_reservers_never_share_an_item(self, queue: Queue) -> None:
        """Many concurrent reserve calls hand each item to exactly one consumer."""
        await queue.put_many([NewItem(kind="k", payload=i) for i in range(20)])
        got: list[Any] = []

        async def consume(name: str) -> None:
            while (lease := await queue.reserve(name, 30)) is not None:
                got.append(lease.item.payload)

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(consume, f"c{n}")
        assert sorted(got) == list(range(20))

    # -- ack / nack / extend / checkpoint -----------------------------------------------------
    async def test_ack_marks_done_with_result(self, queue: Queue) -> None:
        """ack with the current token completes the item and stores the result."""
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue)
        await queue.ack(lease, {"answer": 42})
        item = await queue.get(lease.item.id)
        assert (item.state, item.result) == ("done", {"answer": 42})
        assert item.finished_at is not None
        assert await queue.reserve("c1", 30) is None

    async def test_nack_redelivers_at_retry_time(self, queue: Queue) -> None:
        """nack records the error and delivers again only from retry_at."""
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue)
        await queue.nack(lease, "boom", retry_at=time.time() + 0.4)
        item = await queue.get(lease.item.id)
        assert (item.state, item.last_error) == ("pending", "boom")
        assert await queue.reserve("c1", 30) is None
        await anyio.sleep(0.5)
        again = await _reserve(queue)
        assert (again.item.id, again.item.deliveries) == (lease.item.id, 2)

    async def test_nack_after_max_deliveries_dead_letters(self, queue: Queue) -> None:
        """The last allowed failed delivery moves the item to the dead letters."""
        await queue.put(NewItem(kind="k", max_deliveries=2))
        for _ in range(2):
            await queue.nack(await _reserve(queue), "poison")
        dead: list[QueueItem] = list(await queue.dead_letters())
        assert [(d.state, d.deliveries, d.last_error) for d in dead] == [("dead", 2, "poison")]
        assert await queue.reserve("c1", 30) is None

    async def test_expired_lease_is_reclaimed_and_stale_holder_refused(self, queue: Queue) -> None:
        """An expired lease is handed on; the stale token's ack, nack, extend, checkpoint fail."""
        item_id = await queue.put(NewItem(kind="k"))
        old = await _reserve(queue, consumer="slow", lease=0.2)
        await anyio.sleep(0.35)
        new = await _reserve(queue, consumer="fast")
        assert (new.item.id, new.item.deliveries) == (item_id, 2)
        assert new.token > old.token
        with pytest.raises(LeaseLost):
            await queue.ack(old, "late")
        with pytest.raises(LeaseLost):
            await queue.nack(old, "late")
        with pytest.raises(LeaseLost):
            await queue.extend(old, 30)
        with pytest.raises(LeaseLost):
            await queue.checkpoint(old, {"step": 9})
        await queue.ack(new, "fresh")
        assert (await queue.get(item_id)).result == "fresh"

    async def test_expired_lease_at_max_deliveries_goes_dead(self, queue: Queue) -> None:
        """An item whose last delivery's lease expires is dead-lettered, not redelivered."""
        item_id = await queue.put(NewItem(kind="k", max_deliveries=1))
        await _reserve(queue, lease=0.1)
        await anyio.sleep(0.25)
        assert await queue.reserve("c2", 30) is None
        assert (await queue.get(item_id)).state == "dead"

    async def test_extend_keeps_the_lease(self, queue: Queue) -> None:
        """A heartbeat pushes the expiry so the item is not reclaimed."""
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue, lease=0.3)
        lease = await queue.extend(lease, 30)
        assert lease.expires_at > time.time() + 20
        await anyio.sleep(0.4)
        assert await queue.reserve("c2", 30) is None
        await queue.ack(lease)

    async def test_checkpoint_comes_back_on_next_delivery(self, queue: Queue) -> None:
        """A saved checkpoint is on the item at its next delivery."""
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue)
        await queue.checkpoint(lease, {"done": 3})
        await queue.nack(lease, "interrupted")
        again = await _reserve(queue)
        assert again.item.checkpoint == {"done": 3}

    async def test_repeated_ack_of_the_same_delivery_is_accepted(self, queue: Queue) -> None:
        """An ack retried with the same token after success does not fail."""
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue)
        await queue.ack(lease, 1)
        await queue.ack(lease, 1)
        assert (await queue.get(lease.item.id)).state == "done"

    # -- cancel / requeue / get / list ----------------------------------------------------------
    async def test_cancel_pending_and_finished(self, queue: Queue) -> None:
        """Cancelling a pending item stops its delivery; a finished one answers False."""
        pending = await queue.put(NewItem(kind="k", priority=1))
        done = await queue.put(NewItem(kind="k", priority=5))
        assert await queue.cancel(pending) is True
        await queue.ack(await _reserve(queue))
        assert await queue.cancel(done) is False
        assert (await queue.get(pending)).state == "cancelled"

    async def test_cancel_reserved_refuses_the_holder(self, queue: Queue) -> None:
        """A cancelled reserved item can no longer be acked by its holder."""
        await queue.put(NewItem(kind="k"))
        lease = await _reserve(queue)
        assert await queue.cancel(lease.item.id) is True
        with pytest.raises(LeaseLost):
            await queue.ack(lease)

    async def test_requeue_dead_gives_a_fresh_budget(self, queue: Queue) -> None:
        """A dead item requeued is pending with no deliveries spent and is delivered again."""
        item_id = await queue.put(NewItem(kind="k", max_deliveries=1))
        await queue.nack(await _reserve(queue), "x")
        await queue.requeue(item_id)
        item = await queue.get(item_id)
        assert (item.state, item.deliveries) == ("pending", 0)
        assert (await _reserve(queue)).item.id == item_id

    async def test_requeue_refuses_a_live_item(self, queue: Queue) -> None:
        """Only dead or cancelled items can be requeued."""
        item_id = await queue.put(NewItem(kind="k"))
        with pytest.raises(ForgeError):
            await queue.requeue(item_id)

    async def test_unknown_ids_raise_not_found(self, queue: Queue) -> None:
        """get, cancel and requeue of an unknown id raise NotFound."""
        for call in (queue.get, queue.cancel, queue.requeue):
            with pytest.raises(NotFound):
                await call("0" * 24)

    async def test_list_is_newest_first_and_filters(self, queue: Queue) -> None:
        """list returns newest first, filtered by state and kind, up to limit."""
        ids = [await queue.put(NewItem(kind="a" if i % 2 else "b", payload=i)) for i in range(6)]
        await queue.ack(await _reserve(queue, kinds=["b"]))
        assert [i.id for i in await queue.list()] == ids[::-1]
        assert [i.payload for i in await queue.list(kind="a", limit=2)] == [5, 3]
        assert [i.payload for i in await queue.list(state="done")] == [0]
        assert [i.payload for i in await queue.list(state="pending", kind="b")] == [4, 2]

    async def test_stats_count_states_priorities_and_age(self, queue: Queue) -> None:
        """stats gives depth by state and priority and the oldest waiting age."""
        assert (await queue.stats()).oldest_pending_age is None
        await queue.put(NewItem(kind="k", priority=1, run_at=time.time() - 10))
        await queue.put_many([NewItem(kind="k", priority=4) for _ in range(3)])
        await queue.put(NewItem(kind="k", priority=2, delay=3600))
        await queue.ack(await _reserve(queue))
        stats = await queue.stats()
        assert dict(stats.by_state) == {"done": 1, "pending": 4}
        assert dict(stats.pending_by_priority) == {2: 1, 4: 3}
        assert stats.oldest_pending_age is not None
        assert 0 <= stats.oldest_pending_age < 60

    async def test_rate_limit_holds_back_only_its_kind(self, queue: Queue) -> None:
        """A per-kind rate limit delivers its burst, then holds that kind while others flow."""
        await queue.set_rate_limit("slow", 0.001, burst=2)
        await queue.put_many([NewItem(kind="slow", priority=1) for _ in range(4)])
        await queue.put_many([NewItem(kind="fast", priority=5) for _ in range(3)])
        kinds = []
        while (lease := await queue.reserve("c", 30)) is not None:
            kinds.append(lease.item.kind)
        assert kinds == ["slow", "slow", "fast", "fast", "fast"]
        await queue.set_rate_limit("slow", None)
        assert (await _reserve(queue)).item.kind == "slow"

    async def test_exclude_kinds_skips_them(self, queue: Queue) -> None:
        """reserve(exclude_kinds=…) never delivers those kinds."""
        await queue.put(NewItem(kind="open", priority=1))
        await queue.put(NewItem(kind="ok", priority=5))
        assert (await _reserve(queue, exclude_kinds=["open"])).item.kind == "ok"
        assert await queue.reserve("c", 30, exclude_kinds=["open"]) is None

    async def test_final_nack_dead_letters_at_once(self, queue: Queue) -> None:
        """nack(final=True) dead-letters the item whatever its budget."""
        item_id = await queue.put(NewItem(kind="k", max_deliveries=9))
        await queue.nack(await _reserve(queue), "not retryable", final=True)
        assert (await queue.get(item_id)).state == "dead"

    async def test_tag_filter_finds_an_item_behind_many_for_others(self, queue: Queue) -> None:
        """A tagged consumer gets its item even when hundreds of more urgent ones need other tags."""
        await queue.put_many([NewItem(kind="k", priority=1, tags=("gpu",)) for _ in range(300)])
        mine = await queue.put(NewItem(kind="k", priority=5, tags=("cpu",)))
        assert (await _reserve(queue, tags=["cpu"])).item.id == mine

    async def test_settle_acks_and_takes_in_one_step(self, queue: Queue) -> None:
        """settle acks finished leases, reports stale ones, and leases up to `want` more."""
        await queue.put_many([NewItem(kind="k", payload=i) for i in range(2)])
        first, second = await _reserve(queue, lease=0.2), await _reserve(queue)
        await anyio.sleep(0.3)  # first's lease expires; the next reserve reclaims it
        lost, taken = await queue.settle([(second, "ok")], "c1", 30, want=1)
        assert (lost, [t.item.id for t in taken]) == ([], [first.item.id])
        await queue.put_many([NewItem(kind="k", payload=i) for i in range(2, 5)])
        lost, taken = await queue.settle([(first, "late"), (taken[0], "fresh")], "c1", 30,
                                         want=10)
        assert lost == [first.item.id]
        assert sorted(t.item.payload for t in taken) == [2, 3, 4]
        assert (await queue.get(first.item.id)).result == "fresh"
        assert (await queue.get(second.item.id)).state == "done"

    # -- waiting ------------------------------------------------------------------------------
    async def test_reserve_wait_wakes_on_a_put(self, queue: Queue) -> None:
        """A consumer blocked in reserve_wait gets an item put while it waits."""
        got: list[Lease | None] = []

        async def consume() -> None:
            got.append(await queue.reserve_wait("c", 30, timeout=20, kinds=["k"]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.sleep(0.2)
            item_id = await queue.put(NewItem(kind="k"))
        assert got[0] is not None
        assert got[0].item.id == item_id

    async def test_reserve_wait_times_out_with_none(self, queue: Queue) -> None:
        """With nothing to deliver reserve_wait gives None once its timeout passes."""
        await queue.put(NewItem(kind="other"))
        assert await queue.reserve_wait("c", 30, timeout=0.2, kinds=["k"]) is None

    async def test_wait_returns_the_finished_item(self, queue: Queue) -> None:
        """wait blocks until the item is acked and returns it with its result."""
        item_id = await queue.put(NewItem(kind="k"))

        async def work() -> None:
            await anyio.sleep(0.2)
            await queue.ack(await _reserve(queue), {"r": 1})

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            item = await queue.wait(item_id, timeout=20)
        assert (item.state, item.result) == ("done", {"r": 1})

    async def test_wait_gives_the_item_as_it_is_at_timeout(self, queue: Queue) -> None:
        """wait with a timeout returns the unfinished item when time runs out."""
        item_id = await queue.put(NewItem(kind="k"))
        assert (await queue.wait(item_id, timeout=0.1)).state == "pending"
        with pytest.raises(NotFound):
            await queue.wait("0" * 24, timeout=0.1)
