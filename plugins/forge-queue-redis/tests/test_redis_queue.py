"""The redis queue passes the conformance suite against a real redis-server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from forge_queue_redis import RedisConfig, RedisQueue
from forge_queue_redis.server import RedisServer

from forge_core.abc import Queue
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
