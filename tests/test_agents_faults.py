"""Agents under faults, with real processes on the sqlite queue and on a real redis-server:
a manager frozen past its lease (SIGSTOP), an agent SIGKILLed mid-task, a poison task."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers import FORGE, PY

from forge_core.abc import NewItem, QueueItem
from forge_core.queue import open_queue

AGENT = """
import json, os, sys, time
name = os.environ["FORGE_AGENT_NAME"]
def note(*words):
    with open(os.environ["FAULT_LOG"], "a") as f:
        f.write(" ".join(map(str, words)) + "\\n")
for line in sys.stdin:
    task = json.loads(line)
    payload = task["payload"] or {}
    note("start", task["id"], task["delivery"], os.getpid(), name)
    if payload.get("crash"):
        sys.exit(3)
    time.sleep(payload.get("sleep", 0))
    note("end", task["id"], task["delivery"], os.getpid(), name)
    print(json.dumps({"type": "result", "ok": True, "result": {"by": name}}), flush=True)
"""


class Pools:
    """`forge agent start` processes running the fault agent, all stopped at the end."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.home = tmp_path / "home"
        self.log = tmp_path / "faults.log"
        self.log.touch()
        (tmp_path / "agent.py").write_text(AGENT)
        self.agent = tmp_path / "agent.py"
        self.url = url
        self.env = {**os.environ, "FORGE_HOME": str(self.home), "FORGE_QUEUE": url,
                    "FAULT_LOG": str(self.log)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *options: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*FORGE, "agent", "start", "--name", name, *options, "--",
                                 PY, str(self.agent)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def notes(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text().splitlines()]

    def state(self, agent: str) -> dict[str, Any]:
        path = self.home / "agents" / f"{agent}.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.send_signal(signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def pools(tmp_path: Path, queue_url: str) -> Iterator[Pools]:
    p = Pools(tmp_path, queue_url)
    yield p
    p.close()


def until(check: Callable[[], Any], what: str, limit: float = 60) -> Any:
    deadline = time.monotonic() + limit
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def queue_call(url: str, fn: Callable[..., Any]) -> Any:
    async def main() -> Any:
        queue = open_queue(url)
        try:
            return await fn(queue)
        finally:
            await queue.aclose()

    return anyio.run(main)


def put(url: str, *items: NewItem) -> list[str]:
    return list(queue_call(url, lambda q: q.put_many(items)))


def items(url: str, ids: list[str]) -> list[QueueItem]:
    async def get_all(q: Any) -> list[QueueItem]:
        return [await q.get(i) for i in ids]

    return list(queue_call(url, get_all))


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


class TestPartition:
    def test_a_frozen_agent_loses_its_task_and_its_late_ack_is_refused(
            self, pools: Pools) -> None:
        """SIGSTOP a manager and its agent past the lease: another agent reclaims and
        completes the task; after SIGCONT the frozen one's ack is refused."""
        frozen = pools.start("a", "--lease", "1")
        [item_id] = put(pools.url, NewItem(kind="k", payload={"sleep": 1.0}))
        until(lambda: any(n[:2] == ["start", item_id] for n in pools.notes()), "a to start")
        stopped = tree(frozen.pid)
        for proc in stopped:
            proc.send_signal(signal.SIGSTOP)
        pools.start("b", "--lease", "1")
        done = until(lambda: (i := items(pools.url, [item_id])[0]).state == "done" and i,
                     "b to finish the reclaimed task")
        assert done.result == {"by": "b-0"}
        assert done.deliveries == 2
        assert done.last_error is not None
        assert "a-0 expired" in done.last_error
        for proc in stopped:
            proc.send_signal(signal.SIGCONT)
        until(lambda: pools.state("a-0").get("lease_lost") == 1, "a's ack to be refused")
        after = items(pools.url, [item_id])[0]
        assert (after.state, after.result, after.token) == ("done", {"by": "b-0"}, done.token)
        assert ["end", item_id, "1"] == next(n for n in pools.notes() if n[0] == "end"
                                             and n[4] == "a-0")[:3]
        assert "refused" in (pools.home / "agents" / "a-0.log").read_text()


class TestAgentKilled:
    def test_every_extra_delivery_is_explained_by_the_kill(self, pools: Pools) -> None:
        """SIGKILL an agent mid-task: every task ends done, and the only task delivered
        twice is the one the killed agent held, first started by it."""
        pools.start("p", "--count", "2", "--retry-delay", "0.05")
        ids = put(pools.url, *[NewItem(kind="k", payload={"sleep": 0.8}) for _ in range(6)])
        victim = until(lambda: next((n for n in pools.notes() if n[0] == "start"), None),
                       "a task to start")
        os.kill(int(victim[3]), signal.SIGKILL)
        until(lambda: all(i.state == "done" for i in items(pools.url, ids)), "all tasks done",
              limit=90)
        starts: dict[str, list[str]] = {}
        for note in pools.notes():
            if note[0] == "start":
                starts.setdefault(note[1], []).append(note[3])
        final = {i.id: i for i in items(pools.url, ids)}
        assert {i: len(s) for i, s in starts.items()} == {i: final[i].deliveries for i in ids}
        extra = {i: s for i, s in starts.items() if len(s) > 1}
        assert list(extra) == [victim[1]]
        assert extra[victim[1]][0] == victim[3]
        assert "agent crashed: killed by SIGKILL" in (final[victim[1]].last_error or "")


class TestPoisonTask:
    def test_poison_is_dead_lettered_while_the_rest_flow(self, pools: Pools) -> None:
        """A task that crashes its agent every time is dead after its max deliveries; the
        other tasks are all done, each delivered once."""
        pools.start("p", "--count", "2", "--retry-delay", "0.05")
        [poison] = put(pools.url, NewItem(kind="k", payload={"crash": True}, max_deliveries=3,
                                          priority=1))
        rest = put(pools.url, *[NewItem(kind="k", payload={"n": n}) for n in range(30)])
        until(lambda: all(i.state in ("done", "dead") for i in items(pools.url, [poison, *rest])),
              "every task finished", limit=90)
        dead = items(pools.url, [poison])[0]
        assert (dead.state, dead.deliveries) == ("dead", 3)
        assert "agent crashed: exit code 3" in (dead.last_error or "")
        assert [(i.state, i.deliveries) for i in items(pools.url, rest)] == [("done", 1)] * 30
        letters = queue_call(pools.url, lambda q: q.dead_letters())
        assert [d.id for d in letters] == [poison]
