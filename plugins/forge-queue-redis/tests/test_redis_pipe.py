"""The pipelined script connection: concurrent calls, script reloads, lost connections, retries."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import anyio
import pytest
import redis
from forge_queue_redis import RedisConfig, RedisQueue
from forge_queue_redis.server import RedisServer

from forge_core.abc import NewItem
from forge_core.exceptions import NotFound

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

_prefixes = itertools.count()


@pytest.fixture
async def queue(redis_server: RedisServer) -> AsyncIterator[RedisQueue]:
    q = RedisQueue(RedisConfig(url=redis_server.url, prefix=f"p{next(_prefixes)}:"))
    yield q
    await q.aclose()


class TestPipe:
    """Script calls over the queue's own pipelined connection."""

    async def test_concurrent_puts_share_one_connection_and_each_gets_its_own_id(
            self, queue: RedisQueue) -> None:
        """Two hundred puts in flight at once each return the id of their own stored item."""
        got: dict[int, str] = {}

        async def put(i: int) -> None:
            got[i] = await queue.put(NewItem(kind="k", payload=i))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(put, i)
        assert len(set(got.values())) == 200
        for i, item_id in got.items():
            assert (await queue.get(item_id)).payload == i

    async def test_scripts_are_reloaded_after_the_server_forgets_them(
            self, queue: RedisQueue, redis_server: RedisServer) -> None:
        """After SCRIPT FLUSH (as after a restart) the next put loads its script and succeeds."""
        await queue.put(NewItem(kind="k"))
        redis.Redis.from_url(redis_server.url).script_flush()
        item_id = await queue.put(NewItem(kind="k", payload="after"))
        assert (await queue.get(item_id)).payload == "after"

    async def test_a_killed_connection_is_replaced(self, queue: RedisQueue,
                                                   redis_server: RedisServer) -> None:
        """When Redis drops every client, the next call reconnects and succeeds."""
        await queue.put(NewItem(kind="k"))
        redis.Redis.from_url(redis_server.url).client_kill_filter(_type="normal",
                                                                   skipme=True)
        item_id = await queue.put(NewItem(kind="k", payload=2))
        assert (await queue.get(item_id)).payload == 2

    async def test_a_put_resent_with_the_same_id_stores_one_item(self, queue: RedisQueue) -> None:
        """A put retried after its reply was lost carries the same id and adds nothing."""
        args = [1, "0123abcd", "k", "null", 3, 5, 0.0, "", "", "[]"]
        first = await queue._script("PUT", *args)
        again = await queue._script("PUT", *args)
        assert first == again == [b"0123abcd"]
        assert (await queue.stats()).by_state == {"pending": 1}

    async def test_error_replies_map_to_forge_errors(self, queue: RedisQueue) -> None:
        """A script's error reply arrives as the Forge error it names."""
        with pytest.raises(NotFound):
            await queue.cancel("no-such-item")

    async def test_a_waiting_consumer_reserves_after_the_server_forgot_its_script(
            self, queue: RedisQueue, redis_server: RedisServer) -> None:
        """A reserve that follows a wake-up still succeeds when the scripts were flushed."""
        async with anyio.create_task_group() as tg:
            got: list[str] = []

            async def consume() -> None:
                lease = await queue.reserve_wait("c", 30.0, timeout=10.0)
                assert lease is not None
                got.append(lease.item.id)

            tg.start_soon(consume)
            await anyio.sleep(0.2)
            redis.Redis.from_url(redis_server.url).script_flush()
            item_id = await queue.put(NewItem(kind="k"))
        assert got == [item_id]

    async def test_waiting_on_an_unknown_item_raises_not_found(self, queue: RedisQueue) -> None:
        """wait() on an id the queue never held says so instead of blocking."""
        with pytest.raises(NotFound):
            await queue.wait("no-such-item", timeout=30.0)

    async def test_wait_returns_an_item_finished_before_the_wait_began(
            self, queue: RedisQueue) -> None:
        """An item acked before wait() is called comes back done with its result."""
        item_id = await queue.put(NewItem(kind="k"))
        lease = await queue.reserve("c", 30.0)
        assert lease is not None
        await queue.ack(lease, {"ok": 1})
        item = await queue.wait(item_id, timeout=30.0)
        assert (item.state, item.result) == ("done", {"ok": 1})
