"""The embedded ``sqlite`` queue: durable, shared safely by many processes on one machine,
no server.

Each transition is one ``BEGIN IMMEDIATE`` transaction on a WAL database, so concurrent
processes serialise on the write lock and never hand out one item twice; puts that arrive
while one is being written share the next transaction (one fsync for all). Blocking sqlite
calls run in worker threads, off the event loop.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import attrs

from ..abc import ItemState, Lease, NewItem, Queue, QueueItem, QueueStats
from ..exceptions import BackendUnavailable, ForgeError, LeaseLost, NotFound
from ._combine import PutCombiner
from ._common import dumps, forge_home, new_id
from ._sqlite_schema import COLUMNS, SCHEMA, to_item

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

__all__ = ["SQLiteQueue"]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class SQLiteConfig:
    """Options of the ``sqlite`` queue."""

    path: str | None = None
    """Database file; default ``$FORGE_HOME/queue.db``."""
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """``FULL`` survives power loss; ``NORMAL`` survives a killed process and is faster."""
    busy_timeout: float = 60.0
    """Seconds to wait for another process's write lock before giving up."""


class SQLiteQueue(Queue):
    """A :class:`~forge_core.abc.Queue` in one sqlite file (see the module docstring).

    Rate limits are a token bucket per kind, shared by every process. Waiting for work or
    for a result watches ``PRAGMA data_version``, which moves when any other connection
    commits, so waiters wake within milliseconds of a put or ack from any process without
    taking the write lock.
    """

    name: ClassVar[str] = "sqlite"
    Config: ClassVar[type[SQLiteConfig]] = SQLiteConfig

    def __init__(self, config: SQLiteConfig | None = None, *, path: str | Path | None = None):
        self._config = config or SQLiteConfig()
        chosen = path or self._config.path
        self.path = Path(chosen) if chosen else forge_home() / "queue.db"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._watch: sqlite3.Connection | None = None
        self._puts: PutCombiner[dict[str, Any]] = PutCombiner(self._write_rows)

    def __repr__(self) -> str:
        return f"SQLiteQueue({str(self.path)!r})"

    # -- plumbing -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self._config.busy_timeout,
                                       isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._config.synchronous}")
                conn.executescript(SCHEMA)  # idempotent; each statement commits alone
            except (sqlite3.Error, OSError) as exc:
                raise BackendUnavailable(f"cannot open queue database {self.path}: {exc}") from None
            self._conn = conn
        return self._conn

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            conn = self._connect()
            try:
                return fn(conn, *args)
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"queue database {self.path}: {exc}") from None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(self._call, fn, *args)

    async def _write_rows(self, rows: builtins.list[dict[str, Any]]) -> builtins.list[str]:
        return await self._run(_put_many, rows)

    async def aclose(self) -> None:
        with self._lock:
            for conn in (self._conn, self._watch):
                if conn is not None:
                    conn.close()
            self._conn = self._watch = None

    def _data_version(self) -> int:
        """A number that changes whenever another connection commits (cheap, no lock)."""
        try:
            if self._watch is None:
                self._connect_once()
                self._watch = sqlite3.connect(self.path, isolation_level=None,
                                              check_same_thread=False)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"queue database {self.path}: {exc}") from None

    def _connect_once(self) -> None:
        with self._lock:
            self._connect()

    async def _wait_change(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        start, delay = self._data_version(), 0.0005
        while (left := deadline - time.monotonic()) > 0:
            await anyio.sleep(min(delay, left))
            if self._data_version() != start:
                return
            delay = min(0.004, delay * 2)

    async def wait_for_work(self, timeout: float, *, kinds: Sequence[str] | None = None) -> None:
        await self._wait_change(timeout)

    async def wait_for_finish(self, item_id: str, timeout: float) -> None:
        await self._wait_change(timeout)

    # -- interface ------------------------------------------------------------------------
    async def put(self, item: NewItem) -> str:
        return (await self.put_many([item]))[0]

    async def put_many(self, items: Sequence[NewItem]) -> list[str]:
        rows = [_new_row(item) for item in items]  # JSON errors surface before any write
        return await self._puts.put(rows)

    async def reserve(self, consumer: str, lease: float, *, kinds: Sequence[str] | None = None,
                      tags: Sequence[str] = (), exclude_kinds: Sequence[str] = ()) -> Lease | None:
        return await self._run(_reserve, consumer, lease, kinds, tuple(tags), tuple(exclude_kinds))

    async def ack(self, lease: Lease, result: Any = None) -> None:
        await self._run(_ack, lease, dumps(result))

    async def settle(self, acks: Sequence[tuple[Lease, Any]], consumer: str, lease: float, *,
                     want: int, kinds: Sequence[str] | None = None, tags: Sequence[str] = (),
                     exclude_kinds: Sequence[str] = ()) -> tuple[builtins.list[str],
                                                               builtins.list[Lease]]:
        done = [(held, dumps(result)) for held, result in acks]
        return await self._run(_settle, done, consumer, lease, want, kinds, tuple(tags),
                               tuple(exclude_kinds))

    async def nack(self, lease: Lease, error: str, *, retry_at: float | None = None,
                   final: bool = False) -> None:
        await self._run(_nack, lease, error, retry_at, final)

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        expires = await self._run(_extend, lease, seconds)
        return attrs.evolve(lease, expires_at=expires)

    async def checkpoint(self, lease: Lease, data: Any) -> None:
        await self._run(_checkpoint, lease, dumps(data))

    async def cancel(self, item_id: str) -> bool:
        return await self._run(_cancel, item_id)

    async def get(self, item_id: str) -> QueueItem:
        return await self._run(_get, item_id)

    async def list(self, *, state: ItemState | None = None, kind: str | None = None,
                   limit: int = 100) -> builtins.list[QueueItem]:
        return await self._run(_list, state, kind, limit)

    async def requeue(self, item_id: str) -> None:
        await self._run(_requeue, item_id)

    async def stats(self) -> QueueStats:
        return await self._run(_stats)

    async def set_rate_limit(self, kind: str, per_second: float | None, burst: int = 1) -> None:
        """Deliver at most ``per_second`` items of ``kind`` (bursts of ``burst``); ``None``
        removes the limit. Shared by every process using this database."""
        await self._run(_set_rate_limit, kind, per_second, burst)


# -- transitions: each runs in one immediate transaction --------------------------------------
@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    if conn.in_transaction:  # part of a larger transition (settle): its transaction decides
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _new_row(item: NewItem) -> dict[str, Any]:
    now = time.time()
    run_at = item.run_at if item.run_at is not None else now + max(0.0, item.delay)
    return {"id": new_id(), "kind": item.kind, "payload": dumps(item.payload),
            "priority": item.priority, "max_deliveries": max(1, item.max_deliveries),
            "created_at": now, "run_at": run_at, "key": item.key,
            "tags": dumps(sorted(set(item.tags)))}


def _put_many(conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    with _immediate(conn):
        for row in rows:
            if row["key"] is not None:
                found = conn.execute("SELECT id FROM items WHERE key = ?", (row["key"],)).fetchone()
                if found:
                    ids.append(found[0])
                    continue
            conn.execute(
                "INSERT INTO items (id, kind, payload, priority, state, max_deliveries, "
                "created_at, run_at, key, tags) VALUES (:id, :kind, :payload, :priority, "
                "'pending', :max_deliveries, :created_at, :run_at, :key, :tags)", row)
            ids.append(row["id"])
    return ids


def _reclaim(conn: sqlite3.Connection, now: float) -> None:
    expired = conn.execute(
        "SELECT id, consumer FROM items INDEXED BY items_leases "
        "WHERE state = 'reserved' AND lease_expires_at <= ?",
        (now,)).fetchall()
    for item_id, consumer in expired:
        log.info("reclaiming %s: the lease of %s expired", item_id, consumer)
        conn.execute(
            "UPDATE items SET state = CASE WHEN deliveries >= max_deliveries THEN 'dead' "
            "ELSE 'pending' END, finished_at = CASE WHEN deliveries >= max_deliveries THEN ? "
            "END, run_at = ?, last_error = ?, consumer = NULL, lease_expires_at = NULL "
            "WHERE id = ?", (now, now, f"lease of {consumer} expired", item_id))


def _limited_kinds(conn: sqlite3.Connection, now: float) -> list[str]:
    rows = conn.execute("SELECT kind, rate, burst, tokens, updated FROM rate_limits").fetchall()
    return [k for k, rate, burst, tokens, updated in rows
            if min(burst, tokens + (now - updated) * rate) < 1.0]


def _reserve(conn: sqlite3.Connection, consumer: str, lease: float, kinds: Sequence[str] | None,
             tags: tuple[str, ...], exclude: tuple[str, ...]) -> Lease | None:
    now = time.time()
    with _immediate(conn):
        _reclaim(conn, now)
        where = ["state = 'pending'", "run_at <= ?"]
        args: list[object] = [now]
        if kinds is not None:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        skip = [*exclude, *_limited_kinds(conn, now)]
        if skip:
            where.append(f"kind NOT IN ({','.join('?' * len(skip))})")
            args.extend(skip)
        if tags:
            where.append("NOT EXISTS (SELECT 1 FROM json_each(items.tags) WHERE value NOT IN "
                         f"({','.join('?' * len(tags))}))")
            args.extend(tags)
        else:
            where.append("tags = '[]'")
        row = conn.execute(
            # the planner would rather scan items_state and sort; the ordered index is O(log n)
            f"SELECT seq, kind FROM items INDEXED BY items_deliverable WHERE {' AND '.join(where)} "
            "ORDER BY priority, run_at, seq LIMIT 1", args).fetchone()
        if row is None:
            return None
        token = conn.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'token' RETURNING value"
        ).fetchone()[0]
        expires = now + lease
        item = to_item(conn.execute(
            "UPDATE items SET state = 'reserved', deliveries = deliveries + 1, token = ?, "
            f"consumer = ?, lease_expires_at = ? WHERE seq = ? RETURNING {COLUMNS}",
            (token, consumer, expires, row[0])).fetchone())
        conn.execute("UPDATE rate_limits SET tokens = min(burst, tokens + (? - updated) * rate) "
                     "- 1, updated = ? WHERE kind = ?", (now, now, row[1]))
    return Lease(item=item, token=token, consumer=consumer, expires_at=expires)


def _held(conn: sqlite3.Connection, lease: Lease, action: str) -> None:
    row = conn.execute("SELECT state, token FROM items WHERE id = ?", (lease.item.id,)).fetchone()
    if row is None:
        raise NotFound(f"no queue item {lease.item.id}")
    if row[0] != "reserved" or row[1] != lease.token:
        raise LeaseLost(f"cannot {action} {lease.item.id}: the lease with token {lease.token} "
                        f"was lost (item is {row[0]}, token {row[1]})")


def _ack(conn: sqlite3.Connection, lease: Lease, result: str) -> None:
    with _immediate(conn):
        row = conn.execute("SELECT state, token FROM items WHERE id = ?",
                           (lease.item.id,)).fetchone()
        if row is not None and tuple(row) == ("done", lease.token):
            return  # a repeated ack of the same delivery (e.g. retried after a lost reply)
        _held(conn, lease, "ack")
        conn.execute("UPDATE items SET state = 'done', result = ?, finished_at = ?, "
                     "lease_expires_at = NULL WHERE id = ?",
                     (result, time.time(), lease.item.id))


def _settle(conn: sqlite3.Connection, acks: list[tuple[Lease, str]], consumer: str,
            lease: float, want: int, kinds: Sequence[str] | None, tags: tuple[str, ...],
            exclude: tuple[str, ...]) -> tuple[list[str], list[Lease]]:
    lost: list[str] = []
    taken: list[Lease] = []
    with _immediate(conn):  # one transaction, one commit (one fsync) for the whole step
        for done, result in acks:
            try:
                _ack(conn, done, result)  # refuses before it writes, so nothing to undo
            except LeaseLost:
                lost.append(done.item.id)
        while len(taken) < want and (got := _reserve(conn, consumer, lease, kinds, tags,
                                                     exclude)):
            taken.append(got)
    return lost, taken


def _nack(conn: sqlite3.Connection, lease: Lease, error: str, retry_at: float | None,
          final: bool) -> None:
    now = time.time()
    with _immediate(conn):
        _held(conn, lease, "nack")
        conn.execute(
            "UPDATE items SET state = CASE WHEN ? OR deliveries >= max_deliveries THEN 'dead' "
            "ELSE 'pending' END, finished_at = CASE WHEN ? OR deliveries >= max_deliveries "
            "THEN ? END, run_at = ?, last_error = ?, consumer = NULL, lease_expires_at = NULL "
            "WHERE id = ?",
            (final, final, now, now if retry_at is None else retry_at, error, lease.item.id))


def _extend(conn: sqlite3.Connection, lease: Lease, seconds: float) -> float:
    expires = time.time() + seconds
    with _immediate(conn):
        _held(conn, lease, "extend")
        conn.execute("UPDATE items SET lease_expires_at = ? WHERE id = ?",
                     (expires, lease.item.id))
    return expires


def _checkpoint(conn: sqlite3.Connection, lease: Lease, data: str) -> None:
    with _immediate(conn):
        _held(conn, lease, "checkpoint")
        conn.execute("UPDATE items SET checkpoint = ? WHERE id = ?", (data, lease.item.id))


def _cancel(conn: sqlite3.Connection, item_id: str) -> bool:
    with _immediate(conn):
        state = _state(conn, item_id)
        if state not in ("pending", "reserved"):
            return False
        conn.execute("UPDATE items SET state = 'cancelled', finished_at = ?, consumer = NULL, "
                     "lease_expires_at = NULL WHERE id = ?", (time.time(), item_id))
    return True


def _requeue(conn: sqlite3.Connection, item_id: str) -> None:
    with _immediate(conn):
        state = _state(conn, item_id)
        if state not in ("dead", "cancelled"):
            raise ForgeError(f"item {item_id} is {state}; only dead or cancelled items requeue")
        conn.execute("UPDATE items SET state = 'pending', deliveries = 0, run_at = ?, "
                     "finished_at = NULL, consumer = NULL WHERE id = ?", (time.time(), item_id))


def _state(conn: sqlite3.Connection, item_id: str) -> str:
    row = conn.execute("SELECT state FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        raise NotFound(f"no queue item {item_id}")
    return str(row[0])


def _get(conn: sqlite3.Connection, item_id: str) -> QueueItem:
    row = conn.execute(f"SELECT {COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        raise NotFound(f"no queue item {item_id}")
    return to_item(row)


def _list(conn: sqlite3.Connection, state: str | None, kind: str | None,
          limit: int) -> list[QueueItem]:
    where, args = ["1"], []
    for column, value in (("state", state), ("kind", kind)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    rows = conn.execute(f"SELECT {COLUMNS} FROM items WHERE {' AND '.join(where)} "
                        "ORDER BY seq DESC LIMIT ?", [*args, limit]).fetchall()
    return [to_item(r) for r in rows]


def _stats(conn: sqlite3.Connection) -> QueueStats:
    now = time.time()
    by_state = dict(conn.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall())
    by_priority = dict(conn.execute(
        "SELECT priority, count(*) FROM items WHERE state = 'pending' GROUP BY priority"
    ).fetchall())
    oldest = conn.execute("SELECT min(run_at) FROM items WHERE state = 'pending' AND run_at <= ?",
                          (now,)).fetchone()[0]
    return QueueStats(by_state=by_state, pending_by_priority=by_priority,
                      oldest_pending_age=None if oldest is None else max(0.0, now - oldest))


def _set_rate_limit(conn: sqlite3.Connection, kind: str, per_second: float | None,
                    burst: int) -> None:
    with _immediate(conn):
        if per_second is None:
            conn.execute("DELETE FROM rate_limits WHERE kind = ?", (kind,))
        else:
            conn.execute("INSERT OR REPLACE INTO rate_limits VALUES (?, ?, ?, ?, ?)",
                         (kind, per_second, max(1, burst), max(1, burst), time.time()))
