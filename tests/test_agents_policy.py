"""The agent manager's policies with real agent processes: the circuit breaker per kind
(time moved by an injected clock), retries only for matching errors, and pause/resume
through the CLI really stopping and continuing the agent process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers import FORGE, PY, wait_for

from forge_core.abc import NewItem, Queue
from forge_core.agents import AgentManager, PoolConfig, RetryPolicy
from forge_core.queue.sqlite import SQLiteQueue
from forge_core.runtime.process import ProcessRuntime

pytestmark = pytest.mark.anyio


AGENT = """
import json, sys
for line in sys.stdin:
    task = json.loads(line)
    p = task["payload"] or {}
    if p.get("error") and task["delivery"] <= p.get("fail_times", 99):
        print(json.dumps({"type": "result", "ok": False, "error": p["error"]}), flush=True)
    else:
        print(json.dumps({"type": "result", "ok": True, "result": task["delivery"]}), flush=True)
"""


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    path = tmp_path / "agent.py"
    path.write_text(AGENT)
    return path


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[Queue]:
    q = SQLiteQueue(path=tmp_path / "queue.db")
    yield q
    await q.aclose()


async def until(check: Callable[[], Any], what: str, limit: float = 30) -> None:
    with anyio.fail_after(limit):
        while not await check():
            await anyio.sleep(0.02)


async def states(queue: Queue, ids: list[str]) -> list[str]:
    return [(await queue.get(i)).state for i in ids]


class TestCircuitBreaker:
    async def test_opens_after_five_failures_half_opens_and_closes_after_two_successes(
            self, queue: Queue, agent: Path, tmp_path: Path) -> None:
        """5 failures of a kind stop its delivery while other kinds flow; once open_for has
        passed (on the injected clock) it lets tasks through and 2 successes close it."""
        now = [1000.0]
        config = PoolConfig(command=(PY, str(agent)), state_dir=tmp_path / "agents",
                            retry=RetryPolicy(retry_on=()))
        manager = AgentManager(queue, ProcessRuntime(), config, clock=lambda: now[0])
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            failing = await queue.put_many(
                [NewItem(kind="flaky", payload={"error": "upstream 503"}) for _ in range(5)])
            await until(lambda: _all(queue, failing, "dead"), "five failures")
            assert manager.breakers["flaky"].state == "open"
            held = await queue.put_many([NewItem(kind="flaky", priority=1) for _ in range(2)])
            others = await queue.put_many([NewItem(kind="other", priority=5) for _ in range(3)])
            await until(lambda: _all(queue, others, "done"), "other kinds to flow")
            assert await states(queue, held) == ["pending", "pending"]
            now[0] += 60.0
            assert manager.breakers["flaky"].state == "half-open"
            await until(lambda: _all(queue, held, "done"), "trial tasks to pass")
            assert manager.breakers["flaky"].state == "closed"
            manager.drain()


async def _all(queue: Queue, ids: list[str], state: str) -> bool:
    return all(s == state for s in await states(queue, ids))


class TestRetryPolicy:
    async def test_only_errors_matching_a_pattern_are_retried(
            self, queue: Queue, agent: Path, tmp_path: Path) -> None:
        """With retry_on=timeout a timeout is retried and then succeeds, a bad input is
        dead-lettered on its first delivery."""
        config = PoolConfig(command=(PY, str(agent)), state_dir=tmp_path / "agents",
                            retry=RetryPolicy(retry_on=("timeout",), base=0.01))
        manager = AgentManager(queue, ProcessRuntime(), config)
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            transient = await queue.put(NewItem(kind="k", payload={
                "error": "timeout talking to db", "fail_times": 1}))
            bad = await queue.put(NewItem(kind="k", payload={"error": "bad input"}))
            await until(lambda: _finished(queue, [transient, bad]), "both to finish")
            manager.drain()
        retried, dead = await queue.get(transient), await queue.get(bad)
        assert (retried.state, retried.deliveries, retried.result) == ("done", 2, 2)
        assert (dead.state, dead.deliveries, dead.last_error) == ("dead", 1, "bad input")


async def _finished(queue: Queue, ids: list[str]) -> bool:
    return all(s in ("done", "dead") for s in await states(queue, ids))


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FORGE_HOME": str(tmp_path / "home"),
            "FORGE_QUEUE": f"sqlite:///{tmp_path / 'queue.db'}"}


@pytest.fixture
def pool(agent: Path, cli_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*FORGE, "agent", "start", "--name", "pz", "--", PY, str(agent)],
                            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def forge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FORGE, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


class TestPauseResume:
    def test_pause_and_resume_stop_and_continue_the_process(
            self, pool: subprocess.Popen[bytes], cli_env: dict[str, str]) -> None:
        """forge agent pause SIGSTOPs the agent's process, resume SIGCONTs it, and the
        resumed agent takes work again."""
        def agents() -> list[dict[str, Any]]:
            return list(json.loads(forge(cli_env, "agent", "list", "--json").stdout or "[]"))

        pid = wait_for(lambda: next((a["pid"] for a in agents() if a.get("pid")), None),
                       "the agent to start")
        assert forge(cli_env, "agent", "pause", "pz-0").returncode == 0
        wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, "SIGSTOP")
        wait_for(lambda: agents()[0]["state"] == "paused", "the paused state")
        assert forge(cli_env, "agent", "resume", "pz-0").returncode == 0
        wait_for(lambda: psutil.Process(pid).status() != psutil.STATUS_STOPPED, "SIGCONT")
        item_id = forge(cli_env, "task", "submit", "--kind", "k").stdout.strip()
        waited = forge(cli_env, "task", "wait", item_id, "--timeout", "30")
        assert waited.returncode == 0, waited.stdout
        assert json.loads(waited.stdout)["state"] == "done"
        assert psutil.Process(pid).is_running()
