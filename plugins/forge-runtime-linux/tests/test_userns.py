"""User namespaces as root: container root is an unprivileged host uid unless asked otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from forge_runtime_linux._idmap import RANGE, host_base
from forge_runtime_linux.images import SnapshotImageStore
from forge_runtime_linux.runtime import LinuxRuntime

from forge_core.abc import ContainerSpec, Volume
from forge_core.exceptions import Unsupported

pytestmark = [pytest.mark.linux, pytest.mark.root, pytest.mark.anyio]


async def sh(rt: LinuxRuntime, tmp_path: Path, script: str, **fields: object) -> str:
    log = tmp_path / "out.log"
    log.write_text("")
    spec = ContainerSpec(command=("/bin/sh", "-c", script), image="busybox:test", log_path=log, **fields)
    status, _ = await rt.run(spec, timeout=60)
    assert status.ok, log.read_text()
    return log.read_text()


class TestMappedRoot:
    """By default container ids 0-65535 map to the host's subordinate range."""

    async def test_uid_map_maps_root_to_the_unprivileged_range(
        self, runtime: LinuxRuntime, tmp_path: Path
    ) -> None:
        """/proc/self/uid_map and gid_map inside read ``0 <base> 65536`` and id -u is 0."""
        out = await sh(runtime, tmp_path, "cat /proc/self/uid_map /proc/self/gid_map; id -u")
        lines = [line.split() for line in out.splitlines()]
        assert lines == [["0", str(host_base()), str(RANGE)]] * 2 + [["0"]]

    async def test_container_root_cannot_write_host_root_files(
        self, runtime: LinuxRuntime, tmp_path: Path
    ) -> None:
        """In a read-write volume, a host-root 0644 file refuses container root, and what container
        root creates is owned on the host by the mapped uid."""
        share = tmp_path / "share"
        share.mkdir(mode=0o777)
        share.chmod(0o777)
        owned = share / "host-owned"
        owned.write_text("host\n")
        owned.chmod(0o644)
        script = (
            "{ echo evil >> /data/host-owned; } 2>/dev/null && echo wrote; touch /data/new && echo created"
        )
        out = await sh(runtime, tmp_path, script, volumes=(Volume(source=str(share), target="/data"),))
        assert out.split() == ["created"]
        assert owned.read_text() == "host\n"
        assert (share / "new").stat().st_uid == host_base()

    async def test_host_sees_the_command_as_the_mapped_uid(self, runtime: LinuxRuntime) -> None:
        """The command's process, seen from the host, runs as the mapped uid, not as root."""
        handle = await runtime.start(ContainerSpec(command=("sleep", "30"), image="busybox:test"))
        try:
            uids = set()
            with anyio.fail_after(10):
                while not uids:
                    for pid in runtime.engine.pids(runtime.state(handle.id)):
                        status = Path(f"/proc/{pid}/status").read_text()
                        if status.startswith("Name:\tsleep\n"):
                            uids = set(
                                next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1:]
                            )
                    await anyio.sleep(0.01)
            assert uids == {str(host_base())}
        finally:
            await runtime.remove(handle)

    async def test_opt_out_keeps_host_ids(self, busybox_image: str, tmp_path: Path) -> None:
        """userns=False runs container root as host root: the identity map spans every id."""
        rt = LinuxRuntime(LinuxRuntime.Config(userns=False))
        out = await sh(rt, tmp_path, "cat /proc/self/uid_map")
        assert out.split() == ["0", "0", "4294967295"]

    async def test_unshifted_image_is_refused_in_a_user_namespace(
        self, forge_home: Path, busybox_tar: Path
    ) -> None:
        """An image imported with uid_shift=0 cannot serve a mapped root: start says what to do."""
        store = SnapshotImageStore(SnapshotImageStore.Config(root=str(forge_home / "images"), uid_shift=0))
        await store.import_(busybox_tar, "busybox:unshifted")
        rt = LinuxRuntime(image_store=store)
        with pytest.raises(Unsupported, match="--userns host"):
            await rt.start(ContainerSpec(command=("true",), image="busybox:unshifted"))
        assert await rt.list() == []
        status, _ = await LinuxRuntime(LinuxRuntime.Config(userns=False), image_store=store).run(
            ContainerSpec(command=("true",), image="busybox:unshifted"), timeout=60
        )
        assert status.ok
        assert os.stat(store.get_sync("busybox:unshifted").rootfs).st_uid == 0
