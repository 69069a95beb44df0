"""Durable run state in one SQLite file (WAL): runs, task instances, attempts, events.

Every state change is a committed transaction before the engine announces it, so a
process killed at any moment leaves a store the next engine can resume from. WAL with
``synchronous=NORMAL`` survives a killed process (SIGKILL) without an fsync per commit;
only a power loss can drop the last few commits.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..exceptions import BackendUnavailable, NotFound, RunLocked
from ._records import (
    FINISHED_TASK_STATES,
    AttemptRecord,
    EventRecord,
    PendingHook,
    RunRecord,
    TaskRecord,
)

__all__ = ["StateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    params TEXT NOT NULL DEFAULT '{}', logical_date TEXT, trigger TEXT NOT NULL DEFAULT 'manual',
    owner TEXT, heartbeat_at REAL, source TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, created_at);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, name TEXT NOT NULL,
    state TEXT NOT NULL, outputs TEXT NOT NULL DEFAULT '{}', next_try_at REAL,
    sla_missed INTEGER NOT NULL DEFAULT 0, position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, task TEXT NOT NULL,
    number INTEGER NOT NULL, state TEXT NOT NULL, started_at REAL, finished_at REAL,
    exit_code INTEGER, error TEXT NOT NULL DEFAULT '', log_path TEXT,
    PRIMARY KEY (run_id, task, number)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, kind TEXT NOT NULL,
    at REAL NOT NULL, task TEXT, data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, id);
CREATE TABLE IF NOT EXISTS hook_outbox (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    ref TEXT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (scope, key)
);
"""


STALE_AFTER = 30.0
"""Seconds without a heartbeat after which a run's engine counts as gone (it beats every 5)."""


_CHECKPOINT_PAGES = 8192
_WAL_LIMIT = 32 << 20


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class StateStore:
    """The run-state database. Thread-safe; one connection guarded by a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:  # a file or directory in the way, no permission
            raise self._unusable(exc) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint (two fsyncs, ~5 ms here) every 8192 WAL pages, not the default
            # 1000: a run commits a few pages per task, and the WAL is cut back to 32 MiB
            # after each.
            self._db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            self._db.close()
            raise self._unusable(exc) from None
        self._tx = _Transaction(self._db, self._lock)

    def _unusable(self, exc: OSError | sqlite3.Error) -> BackendUnavailable:
        why: object = exc
        if isinstance(exc, OSError) and exc.strerror:
            why = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        return BackendUnavailable(
            f"cannot use the state database {self.path}: {why}; move it aside (Forge starts "
            "a new one) or point FORGE_HOME elsewhere")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def tx(self) -> _Transaction:
        """One write transaction (``BEGIN IMMEDIATE``), committed when the ``with`` block
        ends, rolled back if it raises; nested uses join the outer one."""
        return self._tx

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, args)
            cur.row_factory = sqlite3.Row
            return cur.fetchall()

    # -- runs ---------------------------------------------------------------------------

    def create_run(
        self,
        workflow: str,
        tasks: Sequence[str],
        *,
        params: Mapping[str, Any] | None = None,
        logical_date: str | None = None,
        trigger: str = "manual",
        source: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a new queued run with every task pending; returns its id."""
        run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO runs (run_id, workflow, state, created_at, params, logical_date,"
                " trigger, source) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (run_id, workflow, now, _dumps(dict(params or {})), logical_date, trigger, source),
            )
            db.executemany(
                "INSERT INTO tasks (run_id, name, state, position) VALUES (?, ?, 'pending', ?)",
                [(run_id, name, i) for i, name in enumerate(tasks)],
            )
        return run_id

    def claim_run(self, run_id: str, owner: str, *, stale_after: float = STALE_AFTER) -> None:
        """Take ownership of a run. Refused with :class:`RunLocked` while another owner's
        heartbeat is fresher than ``stale_after`` seconds and its process is alive."""
        now = time.time()
        with self.tx() as db:
            row = db.execute(
                "SELECT owner, heartbeat_at FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            other, beat = row
            if other and other != owner and beat and now - beat < stale_after and _owner_alive(other):
                raise RunLocked(run_id, other)
            db.execute(
                "UPDATE runs SET owner = ?, heartbeat_at = ? WHERE run_id = ?", (owner, now, run_id)
            )

    def heartbeat(self, run_id: str, owner: str) -> bool:
        """Renew ownership; ``False`` when someone else took the run over."""
        with self.tx() as db:
            cur = db.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND owner = ?",
                (time.time(), run_id, owner),
            )
            return cur.rowcount == 1

    def release_run(self, run_id: str, owner: str) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE runs SET owner = NULL, heartbeat_at = NULL WHERE run_id = ? AND owner = ?",
                (run_id, owner),
            )

    def set_run_state(self, run_id: str, state: str, **times: float | None) -> None:
        """Set a run's state and any of ``started_at`` / ``finished_at``."""
        with self.tx() as db:
            db.execute(*run_state_update(run_id, state, times))

    def resolve_run(self, ref: str) -> str:
        """A run id from a full id, a unique prefix, or ``last`` / ``last:WORKFLOW``."""
        if ref == "last" or ref.startswith("last:"):
            wf = ref.partition(":")[2]
            rows = self.query(
                "SELECT run_id FROM runs" + (" WHERE workflow = ?" if wf else "")
                + " ORDER BY created_at DESC LIMIT 1", (wf,) if wf else ()
            )
        else:
            rows = self.query("SELECT run_id FROM runs WHERE run_id = ?", (ref,)) or self.query(
                "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
                (ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            )
        if not rows:
            raise NotFound(f"no run matches {ref!r}; see: forge workflow history")
        if len(rows) > 1:
            raise NotFound(f"run id prefix {ref!r} is ambiguous; give more characters")
        return str(rows[0]["run_id"])

    def get_run(self, run_id: str, *, with_tasks: bool = True) -> RunRecord:
        rows = self.query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFound(f"no run {run_id!r}; see: forge workflow history")
        return self._run(rows[0], self.tasks(run_id) if with_tasks else ())

    def list_runs(
        self, workflow: str | None = None, *, states: Sequence[str] = (), limit: int = 20,
        hooks_pending: bool = False,
    ) -> list[RunRecord]:
        """Runs newest first, without their tasks (``hooks_pending``: only runs with hook
        calls in the outbox)."""
        where, args = [], []
        if workflow:
            where.append("workflow = ?")
            args.append(workflow)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if hooks_pending:
            where.append("run_id IN (SELECT run_id FROM hook_outbox)")
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self.query(sql + " ORDER BY created_at DESC LIMIT ?", (*args, limit))
        return [self._run(r, ()) for r in rows]

    @staticmethod
    def _run(row: sqlite3.Row, tasks: Sequence[TaskRecord]) -> RunRecord:
        return RunRecord(
            run_id=row["run_id"], workflow=row["workflow"], state=row["state"],
            created_at=row["created_at"], started_at=row["started_at"],
            finished_at=row["finished_at"], params=json.loads(row["params"]),
            logical_date=row["logical_date"], trigger=row["trigger"], owner=row["owner"],
            heartbeat_at=row["heartbeat_at"], source=row["source"], tasks=tuple(tasks),
        )

    # -- tasks and attempts ---------------------------------------------------------------

    def tasks(self, run_id: str) -> list[TaskRecord]:
        with self._lock:  # plain tuples: a run of 10,000 tasks is read back in one go
            attempt_rows = self._db.execute(
                "SELECT task, number, state, started_at, finished_at, exit_code, error, log_path"
                " FROM attempts WHERE run_id = ? ORDER BY task, number", (run_id,)).fetchall()
            task_rows = self._db.execute(
                "SELECT name, state, outputs, next_try_at, sla_missed FROM tasks"
                " WHERE run_id = ? ORDER BY position", (run_id,)).fetchall()
        attempts: dict[str, list[AttemptRecord]] = {}
        for task, number, state, started, finished, code, error, log_path in attempt_rows:
            attempts.setdefault(task, []).append(AttemptRecord(
                run_id=run_id, task=task, number=number, state=state, started_at=started,
                finished_at=finished, exit_code=code, error=error, log_path=log_path,
            ))
        return [
            TaskRecord(
                run_id=run_id, name=name, state=state, attempts=tuple(attempts.get(name, ())),
                outputs={} if outputs == "{}" else json.loads(outputs), next_try_at=next_try,
                sla_missed=bool(missed),
            )
            for name, state, outputs, next_try, missed in task_rows
        ]

    def set_task(
        self,
        run_id: str,
        task: str,
        state: str,
        *,
        outputs: Mapping[str, Any] | None = None,
        next_try_at: float | None = None,
    ) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE tasks SET state = ?, next_try_at = ?"
                + (", outputs = ?" if outputs is not None else "")
                + " WHERE run_id = ? AND name = ?",
                (state, next_try_at, *([_dumps(dict(outputs))] if outputs is not None else []),
                 run_id, task),
            )

    def clear_tasks(self, run_id: str, tasks: Sequence[str]) -> None:
        """Set ``tasks`` of a finished run back to pending (outputs emptied) and the run back
        to queued, in one transaction, for an engine to run them again. Each gets a
        ``task.cleared`` event holding its last attempt number: the attempts up to it keep
        their records but use up none of the task's retries (see :meth:`cleared`)."""
        now = time.time()
        with self.tx() as db:
            last = dict(db.execute("SELECT task, MAX(number) FROM attempts WHERE run_id = ?"
                                   " GROUP BY task", (run_id,)).fetchall())
            for task in tasks:
                db.execute("UPDATE tasks SET state = 'pending', next_try_at = NULL,"
                           " outputs = '{}' WHERE run_id = ? AND name = ?", (run_id, task))
                self.add_event(run_id, "task.cleared", task=task, at=now,  # joins this tx
                               data={"after_attempt": last.get(task, 0)})
            db.execute("UPDATE runs SET state = 'queued', finished_at = NULL WHERE run_id = ?",
                       (run_id,))

    def cleared(self, run_id: str) -> dict[str, int]:
        """Task -> the attempt number it was last cleared after (:meth:`clear_tasks`)."""
        found: dict[str, int] = {}
        for task, data in self.query("SELECT task, data FROM events WHERE run_id = ?"
                                     " AND kind = 'task.cleared' ORDER BY id", (run_id,)):
            found[task] = int(json.loads(data)["after_attempt"])
        return found

    # -- cancelling a run from outside its engine -------------------------------------------

    def request_cancel(self, run_id: str) -> None:
        """Ask whichever engine drives (or will drive) ``run_id`` to stop it: it checks every
        second and when it starts. The request stands until :meth:`forget_cancel`."""
        self.set_value("cancel", run_id, {"at": time.time()})

    def cancel_requested(self, run_id: str) -> bool:
        return self.get_value("cancel", run_id) is not None

    def forget_cancel(self, run_id: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM kv WHERE scope = 'cancel' AND key = ?", (run_id,))

    def cancel_abandoned(self, run_id: str) -> None:
        """Record a run no engine holds any more (see :func:`orphaned`) as cancelled: its
        unfinished tasks, the attempts it left running, the run itself, and a
        ``run.finished`` event, in one transaction."""
        now = time.time()
        with self.tx() as db:
            db.execute("UPDATE attempts SET state = 'cancelled', finished_at = ?,"
                       " error = 'cancelled after its engine was gone'"
                       " WHERE run_id = ? AND state = 'running'", (now, run_id))
            done = sorted(FINISHED_TASK_STATES)
            names = [n for (n,) in db.execute(
                f"SELECT name FROM tasks WHERE run_id = ? AND state NOT IN"
                f" ({', '.join('?' * len(done))}) ORDER BY position", (run_id, *done))]
            for name in names:
                db.execute("UPDATE tasks SET state = 'cancelled', next_try_at = NULL"
                           " WHERE run_id = ? AND name = ?", (run_id, name))
                self.add_event(run_id, "task.cancelled", task=name, at=now)
            db.execute("UPDATE runs SET state = 'cancelled', finished_at = ?, owner = NULL,"
                       " heartbeat_at = NULL WHERE run_id = ?", (now, run_id))
            self.add_event(run_id, "run.finished", data={"state": "cancelled"}, at=now)

    def mark_sla_missed(self, run_id: str, task: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE tasks SET sla_missed = 1 WHERE run_id = ? AND name = ?",
                       (run_id, task))

    def start_attempt(self, run_id: str, task: str, number: int, log_path: str | None) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts (run_id, task, number, state, started_at, log_path)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, task, number, time.time(), log_path),
            )
            db.execute("UPDATE tasks SET state = 'running', next_try_at = NULL"
                       " WHERE run_id = ? AND name = ?", (run_id, task))

    def finish_attempt(
        self, run_id: str, task: str, number: int, state: str, *,
        exit_code: int | None = None, error: str = "", finished_at: float | None = None,
    ) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE attempts SET state = ?, finished_at = ?, exit_code = ?, error = ?"
                " WHERE run_id = ? AND task = ? AND number = ?",
                (state, finished_at or time.time(), exit_code, error, run_id, task, number),
            )

    # -- events ---------------------------------------------------------------------------

    def add_event(
        self, run_id: str, kind: str, *, task: str | None = None,
        data: Mapping[str, Any] | None = None, at: float | None = None,
    ) -> int:
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO events (run_id, kind, at, task, data) VALUES (?, ?, ?, ?, ?)",
                (run_id, kind, at or time.time(), task, _dumps(dict(data or {}))),
            )
            return int(cur.lastrowid or 0)

    def events(self, run_id: str | None = None, *, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        sql = "SELECT * FROM events WHERE id > ?" + (" AND run_id = ?" if run_id else "")
        rows = self.query(sql + " ORDER BY id LIMIT ?",
                           (after, run_id, limit) if run_id else (after, limit))
        return [EventRecord(id=r["id"], run_id=r["run_id"], kind=r["kind"], at=r["at"],
                            task=r["task"], data=json.loads(r["data"])) for r in rows]

    # -- hooks committed and not yet sent -------------------------------------------------

    def pending_hooks(self, run_id: str | None = None) -> list[PendingHook]:
        """Hook calls an engine committed and never recorded as sent, oldest first (of one
        run, or of every run)."""
        sql = "SELECT * FROM hook_outbox" + (" WHERE run_id = ?" if run_id else "")
        rows = self.query(sql + " ORDER BY created_at, id", (run_id,) if run_id else ())
        return [PendingHook(id=r["id"], run_id=r["run_id"], ref=r["ref"], event=r["event"],
                            payload=json.loads(r["payload"])) for r in rows]

    def hook_sent(self, hook: PendingHook, kind: str, *, task: str | None,
                  data: Mapping[str, Any], at: float) -> None:
        """Record how a hook call ended (event ``kind``) and take it out of the outbox, in one
        transaction."""
        with self.tx() as db:
            db.execute("DELETE FROM hook_outbox WHERE id = ?", (hook.id,))
            self.add_event(hook.run_id, kind, task=task, data=data, at=at)  # joins this tx

    # -- small durable values (scheduler cursors, pause flags) -----------------------------

    def get_value(self, scope: str, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM kv WHERE scope = ? AND key = ?", (scope, key))
        return json.loads(rows[0]["value"]) if rows else default

    def set_value(self, scope: str, key: str, value: Any) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO kv (scope, key, value) VALUES (?, ?, ?)",
                       (scope, key, _dumps(value)))

    # -- retention ------------------------------------------------------------------------

    def prune(self, keep: int, workflow: str | None = None) -> list[RunRecord]:
        """Delete all but the newest ``keep`` finished runs per workflow; returns the deleted."""
        victims: list[RunRecord] = []
        wfs = [workflow] if workflow else [r["workflow"] for r in
                                           self.query("SELECT DISTINCT workflow FROM runs")]
        for wf in wfs:
            rows = self.query(
                "SELECT * FROM runs WHERE workflow = ? AND state IN"
                " ('succeeded','failed','cancelled')"
                " AND run_id NOT IN (SELECT run_id FROM hook_outbox)"  # its hooks go first
                " ORDER BY created_at DESC LIMIT -1 OFFSET ?",
                (wf, keep),
            )
            victims.extend(self._run(r, ()) for r in rows)
        with self.tx() as db:
            for run in victims:
                db.execute("DELETE FROM events WHERE run_id = ?", (run.run_id,))
                self.forget_cancel(run.run_id)
                db.execute("DELETE FROM runs WHERE run_id = ?", (run.run_id,))
        return victims

    def counts(self) -> dict[str, int]:
        return {t: int(self.query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"])
                for t in ("runs", "tasks", "attempts", "events")}

    def vacuum(self) -> None:
        with self._lock:
            self._db.execute("VACUUM")


def run_state_update(
    run_id: str, state: str, times: Mapping[str, float | None]
) -> tuple[str, tuple[Any, ...]]:
    """The statement that sets a run's state and any of ``started_at`` / ``finished_at``."""
    times = {k: v for k, v in times.items() if k in ("started_at", "finished_at")}
    cols = "".join(f", {k} = ?" for k in times)
    return f"UPDATE runs SET state = ?{cols} WHERE run_id = ?", (state, *times.values(), run_id)


class _Transaction:
    """The store's transaction context (a plain class: the engine opens several per task)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock
        self._depth = 0

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        if self._depth == 0:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and exc_type is None:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")  # never leave the connection mid-transaction
                    raise
            elif self._depth == 0:
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()


def orphaned(run: RunRecord, now: float, stale_after: float = STALE_AFTER) -> bool:
    """Whether no engine holds ``run``: its owner's heartbeat is stale or its process is gone
    (a run created with no owner yet counts as held for ``stale_after``: an engine is about
    to claim it). Says nothing of the run's state: a finished run's engine may still be
    sending its hooks."""
    if run.owner is None:
        return now - run.created_at >= stale_after
    beat = run.heartbeat_at
    return not (beat is not None and now - beat < stale_after and _owner_alive(run.owner))


def _owner_alive(owner: str) -> bool:
    """Owners are ``host:pid:nonce``; a dead pid on this host cannot hold a run."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != os.uname().nodename or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
