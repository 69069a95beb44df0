"""Helpers several test modules share: the ``forge`` command line and a polling wait."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

PY = sys.executable
FORGE = [PY, "-c", "from forge_core.cli import main; main()"]
"""``forge`` run by this interpreter (no console script or PATH involved)."""


def wait_for(check: Callable[[], Any], what: str = "condition", timeout: float = 60.0) -> Any:
    """The first truthy value ``check()`` returns, polled every 50 ms; fails the test when
    ``timeout`` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value
