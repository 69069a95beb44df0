"""A start abandoned part-way (what a cancellation of Runtime.start does) leaves nothing running."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest
from forge_runtime_linux import _launch
from forge_runtime_linux.images import SnapshotImageStore
from forge_runtime_linux.runtime import LinuxRuntime, image_dict, request

from forge_core.abc import ContainerSpec, Volume
from forge_core.testing.runtime import FifoProbe

pytestmark = [pytest.mark.linux, pytest.mark.root, pytest.mark.anyio]

_GUARD = 20.0


@pytest.mark.parametrize("detach", [False, True])
async def test_an_abandoned_start_kills_the_running_command(
    runtime: LinuxRuntime, busybox_image: str, tmp_path: Path, detach: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """When the command already runs but the start's last report was not read yet, abandoning
    the start kills the command (attached or detached) and removes the container's journal."""
    for path in (tmp_path_factory.getbasetemp(), tmp_path):
        path.chmod(0o711)  # container root is an unprivileged host uid: let it reach the probe
    probe = FifoProbe(tmp_path / "probe")
    probe.path.chmod(0o666)
    spec = ContainerSpec(
        image=busybox_image,
        command=("sh", "-c", f"exec 3>{probe.path}; echo ready >&3; exec sleep 1000"),
        volumes=(Volume(source=str(tmp_path), target=str(tmp_path)),),
        detach=detach,
    )
    image = image_dict(await SnapshotImageStore().get(busybox_image))
    pending = _launch.prepare(runtime.engine, request(spec), image, None)
    try:
        # read the reports (answering the id-map request) up to the one naming the started
        # process, and leave the end of file that follows the exec unread
        while not any("pid" in report for report in pending.reports):
            select.select([pending.sync_r], [], [], _GUARD)
            assert pending.feed(), "the start ended without a report"
        await probe.read_until(b"ready")
    finally:
        _launch.finish_quietly(runtime.engine, pending)
    try:
        assert await probe.wait_closed(), "the command survived the abandoned start"
        assert runtime.engine.list_states() == []
        assert not os.path.exists(os.path.join(runtime.engine.dir, pending.plan["id"]))
    finally:
        probe.close()
