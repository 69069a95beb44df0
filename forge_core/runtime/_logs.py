"""Children's log files, with no file left for a child that wrote nothing.

Creating a file costs an inode: about what a link and an unlink cost on a quiet ext4, but
several times that for minutes after mass deletions (inode allocation skips recently freed
inodes; retention deletes runs' logs by the thousand), and a fan-out of short tasks pays it
once per attempt, leaving as many empty files. So a child's log starts as a spare empty file
of its folder (a *spool*), hard-linked to the log's path: the path exists, and can be
followed, from the start. When the child is reaped, a log that holds output keeps the inode
(the spool name goes); an empty one is unlinked, and its inode waits, empty, under the spool
name for the next child. A folder keeps as many spools as children were logging there at
once, until :meth:`release`.

A reader of a log that was unlinked this way must not show what it reads afterwards, which
is the next child's output: :func:`forge_core.tail.follow` checks that the path still names
the file it reads.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import weakref
from pathlib import Path

from ..exceptions import ForgeError

__all__ = ["LogFiles", "open_log"]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_names = itertools.count()


def open_log(path: str | os.PathLike[str]) -> int:
    """``path`` opened for appending (its folder made if missing)."""
    try:
        try:
            return os.open(path, _FLAGS, 0o644)
        except FileNotFoundError:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, _FLAGS, 0o644)
    except OSError as exc:
        raise ForgeError(f"cannot open log file {path}: {exc.strerror}") from None


class LogFiles:
    """The log files of one runtime's children: :meth:`open` one for a child, :meth:`close`
    it once the child was reaped."""

    def __init__(self) -> None:
        self._spare: dict[str, list[tuple[int, str]]] = {}
        """folder -> (descriptor, spool path) of its empty spools."""
        self._linked: dict[int, tuple[str, str]] = {}
        """descriptor -> (log path, spool path) of the logs children write now."""
        self._finalizer = weakref.finalize(self, _unlink_spares, self._spare)

    def open(self, path: str | os.PathLike[str]) -> int:
        """A descriptor a child writes its log ``path`` through (an existing file, or a
        fifo, is appended to as it is)."""
        path = os.fspath(path)
        folder = os.path.dirname(path)
        spare = self._spare.setdefault(folder, [])
        spool = self._spool(folder, spare)
        if spool is None:
            return open_log(path)
        fd, name = spool
        try:
            os.link(name, path)
        except OSError:  # it exists (appended to), or hard links are not allowed here
            spare.append(spool)
            return open_log(path)
        self._linked[fd] = (path, name)
        return fd

    def close(self, fd: int) -> None:
        """The child writing through ``fd`` was reaped: keep its log if it wrote any."""
        linked = self._linked.pop(fd, None)
        if linked is None:
            os.close(fd)
            return
        path, name = linked
        try:
            if os.fstat(fd).st_size:  # the log keeps the inode
                os.unlink(name)
                os.close(fd)
                return
            os.unlink(path)
        except OSError:  # moved or deleted under Forge: the spool goes too
            os.close(fd)
            _unlink_quietly(name)
            return
        self._spare.setdefault(os.path.dirname(path), []).append((fd, name))

    def release(self) -> None:
        """Delete every spare spool (the logs children still write stay open)."""
        _unlink_spares(self._spare)

    def _spool(self, folder: str, spare: list[tuple[int, str]]) -> tuple[int, str] | None:
        """An empty spool of ``folder``: a spare one, else a new one (``None`` if it cannot be
        made: the caller opens the log itself and reports why that fails)."""
        while spare:
            fd, name = spare.pop()
            if not os.fstat(fd).st_size:
                return fd, name
            # written after its child was reaped (a process that escaped the group)
            os.close(fd)
            _unlink_quietly(name)
        for made_folder in (False, True):
            name = os.path.join(folder, f".spool-{os.getpid()}-{next(_names)}")
            try:
                return os.open(name, _FLAGS | os.O_EXCL, 0o644), name
            except FileNotFoundError:
                if made_folder:
                    return None
                try:
                    os.makedirs(folder, exist_ok=True)
                except OSError:
                    return None
            except OSError:
                return None
        return None


def _unlink_spares(spare: dict[str, list[tuple[int, str]]]) -> None:
    for spools in spare.values():
        for fd, name in spools:
            os.close(fd)
            _unlink_quietly(name)
    spare.clear()


def _unlink_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)
