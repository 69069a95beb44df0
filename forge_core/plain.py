"""Records as plain JSON-ready data, for the CLI's ``--json`` and the daemon's API alike."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import attrs

__all__ = ["plain"]


def plain(value: Any) -> Any:
    """``value`` with attrs records turned into dicts (their callables left out), tuples into
    lists, enums into their values and paths into strings."""
    if attrs.has(type(value)):
        return {k: plain(v) for k, v in attrs.asdict(value, recurse=False).items()
                if not callable(v)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value
