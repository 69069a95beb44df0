"""Print a log file to stdout, and keep printing while whatever writes it is still going
(``forge logs -f``, ``forge container logs -f``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["follow"]


def follow(path: Path, done: Callable[[], bool] | None, interval: float = 0.2) -> None:
    """Copy ``path`` to stdout; with ``done``, wait for more until ``done()`` says the writer
    has finished and everything it wrote was copied."""
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if done is None or done():
                return
            time.sleep(interval)
