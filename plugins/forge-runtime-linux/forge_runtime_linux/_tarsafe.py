"""Safe extraction of untrusted tar streams into an image root.

Every path is walked component by component with ``O_NOFOLLOW`` relative to the root's
file descriptor, so no entry can land outside it (``..``, absolute names, a symlink
planted earlier and written through, hardlinks to links or to outside). Device nodes are
refused, setuid/setgid bits stripped, and size, entry count and depth are bounded. Each
refusal is a :class:`ConfigError`; the caller discards the partial tree.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

from forge_core.exceptions import ConfigError

__all__ = ["Budget", "LayerWriter", "Limits"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on one import; exceeding any refuses the whole archive."""

    max_bytes: int = 16 << 30
    max_entries: int = 1_000_000
    max_depth: int = 64
    keep_setuid: bool = False
    uid_shift: int = 0
    """Added to every owner uid/gid (the host range container root maps to)."""


@attrs.define
class Budget:
    """What an import has used so far, shared across the layers of one image."""

    bytes: int = 0
    entries: int = 0


def _refuse(source: str, name: str, why: str) -> ConfigError:
    return ConfigError(f"{source}: refusing entry {name!r}: {why}")


def split_name(source: str, name: str, limits: Limits) -> list[str]:
    """Normalise a member name into path components, refusing escapes and excess depth."""
    if name.startswith("/"):
        raise _refuse(source, name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(source, name, "path contains '..'")
    if len(parts) > limits.max_depth:
        raise _refuse(source, name, f"deeper than {limits.max_depth} levels")
    if any("\0" in p for p in parts):
        raise _refuse(source, name, "NUL byte in name")
    return parts


@attrs.define
class LayerWriter:
    """Applies tar layers, in order, onto one directory tree opened as ``root_fd``."""

    root_fd: int
    limits: Limits
    budget: Budget
    source: str
    _dir_modes: dict[tuple[str, ...], tuple[int, float]] = attrs.field(factory=dict)

    @contextmanager
    def _parent(self, name: str, parts: list[str], *, create: bool) -> Iterator[int]:
        """Open the directory holding ``parts[-1]`` without following any symlink."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts[:-1]:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _refuse(self.source, name, f"parent {part!r} is missing") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self._own(part, fd, 0, 0)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _refuse(self.source, name, "a parent is a symlink or a file") from None
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def apply(self, tar: tarfile.TarFile, *, whiteouts: bool) -> None:
        """Extract every member of ``tar`` (a stream is fine), honouring whiteouts if asked."""
        written: set[tuple[str, ...]] = set()
        for member in tar:
            self.budget.entries += 1
            if self.budget.entries > self.limits.max_entries:
                raise ConfigError(f"{self.source}: more than {self.limits.max_entries} entries")
            parts = split_name(self.source, member.name, self.limits)
            if not parts:
                continue
            base = parts[-1]
            if whiteouts and base.startswith(WHITEOUT):
                self._whiteout(member.name, parts, written)
                continue
            written.add(tuple(parts))
            self._member(tar, member, parts)

    def finish(self) -> None:
        """Apply directory modes and times last, deepest first, so extraction could write in them."""
        for parts, (mode, mtime) in sorted(self._dir_modes.items(), key=lambda i: -len(i[0])):
            try:
                with self._parent("/".join(parts), list(parts), create=False) as dfd:
                    os.chmod(parts[-1], mode, dir_fd=dfd, follow_symlinks=False)
                    os.utime(parts[-1], (mtime, mtime), dir_fd=dfd, follow_symlinks=False)
            except (ConfigError, FileNotFoundError, NotADirectoryError):
                continue  # removed by a later whiteout

    def _whiteout(self, name: str, parts: list[str], written: set[tuple[str, ...]]) -> None:
        with self._parent(name, parts, create=True) as dfd:
            if parts[-1] == OPAQUE:
                here = tuple(parts[:-1])
                keep = {p[len(here)] for p in written if len(p) > len(here) and p[: len(here)] == here}
                for entry in os.listdir(dfd):
                    if entry not in keep:
                        _remove(dfd, entry)
            else:
                _remove(dfd, parts[-1][len(WHITEOUT) :])

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str]) -> None:
        name = member.name
        if member.ischr() or member.isblk():
            raise _refuse(self.source, name, "device nodes are not allowed in images")
        if member.uid >= 65536 and self.limits.uid_shift:
            raise _refuse(self.source, name, f"owner uid {member.uid} is outside the mapped range")
        mode = member.mode & 0o7777
        if not self.limits.keep_setuid:
            mode &= ~(stat.S_ISUID | stat.S_ISGID) if not member.isdir() else ~stat.S_ISUID
        with self._parent(name, parts, create=True) as dfd:
            base = parts[-1]
            if member.isdir():
                self._dir(dfd, base, parts, member, mode)
                return
            _remove(dfd, base)
            if member.isreg():
                self._file(tar, member, dfd, base, mode)
            elif member.issym():
                os.symlink(member.linkname, base, dir_fd=dfd)
            elif member.islnk():
                self._hardlink(member, dfd, base)
            elif member.isfifo():
                os.mkfifo(base, mode, dir_fd=dfd)
            else:
                raise _refuse(self.source, name, f"unsupported entry type {member.type!r}")
            self._own(base, dfd, member.uid, member.gid)
            if not member.islnk():
                os.utime(base, (member.mtime, member.mtime), dir_fd=dfd, follow_symlinks=False)

    def _dir(self, dfd: int, base: str, parts: list[str], member: tarfile.TarInfo, mode: int) -> None:
        try:
            st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                _remove(dfd, base)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkdir(base, 0o700, dir_fd=dfd)
        self._own(base, dfd, member.uid, member.gid)
        self._dir_modes[tuple(parts)] = (mode, float(member.mtime))

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, dfd: int, base: str, mode: int) -> None:
        self.budget.bytes += member.size
        if self.budget.bytes > self.limits.max_bytes:
            raise ConfigError(f"{self.source}: content larger than {self.limits.max_bytes} bytes")
        src = tar.extractfile(member)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=dfd)
        try:
            remaining = member.size
            while src is not None and remaining > 0:
                chunk = src.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ConfigError(f"{self.source}: archive truncated inside {member.name!r}")
                os.write(fd, chunk)
                remaining -= len(chunk)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, dfd: int, base: str) -> None:
        tparts = split_name(self.source, member.linkname, self.limits)
        if not tparts:
            raise _refuse(self.source, member.name, "hardlink to the image root")
        with self._parent(member.name, tparts, create=False) as tfd:
            try:
                st = os.stat(tparts[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise _refuse(self.source, member.name, "hardlink target is missing") from None
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(self.source, member.name, "hardlink target is not a regular file")
            os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)

    def _own(self, base: str, dfd: int, uid: int, gid: int) -> None:
        shift = self.limits.uid_shift
        if os.geteuid() != 0:
            return
        os.chown(base, uid + shift, gid + shift, dir_fd=dfd, follow_symlinks=False)


def _remove(dfd: int, base: str) -> None:
    """Remove ``base`` (file, link or whole directory) inside ``dfd`` without following links."""
    try:
        st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(base, dir_fd=dfd)
        return
    sub = os.open(base, _DIR_FLAGS, dir_fd=dfd)
    try:
        for entry in os.listdir(sub):
            _remove(sub, entry)
    finally:
        os.close(sub)
    os.rmdir(base, dir_fd=dfd)
