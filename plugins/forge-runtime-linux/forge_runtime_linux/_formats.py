"""Recognise what is being imported and hand its layers out in order as tar streams.

Formats: a rootfs tarball (plain, gzip or zstd), a ``docker save`` archive
(``manifest.json``), an OCI image layout (``oci-layout`` + ``index.json``) either as a
directory or a tar, and a plain directory (``build``).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, cast

from forge_core.exceptions import ConfigError

__all__ = ["Layer", "open_source"]

Layer = Callable[[], AbstractContextManager[tarfile.TarFile]]
"""Opens one layer as a tar stream; layers are applied in list order."""

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"


def _decompressed(raw: IO[bytes], source: str) -> IO[bytes]:
    buffered: Any = raw if hasattr(raw, "peek") else io.BufferedReader(cast(Any, raw))
    magic = buffered.peek(4)[:4]
    if magic[:2] == _GZIP:
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    if magic == _ZSTD:
        try:
            import zstandard
        except ImportError:
            raise ConfigError(f"{source}: zstd archive but zstandard is not installed") from None
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(buffered))
    return cast(IO[bytes], buffered)


@contextmanager
def _stream(raw: IO[bytes], source: str) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(fileobj=_decompressed(raw, source), mode="r|") as tar:
            yield tar
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{source}: not a readable tar archive ({exc})") from None


def _image_config(blob: bytes, source: str) -> dict[str, object]:
    try:
        conf = json.loads(blob).get("config") or {}
    except (ValueError, AttributeError):
        raise ConfigError(f"{source}: malformed image config") from None
    keys = ("Cmd", "Entrypoint", "Env", "WorkingDir", "User")
    return {k: conf[k] for k in keys if conf.get(k) is not None}


class _Reader:
    """Reads named files of a docker/OCI archive from a directory or a seekable tar."""

    def __init__(self, source: Path, stack: ExitStack) -> None:
        self.source = source
        self._tar: tarfile.TarFile | None = None
        self._names: dict[str, tarfile.TarInfo] = {}
        if not source.is_dir():
            self._tar = stack.enter_context(tarfile.open(source, "r:"))  # noqa: SIM115 -- closed by the stack
            self._names = {m.name.removeprefix("./"): m for m in self._tar}

    def names(self) -> set[str]:
        if self._tar is None:
            return {p.name for p in self.source.iterdir()}
        return set(self._names)

    def open(self, name: str) -> IO[bytes]:
        if ".." in name.split("/") or name.startswith("/"):
            raise ConfigError(f"{self.source}: manifest points outside the archive: {name!r}")
        if self._tar is None:
            try:
                return (self.source / name).open("rb")
            except OSError:
                raise ConfigError(f"{self.source}: missing {name}") from None
        member = self._names.get(name)
        handle = self._tar.extractfile(member) if member is not None else None
        if handle is None:
            raise ConfigError(f"{self.source}: missing {name}")
        return handle

    def read_json(self, name: str) -> Any:
        with self.open(name) as fh:
            try:
                return json.loads(fh.read())
            except ValueError:
                raise ConfigError(f"{self.source}: {name} is not valid JSON") from None

    def layer(self, name: str) -> Layer:
        @contextmanager
        def opener() -> Iterator[tarfile.TarFile]:
            with self.open(name) as fh, _stream(fh, f"{self.source}:{name}") as tar:
                yield tar

        return opener


def _blob(digest: object, source: Path) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ConfigError(f"{source}: bad blob digest {digest!r}")
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _docker(reader: _Reader) -> tuple[list[Layer], dict[str, object]]:
    manifest = reader.read_json("manifest.json")
    if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
        raise ConfigError(f"{reader.source}: manifest.json lists no image")
    entry = manifest[0]
    with reader.open(str(entry.get("Config", ""))) as fh:
        config = _image_config(fh.read(), str(reader.source))
    return [reader.layer(str(name)) for name in entry.get("Layers") or []], config


def _oci(reader: _Reader) -> tuple[list[Layer], dict[str, object]]:
    doc = reader.read_json("index.json")
    for _ in range(3):  # an index may point at a nested index
        manifests = doc.get("manifests") or []
        if not manifests:
            raise ConfigError(f"{reader.source}: index.json lists no manifest")
        chosen = next(
            (m for m in manifests if (m.get("platform") or {}).get("architecture") in ("amd64", None)),
            manifests[0],
        )
        doc = reader.read_json(_blob(chosen.get("digest"), reader.source))
        if "layers" in doc:
            break
    with reader.open(_blob((doc.get("config") or {}).get("digest"), reader.source)) as fh:
        config = _image_config(fh.read(), str(reader.source))
    return [reader.layer(_blob(layer.get("digest"), reader.source)) for layer in doc["layers"]], config


def _peek_names(path: Path, count: int = 8) -> list[str]:
    names: list[str] = []
    with path.open("rb") as raw, _stream(raw, str(path)) as tar:
        for member in tar:
            names.append(member.name.removeprefix("./"))
            if len(names) >= count:
                break
    return names


def _looks_like_image_archive(names: list[str]) -> bool:
    markers = ("manifest.json", "oci-layout", "index.json", "blobs/", "repositories")
    return any(n.startswith(markers) or re.match(r"^[0-9a-f]{64}(/|\.json)", n) for n in names)


@contextmanager
def open_source(source: Path, scratch: Path) -> Iterator[tuple[str, list[Layer], dict[str, object]]]:
    """Yield ``(kind, layers, config)`` for an archive or directory; ``scratch`` holds temp files."""
    with ExitStack() as stack:
        if source.is_dir():
            if (source / "oci-layout").exists():
                yield ("oci", *_oci(_Reader(source, stack)))
            else:
                yield "dir", [_dir_layer(source, scratch)], {}
            return
        with source.open("rb") as fh:
            magic = fh.read(4)
        plain = source
        if magic[:2] == _GZIP or magic == _ZSTD:
            if not _looks_like_image_archive(_peek_names(source)):
                yield "rootfs", [_file_layer(source)], {}
                return
            plain = _inflate(source, scratch)
        try:
            reader = _Reader(plain, stack)
        except (tarfile.TarError, OSError) as exc:
            raise ConfigError(f"{source}: not a readable tar archive ({exc})") from None
        names = reader.names()
        if "manifest.json" in names:
            yield ("docker", *_docker(reader))
        elif "oci-layout" in names and "index.json" in names:
            yield ("oci", *_oci(reader))
        else:
            yield "rootfs", [_file_layer(plain)], {}


def _file_layer(path: Path) -> Layer:
    @contextmanager
    def opener() -> Iterator[tarfile.TarFile]:
        with path.open("rb") as raw, _stream(raw, str(path)) as tar:
            yield tar

    return opener


def _inflate(source: Path, scratch: Path) -> Path:
    out = Path(tempfile.mkstemp(dir=scratch, suffix=".tar")[1])
    with source.open("rb") as raw, out.open("wb") as dst:
        shutil.copyfileobj(_decompressed(raw, str(source)), dst, 1 << 20)
    return out


def _dir_layer(directory: Path, scratch: Path) -> Layer:
    """Snapshot a directory by taring it (links not followed) so it passes the same checks."""

    @contextmanager
    def opener() -> Iterator[tarfile.TarFile]:
        with tempfile.TemporaryFile(dir=scratch) as spool:
            with tarfile.open(fileobj=spool, mode="w|") as out:
                for child in sorted(directory.iterdir()):
                    out.add(child, arcname=child.name, recursive=True)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r|") as tar:
                yield tar

    return opener
