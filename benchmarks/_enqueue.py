"""Enqueueing N tasks each system's ways, for bench_queue.py: one call at a time, the system's
own bulk API, and 32 callers at once in one process (threads for the synchronous clients, tasks
on one event loop for the asynchronous ones). Each function returns the seconds the N tasks took
and then enqueues the sentinel, untimed, when asked."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from forge_core.abc import NewItem, Queue

CALLERS = 32
FORMS = ("one", "bulk", "callers")


def peer_sender(system: str, url: str) -> Any:
    """A function that enqueues one no-op task of ``system`` (RQ, Celery, dramatiq)."""
    if system == "rq":
        import peer_rq  # type: ignore[import-not-found]
        from rq import Queue as RQueue

        q = RQueue("default", connection=redis.Redis.from_url(url))
        return lambda x: q.enqueue(peer_rq.noop, x)
    if system == "celery":
        import peer_celery  # type: ignore[import-not-found]

        return peer_celery.noop.delay
    if system == "dramatiq":
        import peer_dramatiq  # type: ignore[import-not-found]

        return peer_dramatiq.noop.send
    raise ValueError(system)


def _peer_bulk(system: str, url: str, n: int) -> float | None:
    """RQ's ``enqueue_many`` (one pipeline), Celery's ``group``, dramatiq's ``group``; arq has
    no bulk API (``None``). As for Forge, the task objects are built before the clock starts."""
    if system == "rq":
        import peer_rq
        from rq import Queue as RQueue

        q = RQueue("default", connection=redis.Redis.from_url(url))
        jobs = [RQueue.prepare_data(peer_rq.noop, args=(i,)) for i in range(n)]
        start = time.perf_counter()
        q.enqueue_many(jobs)
        return time.perf_counter() - start
    if system == "celery":
        import peer_celery
        from celery import group

        signatures = [peer_celery.noop.s(i) for i in range(n)]
        start = time.perf_counter()
        group(signatures).apply_async()
        return time.perf_counter() - start
    if system == "dramatiq":
        import dramatiq
        import peer_dramatiq

        messages = [peer_dramatiq.noop.message(i) for i in range(n)]
        start = time.perf_counter()
        dramatiq.group(messages).run()
        return time.perf_counter() - start
    return None


def enqueue_peer(system: str, url: str, n: int, form: str, sentinel: bool) -> float | None:
    """Seconds ``system`` took to enqueue ``n`` no-op tasks the ``form`` way, or ``None`` when
    it has no such way."""
    if system == "arq":
        return asyncio.run(_enqueue_arq(url, n, form, sentinel))
    send = peer_sender(system, url)
    if form == "bulk":
        took = _peer_bulk(system, url, n)
    elif form == "callers":
        start = time.perf_counter()
        with ThreadPoolExecutor(CALLERS) as pool:
            list(pool.map(send, range(n), chunksize=64))
        took = time.perf_counter() - start
    else:
        start = time.perf_counter()
        for i in range(n):
            send(i)
        took = time.perf_counter() - start
    if sentinel:
        send("sentinel")
    return took


async def _enqueue_arq(url: str, n: int, form: str, sentinel: bool) -> float | None:
    from arq import create_pool
    from arq.connections import RedisSettings

    if form == "bulk":
        return None
    pool = await create_pool(RedisSettings.from_dsn(url))
    start = time.perf_counter()
    if form == "callers":
        await _callers(lambda i: pool.enqueue_job("noop", i), n)
    else:
        for i in range(n):
            await pool.enqueue_job("noop", i)
    took = time.perf_counter() - start
    if sentinel:
        await pool.enqueue_job("noop", "sentinel")
    await pool.aclose()
    return took


async def _callers(put: Any, n: int) -> None:
    """``put(i)`` for every ``i < n`` from CALLERS concurrent tasks."""
    todo = iter(range(n))

    async def caller() -> None:
        for i in todo:
            await put(i)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))


async def enqueue_forge(queue: Queue, n: int, form: str, sentinel: bool) -> float:
    """Seconds a Forge queue took to enqueue ``n`` no-op items: one ``put`` at a time,
    ``put_many`` (as ``forge task submit --file`` does), or CALLERS concurrent ``put`` calls."""
    items = [NewItem(kind="noop", payload=i) for i in range(n)]
    start = time.perf_counter()
    if form == "bulk":
        await queue.put_many(items)
    elif form == "callers":
        await _callers(lambda i: queue.put(items[i]), n)
    else:
        for item in items:
            await queue.put(item)
    took = time.perf_counter() - start
    if sentinel:
        await queue.put(NewItem(kind="noop", payload="sentinel", priority=5))
    await queue.aclose()
    return took
