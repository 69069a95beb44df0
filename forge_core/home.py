"""Where Forge keeps its files. Imports nothing heavy, so the fast CLI paths of plugins can
use the same rule as the core."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["forge_home"]


def forge_home(configured: str | None = None) -> Path:
    """``configured`` (a project's ``forge.home`` setting), else ``$FORGE_HOME``, else
    ``$XDG_DATA_HOME/forge``, else ``~/.local/share/forge``."""
    explicit = configured or os.environ.get("FORGE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "forge"
