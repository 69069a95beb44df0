"""The ``redis`` queue: many agents on many machines share one Redis through redis-py.

Every transition is one Lua script, so it is atomic; the client reconnects by itself with
backoff (redis-py ``Retry``) and reloads its scripts after a Redis restart. No redis
exception leaves this module: connection trouble is ``BackendUnavailable``, a stale
fencing token ``LeaseLost``.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, ClassVar, NoReturn, cast

import anyio
import attrs
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from forge_core.abc import ItemState, Lease, NewItem, Queue, QueueItem, QueueStats
from forge_core.exceptions import BackendUnavailable, ForgeError, LeaseLost, NotFound
from forge_core.queue import PutCombiner, backoff, dumps, new_id

from . import _scripts
from ._pipe import Pipe, command

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

__all__ = ["RedisConfig", "RedisQueue"]

_FINISHED = ("done", "dead", "cancelled")


@attrs.frozen(kw_only=True)
class RedisConfig:
    """Options of the ``redis`` queue."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "forge:"
    """Namespace of every key, so several queues can share one database."""
    reconnect_for: float = 30.0
    """Seconds to keep reconnecting (with backoff) before a call gives up."""
    socket_timeout: float = 10.0


class RedisQueue(Queue):
    """A :class:`~forge_core.abc.Queue` in Redis (see the module docstring).

    Idle consumers block in ``BLPOP`` on a wake list that every put pushes to, and
    :meth:`wait` blocks on a list the finishing transition pushes to, so neither polls.
    """

    name: ClassVar[str] = "redis"
    Config: ClassVar[type[RedisConfig]] = RedisConfig

    def __init__(self, config: RedisConfig | None = None, *, url: str | None = None) -> None:
        self._config = config or RedisConfig()
        self.url = url or self._config.url
        self._prefix = self._config.prefix
        self._redis = aioredis.Redis.from_url(
            self.url,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2),
            socket_timeout=self._config.socket_timeout,
            socket_connect_timeout=self._config.socket_timeout,
            health_check_interval=10,
        )
        pool = self._redis.connection_pool
        bodies = {name: getattr(_scripts, name) for name in _scripts.NAMES}
        self._pipe = None
        if pool.connection_class is aioredis.Connection:
            self._pipe = Pipe(pool.connection_kwargs, bodies, self._prefix,
                              self._config.socket_timeout)
        self._scripts = {name: self._redis.register_script(body) for name, body in bodies.items()}
        self._idle: builtins.list[Pipe] = []
        """Connections for blocking calls (BLPOP and what follows it), one per caller."""
        self._puts: PutCombiner[builtins.list[Any]] = PutCombiner(self._put_rows)
        """Concurrent puts share one PUT script run."""

    def __repr__(self) -> str:
        return f"RedisQueue({self.url!r})"

    async def _script(self, name: str, *args: Any) -> Any:
        """Run one Lua script: over the pipelined connection (plain TCP), or through
        redis-py (TLS, Unix sockets)."""
        if self._pipe is not None:
            pipe = self._pipe
            return await self._call(lambda: pipe.script(name, args))
        script = self._scripts[name]
        return await self._call(lambda: script(keys=[self._prefix], args=list(args)))

    async def _call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one redis call, reconnecting with backoff for up to ``reconnect_for`` seconds
        while the server is unreachable or loading; map every redis error to Forge's."""
        deadline = time.monotonic() + self._config.reconnect_for
        attempt = 0
        while True:
            try:
                return await call()
            except rexc.ResponseError as exc:
                if not isinstance(exc, rexc.BusyLoadingError):
                    _raise_mapped(str(exc))
                error: Exception = exc
            except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                error = exc
            except rexc.RedisError as exc:
                raise BackendUnavailable(f"redis at {self.url}: {exc}") from None
            attempt += 1
            if time.monotonic() >= deadline:
                raise BackendUnavailable(f"redis at {self.url} is unreachable: {error}") from None
            log.info("redis at %s unreachable (%s); reconnecting", self.url, error)
            await anyio.sleep(backoff(attempt, base=0.02, cap=0.5, jitter=0.5))

    async def _blocking(self, packed: bytes, count: int) -> builtins.list[Any]:
        """Send ``count`` commands, one of them blocking, on a connection of their own; raise
        the first error reply."""
        assert self._pipe is not None
        pipe = self._idle.pop() if self._idle else self._pipe.sibling()
        replies = None
        try:
            replies = await pipe.send_all(packed, count)
        finally:
            (self._idle.append if replies is not None else _close)(pipe)
        for reply in replies:
            if isinstance(reply, rexc.RedisError) and not isinstance(reply, rexc.NoScriptError):
                raise reply
        return replies

    async def aclose(self) -> None:
        for pipe in [self._pipe, *self._idle]:
            _close(pipe)
        self._idle.clear()
        try:
            await self._redis.aclose()
        except rexc.RedisError as exc:
            log.debug("closing redis connection: %s", exc)

    # -- interface ------------------------------------------------------------------------
    async def put(self, item: NewItem) -> str:
        return (await self.put_many([item]))[0]

    async def put_many(self, items: Sequence[NewItem]) -> builtins.list[str]:
        rows = [[new_id(), item.kind, dumps(item.payload), item.priority,
                 max(1, item.max_deliveries), max(0.0, item.delay),
                 "" if item.run_at is None else repr(float(item.run_at)),
                 item.key or "", dumps(sorted(set(item.tags)))] for item in items]
        return await self._puts.put(rows)

    async def _put_rows(self, rows: builtins.list[builtins.list[Any]]) -> builtins.list[str]:
        ids: builtins.list[str] = []
        for start in range(0, len(rows), 1000):  # bounded script run time
            chunk = rows[start:start + 1000]
            got = await self._script("PUT", len(chunk), *(arg for row in chunk for arg in row))
            ids += [_text(i) for i in got]
        return ids

    async def reserve(self, consumer: str, lease: float, *, kinds: Sequence[str] | None = None,
                      tags: Sequence[str] = (), exclude_kinds: Sequence[str] = ()) -> Lease | None:
        if kinds is not None and not kinds:
            return None
        raw = await self._script("RESERVE", *_take_args(consumer, lease, kinds, tags,
                                                         exclude_kinds))
        return _to_lease(raw, consumer)

    async def ack(self, lease: Lease, result: Any = None) -> None:
        await self._script("ACK", lease.item.id, lease.token, dumps(result))

    async def settle(self, acks: Sequence[tuple[Lease, Any]], consumer: str, lease: float, *,
                     want: int, kinds: Sequence[str] | None = None, tags: Sequence[str] = (),
                     exclude_kinds: Sequence[str] = ()) -> tuple[builtins.list[str],
                                                               builtins.list[Lease]]:
        if kinds is not None and not kinds:
            want = 0
        args: builtins.list[Any] = [len(acks)]
        for done, result in acks:
            args += [done.item.id, done.token, dumps(result)]
        args += [*_take_args(consumer, lease, kinds, tags, exclude_kinds), want]
        lost, taken = await self._script("SETTLE", *args)
        leases = [_to_lease(raw, consumer) for raw in taken]
        return [_text(i) for i in lost], [x for x in leases if x is not None]

    async def nack(self, lease: Lease, error: str, *, retry_at: float | None = None,
                   final: bool = False) -> None:
        await self._script("NACK", lease.item.id, lease.token, error,
                           "" if retry_at is None else repr(float(retry_at)), int(final))

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        expires = await self._script("EXTEND", lease.item.id, lease.token, repr(float(seconds)))
        return attrs.evolve(lease, expires_at=float(expires))

    async def checkpoint(self, lease: Lease, data: Any) -> None:
        await self._script("CHECKPOINT", lease.item.id, lease.token, dumps(data))

    async def cancel(self, item_id: str) -> bool:
        return bool(await self._script("CANCEL", item_id))

    async def get(self, item_id: str) -> QueueItem:
        key = f"{self._prefix}i:{item_id}"
        raw = await self._call(lambda: self._redis.hgetall(key))
        if not raw:
            raise NotFound(f"no queue item {item_id}")
        return _to_item([x for kv in raw.items() for x in kv])

    async def list(self, *, state: ItemState | None = None, kind: str | None = None,
                   limit: int = 100) -> builtins.list[QueueItem]:
        raw = await self._script("LIST", state or "", kind or "", limit)
        return [_to_item(r) for r in raw]

    async def requeue(self, item_id: str) -> None:
        await self._script("REQUEUE", item_id)

    async def reserve_wait(self, consumer: str, lease: float, *, timeout: float,
                           kinds: Sequence[str] | None = None, tags: Sequence[str] = (),
                           exclude_kinds: Sequence[str] = (),
                           recheck: float = 1.0) -> Lease | None:
        """Like the base loop, but each wake-up BLPOP travels with the RESERVE that follows
        it, so Redis reserves the moment work arrives, with no round trip in between."""
        pipe = self._pipe
        if pipe is None or (kinds is not None and not kinds):
            return await super().reserve_wait(consumer, lease, timeout=timeout, kinds=kinds,
                                              tags=tags, exclude_kinds=exclude_kinds,
                                              recheck=recheck)
        deadline = time.monotonic() + timeout
        got = await self.reserve(consumer, lease, kinds=kinds, tags=tags,
                                 exclude_kinds=exclude_kinds)
        reserve = pipe.packed("RESERVE", _take_args(consumer, lease, kinds, tags, exclude_kinds))
        keys = ([f"{self._prefix}wake"] if kinds is None
                else [f"{self._prefix}wake:{k}" for k in kinds])
        while got is None and (left := deadline - time.monotonic()) > 0:
            blpop = command(b"BLPOP", *keys, repr(self._block_for(min(left, recheck))))
            _, raw = await self._call(partial(self._blocking, blpop + reserve, 2))
            if isinstance(raw, rexc.NoScriptError):  # Redis restarted: load it and retry
                raw = await self._script("RESERVE", *_take_args(consumer, lease, kinds, tags,
                                                                exclude_kinds))
            got = _to_lease(raw, consumer)
        return got

    async def wait(self, item_id: str, *, timeout: float | None = None) -> QueueItem:
        """Like the base loop, but registering, blocking and reading the item travel in one
        write, so the item comes back the moment it finishes, with no round trip after."""
        pipe = self._pipe
        if pipe is None:
            return await super().wait(item_id, timeout=timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        read = command(b"HGETALL", f"{self._prefix}i:{item_id}")
        while True:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return await self.get(item_id)
            block = self._block_for(min(left, 1.0))
            batch = (command(b"EVAL", _scripts.WAITB, 1, self._prefix, item_id, int(block) + 60)
                     + command(b"BLPOP", f"{self._prefix}f:{item_id}", repr(block)) + read)
            raw = (await self._call(partial(self._blocking, batch, 3)))[2]
            if not raw:
                raise NotFound(f"no queue item {item_id}")
            item = _to_item(raw)
            if item.state in _FINISHED:
                return item

    def _block_for(self, timeout: float) -> float:
        """A BLPOP timeout: at least 1 ms (0 would block forever), below the socket timeout."""
        return max(0.001, min(timeout, self._config.socket_timeout - 1.0))

    async def wait_for_work(self, timeout: float, *, kinds: Sequence[str] | None = None) -> None:
        keys = ([f"{self._prefix}wake"] if kinds is None
                else [f"{self._prefix}wake:{k}" for k in kinds])
        if keys:
            block = self._block_for(timeout)
            await self._call(lambda: self._redis.blpop(keys, timeout=block))

    async def wait_for_finish(self, item_id: str, timeout: float) -> None:
        block = self._block_for(timeout)
        state = _text(await self._script("WAITREG", item_id, int(block) + 60))
        if state not in _FINISHED:
            key = f"{self._prefix}f:{item_id}"
            await self._call(lambda: self._redis.blpop([key], timeout=block))

    async def stats(self) -> QueueStats:
        states, prio, oldest, now = await self._script("STATS")
        by_state = {_text(k): int(v) for k, v in zip(states[::2], states[1::2], strict=True)}
        by_prio = {int(k): int(v) for k, v in zip(prio[::2], prio[1::2], strict=True)}
        return QueueStats(
            by_state={k: v for k, v in by_state.items() if v},
            pending_by_priority={k: v for k, v in by_prio.items() if v},
            oldest_pending_age=max(0.0, float(now) - float(oldest)) if oldest else None)

    async def set_rate_limit(self, kind: str, per_second: float | None, burst: int = 1) -> None:
        """Deliver at most ``per_second`` items of ``kind`` (bursts of ``burst``); ``None``
        removes the limit. Shared by every client of this Redis."""
        await self._script("RATE_LIMIT", kind, "" if per_second is None else repr(per_second),
                           max(1, burst))


def _close(pipe: Pipe | None) -> None:
    if pipe is not None:
        pipe.close()


def _raise_mapped(message: str) -> NoReturn:
    code, _, rest = message.partition(" ")
    if code == "LEASELOST":
        raise LeaseLost(rest) from None
    if code == "NOTFOUND":
        raise NotFound(rest) from None
    if code == "BADSTATE":
        raise ForgeError(rest) from None
    raise BackendUnavailable(f"redis refused a queue script: {message}") from None


def _take_args(consumer: str, lease: float, kinds: Sequence[str] | None, tags: Sequence[str],
               exclude_kinds: Sequence[str]) -> builtins.list[str]:
    return [consumer, repr(float(lease)), "" if kinds is None else dumps(builtins.list(kinds)),
            dumps(builtins.list(tags)), dumps(builtins.list(exclude_kinds))]


def _to_lease(raw: Any, consumer: str) -> Lease | None:
    if not raw:
        return None
    item = _to_item(raw)
    assert item.lease_expires_at is not None
    return Lease(item=item, token=item.token, consumer=consumer, expires_at=item.lease_expires_at)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _to_item(flat: Sequence[bytes | str]) -> QueueItem:
    h = {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}

    def num(name: str) -> float | None:
        return float(h[name]) if h.get(name) else None

    def js(name: str) -> Any:
        return json.loads(h[name]) if h.get(name) else None

    return QueueItem(
        id=h["id"], kind=h["kind"], payload=js("payload"), priority=int(h["priority"]),
        state=cast(ItemState, h["state"]), deliveries=int(h["deliveries"]),
        max_deliveries=int(h["max_deliveries"]), created_at=float(h["created_at"]),
        run_at=float(h["run_at"]), key=h.get("key") or None, tags=tuple(js("tags") or ()),
        checkpoint=js("checkpoint"), result=js("result"), last_error=h.get("last_error") or None,
        consumer=h.get("consumer") or None, lease_expires_at=num("lease_expires_at"),
        token=int(h.get("token", 0)), finished_at=num("finished_at"))
