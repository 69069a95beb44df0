"""The snapshot store: conformance, formats (rootfs tar/gz/zst, docker save, OCI layout, build)
and safe extraction of a generated corpus of malicious archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from forge_runtime_linux.images import SnapshotImageStore

from forge_core.exceptions import ConfigError
from forge_core.testing.image_store import ImageStoreConformance, write_tar

pytestmark = [pytest.mark.linux, pytest.mark.anyio]


@pytest.fixture
def image_store(tmp_path: Path) -> SnapshotImageStore:
    return SnapshotImageStore(SnapshotImageStore.Config(root=str(tmp_path / "store")))


class TestSnapshotConformance(ImageStoreConformance):
    """The shared ImageStore behaviour."""


def _layer(files: dict[str, bytes | None]) -> bytes:
    """A layer tar; ``None`` content makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _two_layers() -> list[bytes]:
    return [
        _layer({"etc": None, "etc/keep": b"1", "etc/drop": b"2", "var": None, "var/old": b"3"}),
        _layer({"etc/.wh.drop": b"", "var": None, "var/.wh..wh..opq": b"", "var/new": b"4"}),
    ]


class TestFormats:
    """Archives other tools produce import with their layers applied in order."""

    async def test_docker_save_archive_honours_whiteouts(
        self, image_store: SnapshotImageStore, tmp_path: Path
    ) -> None:
        """A docker save archive's layers apply in order; .wh. files and opaque dirs remove content."""
        layers = _two_layers()
        config = json.dumps({"config": {"Cmd": ["/bin/sh"], "Env": ["A=1"]}}).encode()
        src = tmp_path / "saved.tar"
        with tarfile.open(src, "w") as tar:
            for i, data in enumerate(layers):
                _add(tar, f"l{i}/layer.tar", data)
            _add(tar, "cfg.json", config)
            _add(
                tar,
                "manifest.json",
                json.dumps([{"Config": "cfg.json", "Layers": ["l0/layer.tar", "l1/layer.tar"]}]).encode(),
            )
        image = await image_store.import_(src, "saved")
        root = image.rootfs
        assert sorted(os.listdir(root / "etc")) == ["keep"]
        assert sorted(os.listdir(root / "var")) == ["new"]
        assert image.config == {"Cmd": ["/bin/sh"], "Env": ["A=1"]}

    async def test_oci_layout_directory_and_tar(
        self, image_store: SnapshotImageStore, tmp_path: Path
    ) -> None:
        """An OCI layout (directory or tar of it) with gzip and zstd layers imports to one id."""
        import gzip

        layout = tmp_path / "oci"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def blob(data: bytes) -> str:
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return "sha256:" + digest

        l0, l1 = _two_layers()
        layer_digests = [blob(gzip.compress(l0)), blob(zstandard.ZstdCompressor().compress(l1))]
        cfg = blob(json.dumps({"config": {"WorkingDir": "/var"}}).encode())
        manifest = blob(
            json.dumps({"config": {"digest": cfg}, "layers": [{"digest": d} for d in layer_digests]}).encode()
        )
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (layout / "index.json").write_text(json.dumps({"manifests": [{"digest": manifest}]}))
        from_dir = await image_store.import_(layout, "oci:dir")
        packed = tmp_path / "oci.tar"
        with tarfile.open(packed, "w") as tar:
            tar.add(layout, arcname=".")
        from_tar = await image_store.import_(packed, "oci:tar")
        assert from_dir.id == from_tar.id
        assert sorted(os.listdir(from_dir.rootfs / "var")) == ["new"]
        assert from_dir.config == {"WorkingDir": "/var"}

    async def test_rootfs_tarball_in_three_compressions_is_one_image(
        self, image_store: SnapshotImageStore, tmp_path: Path
    ) -> None:
        """.tar, .tar.gz and .tar.zst of the same tree dedupe to one content id, as does build DIR."""
        plain = write_tar(tmp_path / "r.tar", {"bin/x": b"#!/bin/sh\n"})
        gz = tmp_path / "r.tar.gz"
        import gzip

        gz.write_bytes(gzip.compress(plain.read_bytes()))
        zst = tmp_path / "r.tar.zst"
        zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
        ids = {(await image_store.import_(p, f"r:{i}")).id for i, p in enumerate((plain, gz, zst))}
        assert len(ids) == 1

    async def test_setuid_bits_are_stripped(self, image_store: SnapshotImageStore, tmp_path: Path) -> None:
        """A setuid root binary in an archive arrives without its setuid/setgid bits."""
        info = tarfile.TarInfo("bin/su")
        info.size, info.mode = 1, 0o6755
        image = await image_store.import_(write_tar(tmp_path / "s.tar", {}, extra=[info]), "s")
        assert (image.rootfs / "bin" / "su").stat().st_mode & 0o7777 == 0o755


def _member(name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


def malicious_corpus(victim: Path) -> dict[str, list[tarfile.TarInfo]]:
    """Archives that try to write ``victim`` (a path outside the store) or break the bounds."""
    rel = os.path.relpath(victim, "/")
    return {
        "dotdot": [_member("../../../../../../" + rel)],
        "absolute": [_member(str(victim))],
        "symlink_then_write": [
            _member("esc", tarfile.SYMTYPE, link=str(victim.parent)),
            _member(f"esc/{victim.name}"),
        ],
        "relative_symlink_then_write": [
            _member("esc", tarfile.SYMTYPE, link="../../../../../../../../" + str(victim.parent).lstrip("/")),
            _member(f"esc/{victim.name}"),
        ],
        "hardlink_outside": [_member("h", tarfile.LNKTYPE, link=str(victim))],
        "hardlink_dotdot": [_member("h", tarfile.LNKTYPE, link="../../../../../../" + rel)],
        "hardlink_to_symlink": [
            _member("s", tarfile.SYMTYPE, link=str(victim)),
            _member("h", tarfile.LNKTYPE, link="s"),
        ],
        "char_device": [_member("dev/kmem", tarfile.CHRTYPE)],
        "block_device": [_member("dev/sda", tarfile.BLKTYPE)],
        "too_deep": [_member("/".join(["d"] * 70) + "/f")],
        "too_many_entries": [_member(f"f{i}") for i in range(60)],
        "too_large": [_member("big", size=4096)],
    }


class TestSafeExtraction:
    """A generated corpus of malicious archives is refused, each with a clear error, and writes
    nothing outside the store (nor leaves anything inside it)."""

    @pytest.mark.parametrize("case", sorted(malicious_corpus(Path("/x/y"))))
    async def test_malicious_archive_writes_nothing(self, tmp_path: Path, case: str) -> None:
        """The archive is a ConfigError naming the problem, and the victim file never appears."""
        victim_dir = tmp_path / "outside"
        victim_dir.mkdir()
        victim = victim_dir / "pwned"
        store = SnapshotImageStore(
            SnapshotImageStore.Config(
                root=str(tmp_path / "deep" / "store"), max_entries=50, max_bytes=1024, max_depth=64
            )
        )
        archive = write_tar(tmp_path / f"{case}.tar", {}, extra=malicious_corpus(victim)[case])
        with pytest.raises(ConfigError, match=r"refusing|more than|larger than"):
            await store.import_(archive, f"{case}:1")
        assert not victim.exists()
        assert sorted(p.name for p in victim_dir.iterdir()) == []
        assert not any((tmp_path / "deep" / "store" / "content").iterdir())
        assert not any((tmp_path / "deep" / "store" / "tmp").iterdir())
        assert await store.list() == []

    async def test_corrupt_archive_is_a_config_error(
        self, image_store: SnapshotImageStore, tmp_path: Path
    ) -> None:
        """A file that is not a tar archive is refused with a ConfigError, not a traceback."""
        bad = tmp_path / "junk.tar"
        bad.write_bytes(b"\x1f\x8b" + os.urandom(100))
        with pytest.raises(ConfigError):
            await image_store.import_(bad, "junk")
