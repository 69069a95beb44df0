"""The sqlite queue passes the conformance suite and is safe across OS processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forge_core.abc import NewItem, Queue
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
