"""Pieces both queue backends share: sortable item ids, JSON encoding, backoff and the
``$FORGE_HOME`` location."""

from __future__ import annotations

import itertools
import json
import random
import secrets
import threading
import time
from typing import Any

from ..state import forge_home  # one definition of where Forge keeps its files

__all__ = ["backoff", "dumps", "forge_home", "loads", "new_id"]

_counter = itertools.count()
_lock = threading.Lock()


def new_id() -> str:
    """A 24-hex-character id that sorts by creation time (ms, then a per-process counter)."""
    with _lock:
        n = next(_counter) & 0xFFFF
    return f"{int(time.time() * 1000):012x}{n:04x}{secrets.token_hex(4)}"


def dumps(value: Any) -> str:
    """Compact JSON; raises ``TypeError`` for values JSON cannot hold."""
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def loads(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)


def backoff(attempt: int, *, base: float = 1.0, factor: float = 2.0, cap: float = 300.0,
            jitter: float = 0.5) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): exponential, capped, with
    up to ``jitter`` times the delay added at random so retries do not arrive in step."""
    delay = min(cap, base * factor ** max(0, attempt - 1))
    return delay + random.uniform(0, jitter * delay)


