"""The sqlite queue's schema and row mapping, kept apart from the transitions."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..abc import QueueItem
from ._common import loads

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload TEXT,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    max_deliveries INTEGER NOT NULL,
    created_at REAL NOT NULL,
    run_at REAL NOT NULL,
    key TEXT UNIQUE,
    tags TEXT NOT NULL DEFAULT '[]',
    checkpoint TEXT,
    result TEXT,
    last_error TEXT,
    consumer TEXT,
    lease_expires_at REAL,
    token INTEGER NOT NULL DEFAULT 0,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS items_deliverable ON items (priority, run_at, seq)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS items_leases ON items (lease_expires_at) WHERE state = 'reserved';
CREATE INDEX IF NOT EXISTS items_state ON items (state, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('token', 0);
CREATE TABLE IF NOT EXISTS rate_limits (
    kind TEXT PRIMARY KEY,
    rate REAL NOT NULL,
    burst REAL NOT NULL,
    tokens REAL NOT NULL,
    updated REAL NOT NULL
);
"""

COLUMNS = (
    "id, kind, payload, priority, state, deliveries, max_deliveries, created_at, run_at, key, "
    "tags, checkpoint, result, last_error, consumer, lease_expires_at, token, finished_at"
)


def to_item(row: sqlite3.Row | tuple[Any, ...]) -> QueueItem:
    """Build a :class:`QueueItem` from a row selected with :data:`COLUMNS`."""
    (id_, kind, payload, priority, state, deliveries, max_deliveries, created_at, run_at, key,
     tags, checkpoint, result, last_error, consumer, lease_expires_at, token, finished_at) = row
    return QueueItem(
        id=id_, kind=kind, payload=loads(payload), priority=priority, state=state,
        deliveries=deliveries, max_deliveries=max_deliveries, created_at=created_at,
        run_at=run_at, key=key, tags=tuple(loads(tags) or ()), checkpoint=loads(checkpoint),
        result=loads(result), last_error=last_error, consumer=consumer,
        lease_expires_at=lease_expires_at, token=token, finished_at=finished_at,
    )
