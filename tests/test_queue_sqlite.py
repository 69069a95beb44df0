"""The sqlite queue passes the conformance suite and is safe across OS processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from forge_core.abc import NewItem, Queue
from forge_core.exceptions import BackendUnavailable
from forge_core.queue.sqlite import SQLiteQueue
from forge_core.testing.queue import QueueConformance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

_CONSUMER = """
import anyio, json, sys
from forge_core.queue.sqlite import SQLiteQueue

async def main():
    q = SQLiteQueue(path=sys.argv[1])
    got = []
    while (lease := await q.reserve(sys.argv[2], 60)) is not None:
        got.append(lease.item.payload)
        await q.ack(lease)
    print(json.dumps(got))

anyio.run(main)
"""


class TestSQLiteQueue(QueueConformance):
    """The sqlite backend against the shared queue conformance suite."""

    @pytest.fixture
    async def queue(self, tmp_path: Path) -> AsyncIterator[Queue]:
        q = SQLiteQueue(path=tmp_path / "queue.db")
        yield q
        await q.aclose()


class TestSQLiteQueueAcrossProcesses:
    """Several OS processes share one sqlite queue file."""

    async def test_processes_never_get_the_same_item(self, tmp_path: Path) -> None:
        """Four processes draining one queue together deliver every item exactly once."""
        path = tmp_path / "queue.db"
        q = SQLiteQueue(path=path)
        await q.put_many([NewItem(kind="k", payload=i) for i in range(400)])
        procs = [subprocess.Popen([sys.executable, "-c", _CONSUMER, str(path), f"p{n}"],
                                  stdout=subprocess.PIPE, text=True) for n in range(4)]
        got: list[int] = []
        for proc in procs:
            out, _ = proc.communicate(timeout=100)
            assert proc.returncode == 0
            got.extend(json.loads(out))
        assert sorted(got) == list(range(400))
        assert (await q.stats()).by_state == {"done": 400}
        await q.aclose()

    async def test_items_survive_reopening(self, tmp_path: Path) -> None:
        """What was put and acked is there when the database is opened again."""
        q = SQLiteQueue(path=tmp_path / "q.db")
        first = await q.put(NewItem(kind="k", payload="a"))
        lease = await q.reserve("c", 30)
        assert lease is not None
        await q.ack(lease, "r")
        second = await q.put(NewItem(kind="k", payload="b"))
        await q.aclose()
        again = SQLiteQueue(path=tmp_path / "q.db")
        assert (await again.get(first)).result == "r"
        assert (await again.get(second)).state == "pending"
        await again.aclose()


class TestSQLiteQueueGroupCommit:
    """Concurrent puts share transactions, and every caller still gets its own answer."""

    @staticmethod
    def commits(queue: SQLiteQueue) -> list[str]:
        """Every COMMIT the queue's write connection sends from now on (sqlite's own trace)."""
        seen: list[str] = []
        queue._connect().set_trace_callback(
            lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
        return seen

    async def test_concurrent_puts_share_commits(self, tmp_path: Path) -> None:
        """Fifty puts started together take two commits: the first caller's, and one for
        everyone who arrived while it wrote (what each caller gets back is the conformance
        suite's racing-puts test)."""
        q = SQLiteQueue(path=tmp_path / "queue.db")
        seen = self.commits(q)
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(q.put, NewItem(kind="k", payload=i))
        assert len(seen) == 2
        assert (await q.stats()).by_state.get("pending") == 50
        await q.aclose()

    async def test_a_failed_write_fails_every_caller_of_its_batch(self, tmp_path: Path) -> None:
        """When sqlite refuses the write (the connection set query-only), every concurrent
        caller gets BackendUnavailable, nothing is stored, and the next puts work again."""
        q = SQLiteQueue(path=tmp_path / "queue.db")
        conn = q._connect()
        conn.execute("PRAGMA query_only=1")
        errors: list[BaseException] = []

        async def put(i: int) -> None:
            try:
                await q.put(NewItem(kind="k", payload=i))
            except BackendUnavailable as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(put, i)
        assert len(errors) == 10
        assert "readonly" in str(errors[0])
        conn.execute("PRAGMA query_only=0")
        assert (await q.stats()).by_state.get("pending", 0) == 0
        await q.put(NewItem(kind="k", payload="after"))
        assert (await q.stats()).by_state.get("pending", 0) == 1
        await q.aclose()

    async def test_a_cancelled_caller_does_not_strand_the_others(self, tmp_path: Path) -> None:
        """A caller cancelled while it waits for the write in progress leaves its item out,
        and the callers behind it are still written."""
        q = SQLiteQueue(path=tmp_path / "queue.db")
        done: list[int] = []

        async def put(i: int) -> None:
            await q.put(NewItem(kind="k", payload=i))
            done.append(i)

        async def cancelled_put() -> None:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await q.put(NewItem(kind="k", payload="cancelled"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(put, 0)
            tg.start_soon(cancelled_put)
            for i in range(1, 5):
                tg.start_soon(put, i)
        assert sorted(done) == [0, 1, 2, 3, 4]
        payloads = {item.payload for item in await q.list()}
        assert payloads == {0, 1, 2, 3, 4}
        await q.aclose()
