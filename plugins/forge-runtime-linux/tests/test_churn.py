"""Forge killed with SIGKILL mid-create and mid-delete leaves nothing behind once gc() ran:
no cgroup, mount, network namespace, process or directory."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from forge_runtime_linux.runtime import LinuxRuntime

pytestmark = [pytest.mark.linux, pytest.mark.root]

CHURN = """
import anyio, sys
from forge_core.abc import ContainerSpec, Resources
from forge_runtime_linux.runtime import LinuxRuntime

async def main():
    rt = LinuxRuntime()
    print("ready", flush=True)
    while True:
        h = await rt.start(ContainerSpec(command=("sleep", "30"), image="busybox:test",
                                         detach=sys.argv[1] == "detach", resources=Resources(memory=64 << 20),
                                         ports=()))
        await rt.remove(h)

anyio.run(main)
"""


def _our_processes(home: Path, tag: str) -> list[int]:
    """Processes in one of this home's cgroups, or whose root is under it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
            root = os.readlink(entry / "root")
        except OSError:
            continue
        if tag in cgroups or root.startswith(str(home)):
            found.append(int(entry.name))
    return found


def _our_mounts(home: Path) -> list[str]:
    mounts = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "mountinfo").read_text()
            except OSError:
                continue
            mounts += [ln for ln in text.splitlines() if str(home) in ln]
    return mounts


class TestChurn:
    """Kill the process driving the runtime at random moments, then reconcile."""

    @pytest.mark.parametrize("mode", ["attached", "detach"])
    def test_killed_mid_create_or_delete_leaves_nothing(
        self, busybox_image: str, forge_home: Path, tmp_path: Path, mode: str
    ) -> None:
        """After 6 SIGKILLs at random points of start/remove and one gc(), nothing of ours remains."""
        rt = LinuxRuntime()
        rng = random.Random(4)
        for _ in range(6):
            proc = subprocess.Popen([sys.executable, "-c", CHURN, mode], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.02, 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        deadline = time.monotonic() + 20  # a guard for asynchronous kernel teardown, not a timing
        while True:
            rt.gc()
            for (
                data
            ) in rt.list_states():  # a detached container whose start completed is legitimately running
                if data.get("status") == "running":
                    rt.remove_sync(data["id"])
            leftovers = (
                _our_processes(forge_home, rt.tag),
                _our_mounts(forge_home),
                [p.name for p in rt.containers_dir.iterdir()],
                [
                    d
                    for d in {Path(c).parent for c in rt.cgroup({"cgroup": f"{rt.tag}/x"}).dirs()}
                    if d.exists() and any(x.is_dir() for x in d.iterdir())
                ],
            )
            if not any(leftovers) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert leftovers == ([], [], [], [])

    def test_gc_removes_a_directory_killed_before_its_journal_was_written(self, forge_home: Path) -> None:
        """A container directory holding only a half-written journal is collected once it is
        old enough; a young one (a create in progress elsewhere) is left alone."""
        rt = LinuxRuntime()
        rt.containers_dir.mkdir(parents=True, exist_ok=True)
        old, young = rt.containers_dir / "abandoned0001", rt.containers_dir / "creating0001"
        for d in (old, young):
            d.mkdir()
            (d / "state.tmp").write_text("{")
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        removed = rt.gc()
        assert "abandoned0001" in removed
        assert not old.exists()
        assert young.exists()
        shutil.rmtree(young)
