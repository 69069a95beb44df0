"""Agent state other processes can see: one JSON file per agent under
``$FORGE_HOME/agents/``, written atomically, and control requests (stop, pause, resume)
dropped next to it for the manager to act on."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import psutil

from ..exceptions import NotFound
from ..queue import forge_home

__all__ = ["agents_dir", "read_agents", "request", "take_request", "write_state"]

ACTIONS = ("stop", "pause", "resume")


def agents_dir(base: Path | None = None) -> Path:
    return base if base is not None else forge_home() / "agents"


def write_state(directory: Path, name: str, state: dict[str, Any]) -> None:
    """Atomically replace ``name``'s state file (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, directory / f"{name}.json")


def read_agents(directory: Path) -> list[dict[str, Any]]:
    """Every agent's last state; ones whose manager died show as ``gone``."""
    out = []
    for path in sorted(directory.glob("*.json")) if directory.exists() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("state") != "stopped" and not _alive(state.get("manager_pid")):
            state["state"] = "gone"
        out.append(state)
    return out


def _alive(pid: Any) -> bool:
    return isinstance(pid, int) and psutil.pid_exists(pid)


def request(directory: Path, name: str, action: str) -> None:
    """Ask the manager of agent ``name`` to ``stop``, ``pause`` or ``resume`` it."""
    if not (directory / f"{name}.json").exists():
        raise NotFound(f"no agent named {name!r}; see: forge agent list")
    (directory / f"{name}.control").write_text(action)


def take_request(directory: Path, name: str) -> str | None:
    """The pending control request for ``name`` (consumed), if any."""
    path = directory / f"{name}.control"
    try:
        action = path.read_text().strip()
        path.unlink()
    except OSError:
        return None
    return action if action in ACTIONS else None
