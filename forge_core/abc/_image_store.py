"""The ImageStore interface: root filesystems, imported once, content-addressed, never
modified by the containers that use them."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import attrs

from ._common import Availability

__all__ = ["Image", "ImageStore", "StoreUsage"]


@attrs.frozen(kw_only=True)
class Image:
    """An imported root filesystem. ``id`` is ``sha256:<hex>`` of its content."""

    id: str
    names: tuple[str, ...] = ()
    rootfs: Path
    size: int = 0
    created: float = 0.0
    config: dict[str, object] = attrs.field(factory=dict)
    """Defaults carried by OCI / docker archives (Cmd, Env, WorkingDir, User)."""


@attrs.frozen(kw_only=True)
class StoreUsage:
    """What the store holds on disk."""

    images: int
    bytes: int
    reclaimable: int = 0


class ImageStore(abc.ABC):
    """Stores root filesystems. Names are ``NAME[:TAG]`` (tag defaults to ``latest``); any
    method taking a ``ref`` also accepts an id or a unique id prefix."""

    name: ClassVar[str] = ""

    @classmethod
    def available(cls) -> Availability:
        return Availability.yes()

    @abc.abstractmethod
    async def import_(self, source: Path, name: str) -> Image:
        """Import an archive (tar, tar.gz, tar.zst, OCI layout, ``docker save``) or a directory.

        Raises :class:`~forge_core.exceptions.ConfigError` for an unsafe or malformed archive
        (path escapes, device nodes, size bounds) and writes nothing in that case.
        """

    @abc.abstractmethod
    async def get(self, ref: str) -> Image:
        """The image named or identified by ``ref``; :class:`~forge_core.exceptions.NotFound`."""

    @abc.abstractmethod
    async def list(self) -> Sequence[Image]:
        """Every image in the store."""

    @abc.abstractmethod
    async def remove(self, ref: str) -> None:
        """Drop a name (and the content once no name nor container uses it)."""

    @abc.abstractmethod
    async def prune(self) -> int:
        """Delete content no name and no container uses; returns bytes freed."""

    @abc.abstractmethod
    async def usage(self) -> StoreUsage:
        """Counts and bytes held."""
