"""Shared fixtures: a busybox-static rootfs tarball, an image store and a runtime in a private
``$FORGE_HOME``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_core.abc import Volume

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _needs_root_linux() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not Path(BUSYBOX).exists():
        pytest.skip("needs busybox-static (apt-get install busybox-static)")


def make_rootfs(root: Path) -> Path:
    """A minimal busybox rootfs directory: the static binary and a link per applet."""
    for sub in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return root


def host_python() -> tuple[str, tuple[Volume, ...]]:
    """This interpreter and the read-only volumes that let it run inside a busybox container
    (its prefix at the same path, the host's libraries at /lib and /lib64): a server busybox lacks."""
    prefix = os.path.realpath(sys.base_prefix)
    vols = [Volume(source=prefix, target=prefix, read_only=True)]
    vols += [
        Volume(source=os.path.realpath(d), target=d, read_only=True)
        for d in ("/lib", "/lib64")
        if os.path.exists(d)
    ]
    return os.path.realpath(sys.executable), tuple(vols)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_root_linux()
    base = tmp_path_factory.mktemp("busybox")
    root = make_rootfs(base / "rootfs")
    out = base / "busybox.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root, arcname=".")
    return out


@pytest.fixture(scope="session")
def forge_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("forge-home")
    home.chmod(0o755)
    old = os.environ.get("FORGE_HOME")
    os.environ["FORGE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("FORGE_HOME", None)
    else:
        os.environ["FORGE_HOME"] = old
    _remove_home_cgroups(home)


def _remove_home_cgroups(home: Path) -> None:
    """The parent cgroups of this home's containers (``forge-<tag>``), which outlive their
    containers by design; the home goes with the test session, so they go too."""
    from forge_runtime_linux._cgroups import Cgroup
    from forge_runtime_linux._engine import home_tag

    for parent in {os.path.dirname(d) for d in Cgroup(f"forge-{home_tag(home)}/x").dirs()}:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(parent)


@pytest.fixture(scope="session")
def busybox_image(forge_home: Path, busybox_tar: Path) -> str:
    import anyio
    from forge_runtime_linux.images import SnapshotImageStore

    store = SnapshotImageStore()
    anyio.run(store.import_, busybox_tar, "busybox:test")
    return "busybox:test"


@pytest.fixture
def runtime(busybox_image: str, forge_home: Path) -> Iterator[object]:
    from forge_runtime_linux.runtime import LinuxRuntime

    rt = LinuxRuntime()
    yield rt
    for data in rt.list_states():
        rt.remove_sync(data["id"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
