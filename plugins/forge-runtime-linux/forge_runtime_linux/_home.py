"""Where Forge keeps its data: the same ``$FORGE_HOME`` rule as the core."""

from __future__ import annotations

import os
from pathlib import Path


def forge_home() -> Path:
    """``$FORGE_HOME``, else ``$XDG_DATA_HOME/forge``, else ``~/.local/share/forge``."""
    if env := os.environ.get("FORGE_HOME"):
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "forge"
