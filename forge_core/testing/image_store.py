"""``ImageStoreConformance``: the tests every ImageStore backend passes, shipped or third-party.

Subclass it in a test module and provide an ``image_store`` fixture (an empty store). The
archives are small tarballs the suite writes itself.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import ClassVar

import pytest

from ..abc import ImageStore
from ..exceptions import ConfigError, NotFound

__all__ = ["ImageStoreConformance", "write_tar"]


def write_tar(path: Path, files: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """A plain tar holding ``files`` (name -> content) and any ``extra`` raw members."""
    with tarfile.open(path, "w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
        for member in extra or []:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return path


class ImageStoreConformance:
    """Behaviour every :class:`~forge_core.abc.ImageStore` shares; needs an ``image_store`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_import_then_get_by_name_and_id_prefix(
        self, image_store: ImageStore, tmp_path: Path
    ) -> None:
        """An imported image is found by NAME:TAG, by NAME (tag latest) and by an id prefix."""
        src = write_tar(tmp_path / "a.tar", {"etc/hello": b"hi\n"})
        image = await image_store.import_(src, "demo")
        assert image.id.startswith("sha256:")
        assert (image.rootfs / "etc" / "hello").read_bytes() == b"hi\n"
        assert (await image_store.get("demo:latest")).id == image.id
        assert (await image_store.get("demo")).id == image.id
        assert (await image_store.get(image.id[:19])).id == image.id
        assert "demo:latest" in image.names

    async def test_same_content_is_stored_once(self, image_store: ImageStore, tmp_path: Path) -> None:
        """Two imports of the same content share one id and one copy, under both names."""
        one = await image_store.import_(write_tar(tmp_path / "1.tar", {"f": b"same"}), "one:1")
        two = await image_store.import_(write_tar(tmp_path / "2.tar", {"f": b"same"}), "two:2")
        assert one.id == two.id
        assert len(await image_store.list()) == 1
        assert set((await image_store.get(one.id)).names) == {"one:1", "two:2"}

    async def test_remove_drops_the_name_then_the_content(
        self, image_store: ImageStore, tmp_path: Path
    ) -> None:
        """Removing the last name deletes the content; getting it afterwards is NotFound."""
        image = await image_store.import_(write_tar(tmp_path / "a.tar", {"f": b"x"}), "gone:1")
        await image_store.remove("gone:1")
        assert await image_store.list() == []
        assert not image.rootfs.exists()
        with pytest.raises(NotFound):
            await image_store.get("gone:1")

    async def test_missing_image_is_not_found(self, image_store: ImageStore) -> None:
        """get() of an unknown name raises NotFound."""
        with pytest.raises(NotFound):
            await image_store.get("no-such-image:1")

    async def test_unsafe_archive_is_refused_and_writes_nothing(
        self, image_store: ImageStore, tmp_path: Path
    ) -> None:
        """An archive with a path escape is a ConfigError and leaves the store as it was."""
        escape = tarfile.TarInfo("../../escaped")
        escape.size = 1
        src = write_tar(tmp_path / "bad.tar", {"ok": b"fine"}, extra=[escape])
        with pytest.raises(ConfigError):
            await image_store.import_(src, "bad:1")
        assert await image_store.list() == []
        assert not (tmp_path / "escaped").exists()

    async def test_usage_counts_images_and_bytes(self, image_store: ImageStore, tmp_path: Path) -> None:
        """usage() reports the number of images and at least their content size."""
        await image_store.import_(write_tar(tmp_path / "a.tar", {"f": b"12345"}), "u:1")
        usage = await image_store.usage()
        assert usage.images == 1
        assert usage.bytes >= 5

    async def test_prune_keeps_named_images(self, image_store: ImageStore, tmp_path: Path) -> None:
        """prune() frees nothing a name still uses."""
        await image_store.import_(write_tar(tmp_path / "a.tar", {"f": b"keep"}), "keep:1")
        assert await image_store.prune() == 0
        assert len(await image_store.list()) == 1
