"""Container speed on one busybox rootfs: start-to-exit of /bin/true (library and CLI),
100 containers two at a time, delete of a stopped container, image import — beside
unshare+chroot and, where installed, bubblewrap and crun. Needs root and
forge-runtime-linux. Prints a table and one JSON line; asserts nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from forge_core.abc import ContainerSpec

REPEATS = int(os.environ.get("BENCH_REPEATS", "20"))


def busybox_rootfs(root: Path) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "true", "echo"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / d).mkdir()
    tar = root / "busybox.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(rootfs, arcname=".")
    return tar


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


async def library(home: Path, tar: Path) -> dict[str, Any]:
    from forge_runtime_linux.images import SnapshotImageStore
    from forge_runtime_linux.runtime import LinuxRuntime

    store = SnapshotImageStore(SnapshotImageStore.Config(root=str(home / "images")))
    t0 = time.perf_counter()
    await store.import_(tar, "bench:latest")
    imported = time.perf_counter() - t0
    runtime = LinuxRuntime(LinuxRuntime.Config(home=str(home)), image_store=store)
    spec = ContainerSpec(command=("/bin/true",), image="bench:latest", network="private")
    starts, deletes = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        handle = await runtime.start(spec)
        await runtime.wait(handle)
        starts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await runtime.remove(handle)
        deletes.append(time.perf_counter() - t0)

    async def one() -> None:
        handle = await runtime.start(spec)
        await runtime.wait(handle)
        await runtime.remove(handle)

    t0 = time.perf_counter()
    limiter = anyio.CapacityLimiter(2)

    async def bounded() -> None:
        async with limiter:
            await one()

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(bounded)
    hundred = time.perf_counter() - t0
    return {"import_ms": round(imported * 1000, 1), "library_start_to_exit_ms": median_ms(starts),
            "delete_stopped_ms": median_ms(deletes), "hundred_two_at_a_time_s": round(hundred, 2)}


def peers(rootfs: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unshare = ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
               "chroot", str(rootfs), "/bin/true"]
    out["unshare_chroot_ms"] = median_ms([timed(unshare) for _ in range(REPEATS)])
    if shutil.which("bwrap"):
        bwrap = ["bwrap", "--unshare-all", "--ro-bind", str(rootfs), "/", "--proc", "/proc",
                 "--dev", "/dev", "/bin/true"]
        out["bubblewrap_ms"] = median_ms([timed(bwrap) for _ in range(REPEATS)])
    else:
        out["bubblewrap_ms"] = "not installed"
    out["crun_ms"] = "not measured" if not shutil.which("crun") else "not measured (no bundle)"
    return out


def main() -> None:
    if os.geteuid() != 0:
        print(json.dumps({"bench": "containers", "skipped": "needs root"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tar = busybox_rootfs(root)
        home = root / "home"
        results = anyio.run(library, home, tar)
        env = {**os.environ, "FORGE_HOME": str(home)}
        cli = [timed(["forge", "container", "run", "--rm", "bench:latest", "/bin/true"], env)
               for _ in range(max(5, REPEATS // 2))]
        results["cli_start_to_exit_ms"] = median_ms(cli)
        results.update(peers(root / "rootfs"))
    results["machine"] = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    width = max(map(len, results))
    print("container benchmark (busybox rootfs)")
    for key, val in results.items():
        print(f"  {key:<{width}}  {val}")
    print(json.dumps({"bench": "containers", **results}))


if __name__ == "__main__":
    main()
