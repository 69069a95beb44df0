"""The ``snapshot`` ImageStore: root filesystems extracted once, content-addressed by sha256.

Layout under ``$FORGE_HOME/images``: ``content/<hex>/rootfs`` (never written after import;
containers get an overlay on top), ``content/<hex>/meta.json``, ``refs.json`` (name → id,
replaced atomically under a lock) and ``tmp/`` for imports in progress, which a refusal or a
crash leaves to be swept, never half-published.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import attrs

from forge_core.abc import Image, ImageStore, StoreUsage
from forge_core.exceptions import ConfigError, NotFound
from forge_core.home import forge_home

from ._refs import digest_of, meta, parse_ref, read_refs
from ._tarsafe import Budget, LayerWriter, Limits

__all__ = ["SnapshotImageStore", "parse_ref"]

log = logging.getLogger(__name__)


def default_uid_shift() -> int:
    """As root, the host range container root maps to (see ``_idmap``); rootless, 0: files
    belong to the calling user, who is root in its containers."""
    if os.geteuid() != 0:
        return 0
    from ._idmap import host_base

    return host_base()


def tree_digest(root: Path) -> tuple[str, int]:
    """sha256 over the sorted tree (paths, types, modes, owners, link targets, contents)."""
    digest = hashlib.sha256()
    size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            digest.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode() + b"\0")
            elif stat.S_ISREG(st.st_mode):
                size += st.st_size
                with open(path, "rb") as fh:
                    digest.update(hashlib.file_digest(fh, "sha256").digest())
    return "sha256:" + digest.hexdigest(), size


@attrs.define
class SnapshotImageStore(ImageStore):
    """Content-addressed snapshot images on the local disk."""

    name = "snapshot"

    @attrs.frozen(kw_only=True)
    class Config:
        root: str | None = None
        """Store directory; default ``$FORGE_HOME/images``."""
        max_bytes: int = 16 << 30
        max_entries: int = 1_000_000
        max_depth: int = 64
        keep_setuid: bool = False
        uid_shift: int | None = None
        """Host uid added to file owners; default: as root, the range the runtime's user
        namespace maps container root to; rootless, 0. Set 0 to keep host ids (``userns=False``)."""

    _config: Config = attrs.field(factory=Config, alias="config")
    _root: Path = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._root = Path(self._config.root) if self._config.root else forge_home() / "images"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def uid_shift(self) -> int:
        shift = self._config.uid_shift
        return default_uid_shift() if shift is None else shift

    # --- interface -------------------------------------------------------------------

    async def import_(self, source: Path, name: str) -> Image:
        return await anyio.to_thread.run_sync(self.import_sync, Path(source), name)

    async def get(self, ref: str) -> Image:
        return self.get_sync(ref)

    async def list(self) -> Sequence[Image]:
        return self.list_sync()

    async def remove(self, ref: str) -> None:
        self.remove_sync(ref)

    async def prune(self) -> int:
        return await anyio.to_thread.run_sync(self.prune_sync)

    async def usage(self) -> StoreUsage:
        images = self.list_sync()
        used = self._used_ids()
        size = sum(i.size for i in images)
        return StoreUsage(
            images=len(images),
            bytes=size,
            reclaimable=sum(i.size for i in images if not i.names and i.id not in used),
        )

    # --- synchronous core ----------------------------------------------------------

    def import_sync(self, source: Path, name: str) -> Image:
        """Import ``source`` under ``name``; a refusal leaves nothing behind."""
        ref = parse_ref(name)
        if not source.exists():
            raise NotFound(f"no such file or directory: {source}")
        self._ensure()
        work = Path(tempfile.mkdtemp(dir=self._root / "tmp", prefix="import-"))
        work.chmod(0o711)  # user-namespaced containers must traverse to rootfs
        try:
            rootfs = work / "rootfs"
            rootfs.mkdir()
            (work / "scratch").mkdir()
            config = self._extract(source, work / "scratch", rootfs)
            shutil.rmtree(work / "scratch")
            digest, size = tree_digest(rootfs)
            self._publish(work, digest, size, config)
        except OSError as exc:
            raise ConfigError(f"{source}: import failed: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with self._locked_refs() as refs:
            refs[ref] = digest
        log.info("imported %s as %s (%s)", source, ref, digest)
        return self.get_sync(ref)

    def _extract(self, source: Path, scratch: Path, rootfs: Path) -> dict[str, object]:
        from ._formats import open_source

        cfg = self._config
        limits = Limits(
            max_bytes=cfg.max_bytes,
            max_entries=cfg.max_entries,
            max_depth=cfg.max_depth,
            keep_setuid=cfg.keep_setuid,
            uid_shift=self.uid_shift,
        )
        root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            writer = LayerWriter(root_fd=root_fd, limits=limits, budget=Budget(), source=str(source))
            with open_source(source, scratch) as (kind, layers, config):
                for opener in layers:
                    with opener() as tar:
                        writer.apply(tar, whiteouts=kind in ("oci", "docker"))
            writer.finish()
            if self.uid_shift and os.geteuid() == 0:
                os.chown(rootfs, self.uid_shift, self.uid_shift)
            os.chmod(rootfs, 0o755)  # noqa: S103 -- an image root is world-readable, as / is
        finally:
            os.close(root_fd)
        return config

    def _publish(self, work: Path, digest: str, size: int, config: dict[str, object]) -> None:
        final = self._content(digest)
        if final.exists():
            return  # same content already stored: deduplicated
        meta = {"id": digest, "size": size, "created": time.time(), "config": config}
        (work / "meta.json").write_text(json.dumps(meta))
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(work, final)
        if not final.exists():
            raise ConfigError(f"could not publish image {digest}")

    def get_sync(self, ref: str) -> Image:
        refs = self._refs()
        return self._image(digest_of(self._root, ref, refs), refs)

    def _image(self, digest: str, refs: dict[str, str]) -> Image:
        data = meta(self._root, digest)
        return Image(
            id=digest,
            names=tuple(sorted(n for n, d in refs.items() if d == digest)),
            rootfs=self._content(digest) / "rootfs",
            size=int(data.get("size", 0)),
            created=float(data.get("created", 0.0)),
            config=dict(data.get("config") or {}),
        )

    def list_sync(self) -> builtins.list[Image]:
        content = self._root / "content"
        if not content.exists():
            return []
        refs = self._refs()
        images = []
        for entry in sorted(content.iterdir()):
            with contextlib.suppress(NotFound):
                images.append(self._image("sha256:" + entry.name, refs))
        return images

    def remove_sync(self, ref: str) -> None:
        image = self.get_sync(ref)
        with self._locked_refs() as refs:
            named = parse_ref(ref) if not ref.startswith("sha256:") and parse_ref(ref) in refs else None
            for n in [named] if named else list(image.names):
                refs.pop(n, None)
            still_named = image.id in refs.values()
        if not still_named and image.id not in self._used_ids():
            self._delete_content(image.id)

    def prune_sync(self) -> int:
        freed = 0
        refs = self._refs()
        used = self._used_ids() | set(refs.values())
        for image in self.list_sync():
            if image.id not in used:
                freed += image.size
                self._delete_content(image.id)
        tmp = self._root / "tmp"
        if tmp.exists():
            for entry in tmp.iterdir():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
        return freed

    # --- helpers ----------------------------------------------------------------------

    def _ensure(self) -> None:
        for sub in ("content", "tmp"):
            (self._root / sub).mkdir(parents=True, exist_ok=True)

    def _content(self, digest: str) -> Path:
        return self._root / "content" / digest.removeprefix("sha256:")

    def _delete_content(self, digest: str) -> None:
        path = self._content(digest)
        trash = self._root / "tmp" / f"delete-{path.name}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _refs(self) -> dict[str, str]:
        return read_refs(self._root)

    @contextlib.contextmanager
    def _locked_refs(self) -> Iterator[dict[str, str]]:
        self._root.mkdir(parents=True, exist_ok=True)
        with open(self._root / "refs.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            refs = self._refs()
            yield refs
            tmp = self._root / f"refs.json.{os.getpid()}"
            tmp.write_text(json.dumps(refs, indent=1, sort_keys=True))
            os.replace(tmp, self._root / "refs.json")

    def _used_ids(self) -> set[str]:
        """Images that containers under the same ``$FORGE_HOME`` still use."""
        containers = self._root.parent / "containers"
        used: set[str] = set()
        if containers.exists():
            for state in containers.glob("*/state.json"):
                with contextlib.suppress(OSError, ValueError):
                    used.add(str(json.loads(state.read_text()).get("image_id", "")))
        return used
