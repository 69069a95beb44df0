"""Print a log file to stdout, and keep printing while whatever writes it is still going
(``forge logs -f``, ``forge container logs -f``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["follow", "names_file"]


def follow(path: Path, done: Callable[[], bool] | None, interval: float = 0.2) -> bool:
    """Copy ``path`` to stdout; with ``done``, wait for the file to appear and for more
    until ``done()`` says the writer has finished and everything it wrote was copied.
    Returns whether there was a file.

    A log its writer left empty may be unlinked and its file reused for the next writer's
    log (see :mod:`forge_core.runtime._logs`): so what is read is shown only while ``path``
    still names the file it came from."""
    while True:
        try:
            fh = path.open("rb")
            break
        except FileNotFoundError:
            if done is None or done():
                return False
            time.sleep(interval)
    with fh:
        inode = os.fstat(fh.fileno()).st_ino
        while True:
            chunk = fh.read(65536)
            if chunk:
                if not names_file(path, inode):
                    return True
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if done is None or done():
                return True
            time.sleep(interval)


def names_file(path: Path, inode: int) -> bool:
    """Whether ``path`` still names the file ``inode`` (a silent log's file may have become
    the next attempt's since it was opened)."""
    try:
        return path.stat().st_ino == inode
    except FileNotFoundError:
        return False
