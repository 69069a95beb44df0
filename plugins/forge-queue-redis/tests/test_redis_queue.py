"""The redis queue passes the conformance suite against a real redis-server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import anyio
import pytest
from forge_queue_redis import RedisConfig, RedisQueue
from forge_queue_redis.server import RedisServer

from forge_core.abc import NewItem, Queue
from forge_core.testing.queue import QueueConformance

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

_prefixes = itertools.count()


class TestRedisQueue(QueueConformance):
    """The redis backend against the shared queue conformance suite."""

    @pytest.fixture
    async def queue(self, redis_server: RedisServer) -> AsyncIterator[Queue]:
        q = RedisQueue(RedisConfig(url=redis_server.url, prefix=f"t{next(_prefixes)}:"))
        yield q
        await q.aclose()


class TestRedisQueueUnixSocket(QueueConformance):
    """The redis backend over a Unix socket, where every call goes through redis-py rather than
    the pipelined TCP connection, against the same conformance suite."""

    @pytest.fixture
    async def queue(self, redis_server: RedisServer) -> AsyncIterator[Queue]:
        url = f"unix://{redis_server.unixsocket}?db=0"
        q = RedisQueue(RedisConfig(url=url, prefix=f"u{next(_prefixes)}:"))
        assert q._pipe is None
        yield q
        await q.aclose()


async def test_concurrent_puts_share_script_runs(redis_server: RedisServer) -> None:
    """Fifty puts started together reach Redis as two PUT script runs (the first caller's and
    everyone who arrived while it was in flight), counted by Redis itself."""
    import redis

    q = RedisQueue(RedisConfig(url=redis_server.url, prefix=f"g{next(_prefixes)}:"))
    await q.put(NewItem(kind="k"))  # loads the scripts, so the count below is only puts
    client = redis.Redis.from_url(redis_server.url)
    client.config_resetstat()

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(q.put, NewItem(kind="k", payload=i))
    calls = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert calls == 2
    assert (await q.stats()).by_state.get("pending") == 51
    client.close()
    await q.aclose()
