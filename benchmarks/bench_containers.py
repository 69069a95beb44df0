"""Container speed and memory on one busybox rootfs, Forge beside crun, runc, bubblewrap and
podman (Debian packages): CLI start-to-exit of /bin/true, Forge's library start-to-exit, 100
containers two at a time, delete of a stopped container, image import of the tarball, and the
memory (PSS) per idle container, ten of them running. Needs root and forge-runtime-linux; a peer
that is not installed, or fails here, is reported so, never faked. Prints a table and one JSON
line; asserts nothing.

Host quirks handled here: crun refuses hybrid cgroups, so it runs in a private mount namespace
with the cgroup2 mount at /sys/fs/cgroup/unified unmounted (``crun_wrapper_ms`` is that
wrapper's own cost, included in crun's figures); podman's default ulimits exceed what root may
set here, so it gets ``--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`` and runc.
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
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio

from forge_core.abc import ContainerSpec

REPEATS = int(os.environ.get("BENCH_REPEATS", "20"))
HUNDRED = int(os.environ.get("BENCH_HUNDRED", "100"))
IDLE = int(os.environ.get("BENCH_IDLE", "10"))
"""Idle containers kept up at once; memory per container is their processes' PSS over this."""
PEERS = ("crun", "runc", "bwrap", "podman", "podman_net")
PODMAN = ["podman", "--runtime", "runc"]
PODMAN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
CRUN_WRAP = [
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"',
    "crun-wrap",
]


def busybox_rootfs(root: Path) -> Path:
    """A busybox rootfs directory (root/rootfs) and its tarball (returned)."""
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "true", "echo", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / d).mkdir()
    tar = root / "busybox.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(rootfs, arcname=".")
    return tar


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def run(argv: list[str], env: dict[str, str] | None = None, *, detached: bool = False) -> float:
    """Seconds from spawn to exit; output is discarded (a detached container must hold no pipe of
    ours: crun's dies when the pipe closes)."""
    start = time.perf_counter()
    err = subprocess.DEVNULL if detached else subprocess.PIPE
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env, check=False
    )
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, argv, stderr=done.stderr)
    return time.perf_counter() - start


def pss_mb(pids: list[int]) -> float:
    """Proportional set size of these processes (shared pages split among their sharers)."""
    total = 0
    for pid in set(pids):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))
    return round(total / 1024, 2)


def per_container(pids: list[int]) -> float:
    return round(pss_mb(pids) / IDLE, 2)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


# --- Forge ----------------------------------------------------------------------------------


async def forge_library(home: Path, tar: Path) -> dict[str, Any]:
    from forge_runtime_linux.images import SnapshotImageStore
    from forge_runtime_linux.runtime import LinuxRuntime

    store = SnapshotImageStore(SnapshotImageStore.Config(root=str(home / "images")))
    imports = []
    for i in range(3):
        t0 = time.perf_counter()
        await store.import_(tar, f"bench{i}:latest")
        imports.append(time.perf_counter() - t0)
        if i:
            store.remove_sync(f"bench{i}:latest")
    runtime = LinuxRuntime(LinuxRuntime.Config(home=str(home)), image_store=store)
    spec = ContainerSpec(command=("/bin/true",), image="bench0:latest", network="private")
    starts, deletes = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        handle = await runtime.start(spec)
        await runtime.wait(handle)
        starts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await runtime.remove(handle)
        deletes.append(time.perf_counter() - t0)
    limiter = anyio.CapacityLimiter(2)

    async def one() -> None:
        async with limiter:
            handle = await runtime.start(spec)
            await runtime.wait(handle)
            await runtime.remove(handle)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(HUNDRED):
            tg.start_soon(one)
    hundred = time.perf_counter() - t0
    idle = [
        await runtime.start(
            ContainerSpec(command=("sleep", "30"), image="bench0:latest", network="private", detach=True)
        )
        for _ in range(IDLE)
    ]
    await anyio.sleep(0.3)
    states = [runtime.state(h.id) for h in idle]
    memory = per_container([pid for d in states for pid in (d["sup_pid"], *runtime.engine.pids(d))])
    for handle in idle:
        await runtime.remove(handle)
    return {
        "library_ms": median_ms(starts),
        "delete_ms": median_ms(deletes),
        "hundred_s": round(hundred, 2),
        "import_ms": median_ms(imports),
        "memory_mb": memory,
    }


def forge_cli(home: Path, tar: Path) -> dict[str, Any]:
    forge = str(Path(sys.executable).with_name("forge"))
    # bytecode caches as any installed package has them (pip compiles at install); the warm-up
    # run writes them for an editable install even where PYTHONDONTWRITEBYTECODE is set
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["FORGE_HOME"] = str(home)
    argv = [forge, "container", "run", "--rm", "bench0:latest", "/bin/true"]
    run(argv, env)
    cli = [run(argv, env) for _ in range(REPEATS)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: run(argv, env), range(HUNDRED)))
    hundred = time.perf_counter() - t0
    imported = [run([forge, "image", "import", str(tar), "--name", f"cli{i}"], env) for i in range(3)]
    detach = [forge, "container", "run", "-d", "bench0:latest", "sleep", "30"]
    ids = [
        subprocess.run(detach, env=env, capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(IDLE)
    ]
    time.sleep(0.3)
    from forge_runtime_linux._engine import Engine

    engine = Engine(home)
    states = [engine.state(cid) for cid in ids]
    memory = per_container([pid for d in states for pid in (d["sup_pid"], *engine.pids(d))])
    for cid in ids:
        engine.remove(cid)
    return {
        "cli_ms": median_ms(cli),
        "cli_hundred_s": round(hundred, 2),
        "cli_import_ms": median_ms(imported),
        "cli_memory_mb": memory,
    }


# --- peers ----------------------------------------------------------------------------------


def oci_bundle(root: Path, rootfs: Path, args: list[str]) -> Path:
    """An OCI bundle (``crun spec``/``runc spec`` defaults) over the shared read-only rootfs."""
    bundle = root / f"bundle-{args[0].strip('/').replace('/', '_')}"
    if (bundle / "config.json").exists():
        return bundle
    bundle.mkdir()
    tool = "crun" if shutil.which("crun") else "runc"
    subprocess.run([tool, "spec"], cwd=bundle, check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(terminal=False, args=args)
    config["root"] = {"path": str(rootfs), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def oci_runtime(name: str, root: Path, rootfs: Path) -> dict[str, Any]:
    """crun or runc from the command line: run, 100 two at a time, delete, idle memory."""
    wrap = CRUN_WRAP if name == "crun" else []
    true_bundle, sleep_bundle = (
        oci_bundle(root, rootfs, ["/bin/true"]),
        oci_bundle(root, rootfs, ["sleep", "30"]),
    )

    def start_to_exit(_: int = 0) -> float:
        return run([*wrap, name, "run", "-b", str(true_bundle), f"b-{uuid.uuid4().hex[:12]}"])

    starts = [start_to_exit() for _ in range(REPEATS)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(start_to_exit, range(HUNDRED)))
    hundred = time.perf_counter() - t0
    deletes = []
    for _ in range(min(REPEATS, 10)):
        cid = f"d-{uuid.uuid4().hex[:12]}"
        run([*wrap, name, "run", "-d", "-b", str(true_bundle), cid], detached=True)
        time.sleep(0.05)
        deletes.append(run([*wrap, name, "delete", "-f", cid]))
    ids = [f"m-{uuid.uuid4().hex[:12]}" for _ in range(IDLE)]
    for cid in ids:
        run([*wrap, name, "run", "-d", "-b", str(sleep_bundle), cid], detached=True)
    time.sleep(0.3)
    state = [*wrap, name, "state"]
    pids = [
        json.loads(subprocess.run([*state, c], capture_output=True, text=True, check=True).stdout)["pid"]
        for c in ids
    ]
    memory: Any = "n/a (container not running)"
    if all(pid > 1 for pid in pids):
        memory = per_container([p for pid in pids for p in descendants(pid)])
    for cid in ids:
        subprocess.run([*wrap, name, "delete", "-f", cid], capture_output=True, check=False)
    return {
        "cli_ms": median_ms(starts),
        "hundred_s": round(hundred, 2),
        "delete_ms": median_ms(deletes),
        "memory_mb": memory,
    }


def bubblewrap(rootfs: Path) -> dict[str, Any]:
    base = ["bwrap", "--unshare-all", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    starts = [run([*base, "/bin/true"]) for _ in range(REPEATS)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: run([*base, "/bin/true"]), range(HUNDRED)))
    hundred = time.perf_counter() - t0
    procs = [subprocess.Popen([*base, "sleep", "30"]) for _ in range(IDLE)]
    time.sleep(0.3)
    memory = per_container([p for proc in procs for p in descendants(proc.pid)])
    for proc in procs:
        proc.kill()
        proc.wait()
    return {
        "cli_ms": median_ms(starts),
        "hundred_s": round(hundred, 2),
        "delete_ms": "n/a (no container state)",
        "memory_mb": memory,
        "import_ms": "n/a (no image store)",
    }


def podman(tar: Path, network: str | None) -> dict[str, Any]:
    image = f"forge-bench-{uuid.uuid4().hex[:8]}"
    imports = [run([*PODMAN, "import", str(tar), f"{image}:{i}"]) for i in range(3)]
    net = ["--network", network] if network else []
    argv = [*PODMAN, "run", "--rm", *net, *PODMAN_LIMITS, f"{image}:0", "/bin/true"]
    starts = [run(argv) for _ in range(REPEATS)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: run(argv), range(HUNDRED)))
    hundred = time.perf_counter() - t0
    deletes = []
    for _ in range(min(REPEATS, 10)):
        cid = subprocess.run(
            [*PODMAN, "create", *net, *PODMAN_LIMITS, f"{image}:0", "/bin/true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        run([*PODMAN, "start", "--attach", cid])
        deletes.append(run([*PODMAN, "rm", cid]))
    run_idle = [*PODMAN, "run", "-d", *net, *PODMAN_LIMITS, f"{image}:0", "sleep", "30"]
    ids = [
        subprocess.run(run_idle, capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(IDLE)
    ]
    time.sleep(0.3)
    inspect = subprocess.run([*PODMAN, "inspect", *ids], capture_output=True, text=True, check=True)
    pids = [
        p
        for st in json.loads(inspect.stdout)
        for p in (st["State"]["ConmonPid"], *descendants(st["State"]["Pid"]))
    ]
    memory = per_container(pids)
    subprocess.run([*PODMAN, "rm", "-f", *ids], capture_output=True, check=False)
    subprocess.run([*PODMAN, "rmi", *(f"{image}:{i}" for i in range(3))], capture_output=True, check=False)
    return {
        "cli_ms": median_ms(starts),
        "hundred_s": round(hundred, 2),
        "delete_ms": median_ms(deletes),
        "import_ms": median_ms(imports),
        "memory_mb": memory,
    }


def peer(name: str, root: Path, tar: Path) -> dict[str, Any]:
    binary = {"bwrap": "bwrap", "podman_net": "podman"}.get(name, name)
    if not shutil.which(binary):
        return {"status": f"missing ({binary} not installed)"}
    try:
        if name in ("crun", "runc"):
            return {**oci_runtime(name, root, root / "rootfs"), "import_ms": "n/a (no image store)"}
        if name == "bwrap":
            return bubblewrap(root / "rootfs")
        return podman(tar, "none" if name == "podman" else None)
    except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        return {"status": f"failed here: {(text.strip().splitlines() or [str(exc)])[-1][:120]}"}


# --- report ---------------------------------------------------------------------------------

ROWS = (
    ("CLI start-to-exit /bin/true (ms)", "cli_ms"),
    ("library start-to-exit (ms)", "library_ms"),
    ("100 containers, 2 at a time (s)", "hundred_s"),
    ("delete a stopped container (ms)", "delete_ms"),
    ("image import of the tarball (ms)", "import_ms"),
    (f"memory per idle container, {IDLE} up (PSS, MB)", "memory_mb"),
)


def table(results: dict[str, dict[str, Any]]) -> str:
    names = ["forge", *PEERS]
    head = ["measure", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in ROWS:
        cells = []
        for n in names:
            r = results[n]
            cells.append(str(r.get(key, r.get("status", "n/a"))))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if os.geteuid() != 0:
        print(json.dumps({"bench": "containers", "skipped": "needs root"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tar = busybox_rootfs(root)
        home = root / "home"
        forge = anyio.run(forge_library, home, tar)
        cli = forge_cli(home, tar)
        forge.update(cli, library_memory_mb=forge["memory_mb"], memory_mb=cli["cli_memory_mb"])
        results: dict[str, dict[str, Any]] = {"forge": forge}
        for name in PEERS:
            results[name] = peer(name, root, tar)
        results["crun"]["crun_wrapper_ms"] = (
            median_ms([run([*CRUN_WRAP, "true"]) for _ in range(REPEATS)]) if shutil.which("crun") else "n/a"
        )
    print("container benchmark (busybox rootfs; podman = --network none, podman_net = its default network)")
    print(table(results))
    cli_line = f"forge CLI: 100 two at a time {forge['cli_hundred_s']} s"
    print(f"{cli_line}, `forge image import` {forge['cli_import_ms']} ms")
    print(f"forge memory per idle container started from a library parent: {forge['library_memory_mb']} MB")
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    print(json.dumps({"bench": "containers", "machine": machine, **results}))


if __name__ == "__main__":
    main()
