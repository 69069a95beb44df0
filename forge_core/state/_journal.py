"""Group commit for one run: state changes collected in memory and written by
:meth:`Journal.commit` in one transaction, a few statements for any number of them.

A task's successive states in one batch become one row update, an attempt started and ended
in one batch one row; events keep their order. Nothing is announced before it is committed:
the engine publishes a batch's events only after :meth:`commit` returned.

An attempt's start must be on disk before its process runs, yet a transaction per start
would cost more than the rest of the engine's work for a short task. So a start is written
ahead: one line appended to the run's start file (``<database>-starts/<run id>``), which
outlives a killed Forge as the database's WAL does, then committed with the next batch, after
which the file is emptied. A resumed run reads the starts the database never got
(:meth:`Journal.lost_starts`) and records them as interrupted attempts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._store import run_state_update

if TYPE_CHECKING:
    from ._records import PendingHook
    from ._store import StateStore

__all__ = ["Journal"]

def _encoders() -> tuple[Callable[[Any], str], Callable[[Any], str]]:
    """Compact JSON, anything unknown as its ``str``, through the C encoder called directly
    where there is one (``JSONEncoder.encode`` adds a layer of Python per call, a third of
    the cost of encoding an event's few fields). The first, for a task's outputs, checks for
    cycles with a fresh ``markers`` dict per call, as JSONEncoder does; the second, for what
    the engine builds itself (event data, start lines), reuses one encoder without that
    check."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        encode: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), default=str).encode
        return encode, encode
    escape = json.encoder.encode_basestring_ascii
    own = make(None, str, escape, None, ":", ",", False, False, True)
    return (lambda obj: "".join(make({}, str, escape, None, ":", ",", False, False, True)(obj, 0)),
            lambda obj: "".join(own(obj, 0)))


_encode, _encode_own = _encoders()

_TASKS = ("UPDATE tasks SET state = ?, next_try_at = ?, outputs = COALESCE(?, outputs)"
          " WHERE run_id = ? AND name = ?")
_ATTEMPTS = ("INSERT OR REPLACE INTO attempts (run_id, task, number, state, started_at,"
             " finished_at, exit_code, error, log_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_FINISH = ("UPDATE attempts SET state = ?, finished_at = ?, exit_code = ?, error = ?"
           " WHERE run_id = ? AND task = ? AND number = ?")
_EVENTS = "INSERT INTO events (run_id, kind, at, task, data) VALUES (?, ?, ?, ?, ?)"
_HOOK = ("INSERT INTO hook_outbox (id, run_id, ref, event, payload, created_at)"
         " VALUES (?, ?, ?, ?, ?, ?)")
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
"""How the start file is opened (Windows has no O_CLOEXEC: its descriptors are not
inherited unless asked)."""


class Journal:
    """The pending changes of run ``run_id`` (a plain class: the engine calls it several
    times per task)."""

    def __init__(self, store: StateStore, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self._starts_path = Path(f"{store.path}-starts") / run_id
        self._starts: int | None = None
        """The start file's descriptor, opened on first use (see :meth:`_start_file`)."""
        self._written_ahead = False
        """The start file holds lines the next commit makes redundant."""
        self._tasks: dict[str, list[Any]] = {}
        self._attempts: dict[tuple[str, int], list[Any]] = {}
        self._open: dict[tuple[str, int], list[Any]] = {}
        """Attempts started through this journal and not ended: their full rows."""
        self._events: list[tuple[Any, ...]] = []
        self._other: list[tuple[str, Sequence[Any]]] = []

    def __bool__(self) -> bool:
        return bool(self._tasks or self._attempts or self._events or self._other)

    def pending(self, task: str) -> bool:
        """Whether a state of ``task`` waits for the next commit."""
        return task in self._tasks

    def set_task(
        self, task: str, state: str, *, outputs: Mapping[str, Any] | None = None,
        next_try_at: float | None = None,
    ) -> None:
        row = self._tasks.get(task)
        encoded = None if outputs is None else _encode(dict(outputs)) if outputs else "{}"
        if row is None:
            self._tasks[task] = [state, next_try_at, encoded, self._run_id, task]
        else:
            row[0], row[1] = state, next_try_at
            if encoded is not None:
                row[2] = encoded

    def start_attempt(self, task: str, number: int, log_path: str | None) -> None:
        """Record a running attempt (and its task as running), on disk when this returns:
        written ahead to the start file, committed with the next batch."""
        row = [self._run_id, task, number, "running", time.time(), None, None, "", log_path]
        os.write(self._start_file(), (_encode_own([task, number, row[4], log_path]) + "\n").encode())
        self._written_ahead = True
        self._open[task, number] = self._attempts[task, number] = row
        self.set_task(task, "running")

    def record_lost_start(self, task: str, number: int, started_at: float,
                          log_path: str | None) -> None:
        """An attempt that started (see :meth:`lost_starts`) but was never committed: it
        ended, unseen, when its engine did."""
        self._attempts[task, number] = [self._run_id, task, number, "interrupted", started_at,
                                        time.time(), None, "engine stopped mid-attempt",
                                        log_path]
        self._written_ahead = True  # the next commit empties the start file

    def lost_starts(self) -> list[tuple[str, int, float, str | None]]:
        """Starts written ahead by an earlier engine of this run and maybe never committed:
        (task, attempt, started at, log path) — the caller skips those the database has. A
        line cut short by the kill is skipped (its attempt never started)."""
        try:
            lines = self._starts_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            try:
                task, number, at, log_path = json.loads(line)
            except ValueError:
                continue
            found.append((str(task), int(number), float(at), log_path))
        return found

    def close(self, *, remove: bool = True) -> None:
        """The run is over: the start file goes (``remove=False``: another engine took the
        run, and the file is its own now)."""
        if self._starts is not None:
            os.close(self._starts)
            self._starts = None
        if remove:
            self._starts_path.unlink(missing_ok=True)

    def finish_attempt(
        self, task: str, number: int, state: str, *, exit_code: int | None = None,
        error: str = "", finished_at: float | None = None,
    ) -> None:
        ended = finished_at or time.time()
        row = self._open.pop((task, number), None)
        if row is None:  # started before this engine: update the stored row
            self._other.append((_FINISH, (state, ended, exit_code, error, self._run_id, task,
                                          number)))
            return
        row[3], row[5], row[6], row[7] = state, ended, exit_code, error
        self._attempts[task, number] = row

    def add_event(self, kind: str, task: str | None, data: Mapping[str, Any], at: float) -> None:
        self._events.append((self._run_id, kind, at, task, _encode_own(data) if data else "{}"))

    def add_hook(self, hook: PendingHook) -> None:
        """A hook call to make once this batch is committed; it stays in the store's outbox
        until the call is recorded as sent (:meth:`StateStore.hook_sent`)."""
        self._other.append((_HOOK, (hook.id, hook.run_id, hook.ref, hook.event,
                                    _encode_own(hook.payload), time.time())))

    def set_run_state(self, state: str, **times: float | None) -> None:
        """The run's state and any of ``started_at`` / ``finished_at``."""
        self._other.append(run_state_update(self._run_id, state, times))

    def mark_sla_missed(self, task: str) -> None:
        self._other.append(("UPDATE tasks SET sla_missed = 1 WHERE run_id = ? AND name = ?",
                            (self._run_id, task)))

    def commit(self) -> None:
        """Write everything pending in one transaction; on failure it stays pending."""
        if not self:
            return
        with self._store.tx() as db:
            if self._tasks:
                db.executemany(_TASKS, self._tasks.values())
            if self._attempts:
                db.executemany(_ATTEMPTS, self._attempts.values())
            if self._events:
                db.executemany(_EVENTS, self._events)
            for sql, args in self._other:
                db.execute(sql, args)
        self._tasks = {}
        self._attempts = {}
        self._events = []
        self._other = []
        if self._written_ahead:  # every start in the file is committed now
            os.ftruncate(self._start_file(), 0)
            self._written_ahead = False

    def _start_file(self) -> int:
        if self._starts is None:
            self._starts_path.parent.mkdir(parents=True, exist_ok=True)
            self._starts = os.open(self._starts_path, _APPEND, 0o600)
        return self._starts
