"""A real distribution: a debootstrap'd minimal Debian imported as an image runs apt in a container.

The debootstrap result is cached as a tarball under ``$FORGE_TEST_CACHE`` (default
``/var/cache/forge-test``) so reruns only import it; without the Debian mirror the test skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import anyio
import pytest
from forge_runtime_linux.images import SnapshotImageStore
from forge_runtime_linux.runtime import LinuxRuntime

from forge_core.abc import ContainerSpec

pytestmark = [pytest.mark.linux, pytest.mark.root, pytest.mark.slow]

MIRROR = "deb.debian.org"
SUITE = "bookworm"


def _mirror_reachable() -> bool:
    try:
        socket.create_connection((MIRROR, 80), timeout=5).close()
    except OSError:
        return False
    return True


def debian_tarball() -> Path:
    """The cached minbase tarball, made once with debootstrap (device nodes left out: images refuse them)."""
    cache = Path(os.environ.get("FORGE_TEST_CACHE", "/var/cache/forge-test"))
    tarball = cache / f"debian-{SUITE}-minbase.tar"
    if tarball.exists():
        return tarball
    if not shutil.which("debootstrap"):
        pytest.skip("needs debootstrap (apt-get install debootstrap)")
    if not _mirror_reachable():
        pytest.skip(f"the Debian mirror {MIRROR} is unreachable")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        root = Path(work) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(root), f"http://{MIRROR}/debian"],
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
        if done.returncode:
            pytest.skip(f"debootstrap failed (network?): {done.stdout[-300:]}{done.stderr[-300:]}")
        partial = Path(work) / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "--exclude=./dev/*", "-cf", str(partial), "."],
            check=True,
            capture_output=True,
        )
        os.replace(partial, tarball)
    return tarball


@pytest.mark.timeout(900)
@pytest.mark.anyio
async def test_debootstrapped_debian_runs_apt(forge_home: Path, tmp_path: Path) -> None:
    """Debian's own files answer from inside: /etc/debian_version is bookworm's and apt-get runs."""
    tarball = await anyio.to_thread.run_sync(debian_tarball)
    store = SnapshotImageStore()
    image = await store.import_(tarball, "debian:bookworm")
    rt = LinuxRuntime(image_store=store)
    log = tmp_path / "out.log"
    status, _ = await rt.run(
        ContainerSpec(
            command=("/bin/sh", "-c", "cat /etc/debian_version; apt-get --version | head -1; id -un"),
            image="debian:bookworm",
            network="private",
            log_path=log,
        ),
        timeout=120,
    )
    version, apt, user = log.read_text().splitlines()
    assert status.ok
    assert version.startswith("12.")
    assert apt.startswith("apt 2.")
    assert user == "root"
    assert image.size > 50 << 20
