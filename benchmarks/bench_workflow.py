"""Workflow engine speed: fan-out of `true` tasks, a chain of Python tasks, and CLI start-up.

Engine overhead per task = (Forge's wall time - a bare loop doing the same work) / tasks;
engine CPU per task = CPU time of the Forge process, every thread, children excluded / tasks
(steadier than wall time on a busy machine); cores busy = CPU time of the process and the
children it reaped / wall time (how much of the machine a fan-out keeps working). Forge and
the bare loop run alternately BENCH_ROUNDS times (default 3) and the best round of each
counts, so a burst of load on a shared machine spoils one round, not the figure. Every run
gets a fresh Forge home, and all of them are deleted only at the end: on an ext4 without a
journal, creating files within minutes of deleting thousands is several times slower (inode
allocation skips recently freed inodes), which would charge the benchmark's own clean-up to
the next round. The cost of creating one empty file there, measured first, is printed as a
figure of that state. Prints a table and one JSON line; asserts nothing. Run: python
benchmarks/bench_workflow.py
"""

from __future__ import annotations

import errno
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from forge_core.runner import run_workflow
from forge_core.runtime import own_process
from forge_core.runtime._spawn import own_terminal
from forge_core.spec import TaskSpec, WorkflowSpec
from forge_core.state import StateStore

FANOUT = int(os.environ.get("BENCH_FANOUT", "1000"))
CHAIN = int(os.environ.get("BENCH_CHAIN", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def _all_cpu() -> float:
    """CPU seconds of this process (every thread) and of the children it reaped."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bare_fanout(n: int, workers: int = 2) -> tuple[float, float]:
    """(wall seconds, cores busy) of n `true` processes launched by `workers` threads, then
    one more (the join)."""
    todo = list(range(n))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            subprocess.run(["true"], check=True)

    start, cpu = time.perf_counter(), _all_cpu()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    subprocess.run(["true"], check=True)
    took = time.perf_counter() - start
    return took, (_all_cpu() - cpu) / took


def forge_run(spec: WorkflowSpec, homes: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, cores busy) of one run of ``spec``, in a
    new Forge home under ``homes``."""
    home = Path(tempfile.mkdtemp(dir=homes))
    store = StateStore(home / "state.db")

    async def main() -> str:
        # only the state leaves the loop: asyncio.run's exit formats the repr of the main
        # task's result (~13 ms for a record of 1001 tasks), which no engine pays for
        return (await run_workflow(spec, store=store, home=home)).state

    start, cpu, everything = time.perf_counter(), time.process_time(), _all_cpu()
    state = anyio.run(main)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert state == "succeeded", state
    return took, cpu, (_all_cpu() - everything) / took


def file_create_us(folder: Path, n: int = 300) -> float:
    """Microseconds to create (and close) one empty file in a new folder under ``folder``,
    as a run creates each attempt's log: a figure of the disk's state, which moves the
    fan-out (on an ext4 without a journal, creating files is several times slower for a few
    minutes after thousands were deleted)."""
    probe = Path(tempfile.mkdtemp(dir=folder))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    start = time.perf_counter()
    for i in range(n):
        os.close(os.open(probe / f"f{i}.log", flags, 0o644))
    return (time.perf_counter() - start) / n * 1e6


def step(value: int) -> dict[str, int]:
    return {"value": value + 1}


def bare_steps(n: int) -> float:
    """The chain's work without an engine: ``step`` called ``n`` times in a row."""
    start = time.perf_counter()
    value = {"value": 0}
    for _ in range(n):
        value = step(value["value"])
    return time.perf_counter() - start


def chain_spec(n: int) -> WorkflowSpec:
    tasks = []
    for i in range(n):
        def fn(**kw: Any) -> dict[str, int]:
            prev = next(iter(kw.values()), {"value": 0})
            return step(prev["value"])
        tasks.append(TaskSpec(name=f"t{i}", func=fn, python=f"bench:t{i}",
                              depends_on=(f"t{i-1}",) if i else ()))
    return WorkflowSpec(name="chain", tasks=tuple(tasks), concurrency=1, executor="thread")


def cli_startup(repeats: int = 10) -> float:
    """Median wall time of `forge --help`, using the `forge` script beside this interpreter
    (a `forge` found on PATH may be a version-manager shim that adds its own start-up)."""
    beside = Path(sys.executable).with_name("forge")
    forge = str(beside) if beside.exists() else "forge"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([forge, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interpreter_startup(repeats: int = 10) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fanout_spec() -> WorkflowSpec:
    return WorkflowSpec(
        name="fanout", concurrency=2,
        tasks=(*(TaskSpec(name=f"t{i}", command=("true",)) for i in range(FANOUT)),
               TaskSpec(name="join", command=("true",),
                        depends_on=tuple(f"t{i}" for i in range(FANOUT)))),
    )


def child_cpu_cgroup() -> Path | None:
    """A new cpu cgroup under the root one, for the fan-out as a service runs it (systemd
    puts every service in a cgroup of its own, and the scheduler treats a process in a cgroup
    other than the root differently: no autogroup per session). ``None`` unless this process
    sits in the root cpu cgroup and may create one there (root, Linux, cgroup v1 or v2)."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in own:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):  # cgroup v1
            base = Path("/sys/fs/cgroup") / controllers
            break
    else:
        base, path = Path("/sys/fs/cgroup"), next(
            (line.split(":", 2)[2] for line in own if line.startswith("0::")), "")
        try:
            if "cpu" not in (base / "cgroup.subtree_control").read_text().split():
                return None
        except OSError:
            return None
    if path != "/" or not (base / "cgroup.procs").exists():
        return None
    group = base / f"forge-bench-{os.getpid()}"
    try:
        group.mkdir()
    except OSError:
        return None
    return group


def remove_cgroup(group: Path) -> None:
    """Remove ``group`` once its last process left (the watchdog of the Forge that ran in it
    exits a moment after that Forge)."""
    for _ in range(100):
        try:
            group.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
        time.sleep(0.05)
    group.rmdir()


def fanout_in(group: Path, homes: Path) -> dict[str, float]:
    """The alternating fan-out rounds in a child process moved into ``group``."""
    done = subprocess.run([sys.executable, __file__, "--fanout-in", str(group), str(homes)],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def fanout_rounds(homes: Path) -> dict[str, float]:
    """Best of ``ROUNDS`` alternating rounds of the bare loop and Forge."""
    fan = fanout_spec()
    bare = forge = cpu = float("inf")
    bare_busy = forge_busy = 0.0  # of the best round of each
    for _ in range(ROUNDS):
        took, busy = bare_fanout(FANOUT)
        if took < bare:
            bare, bare_busy = took, busy
        took, used, busy = forge_run(fan, homes)
        if took < forge:
            forge, forge_busy = took, busy
        cpu = min(cpu, used)
    return {"bare": bare, "forge": forge, "cpu": cpu, "bare_busy": bare_busy,
            "forge_busy": forge_busy}


def main() -> None:
    own_process()  # as `forge run` does: its descriptors and terminal are Forge's own
    if sys.argv[1:2] == ["--fanout-in"]:  # the child process of fanout_in
        Path(sys.argv[2], "cgroup.procs").write_text(str(os.getpid()))
        print(json.dumps(fanout_rounds(Path(sys.argv[3]))))
        return
    bare_chain = forge_chain = chain_cpu = float("inf")
    with tempfile.TemporaryDirectory() as homes:  # deleted after the last round
        create_us = file_create_us(Path(homes))
        fan = fanout_rounds(Path(homes))
        for _ in range(ROUNDS):  # alternating, best of each
            bare_chain = min(bare_chain, bare_steps(CHAIN))
            took, cpu, _busy = forge_run(chain_spec(CHAIN), Path(homes))
            forge_chain, chain_cpu = min(forge_chain, took), min(chain_cpu, cpu)
        group = child_cpu_cgroup()
        if group is not None:
            try:
                in_group = fanout_in(group, Path(homes))
            finally:
                remove_cgroup(group)
    results = {
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        "rounds": ROUNDS,
        "fanout_tasks": FANOUT + 1,
        "fanout_bare_s": round(fan["bare"], 3),
        "fanout_forge_s": round(fan["forge"], 3),
        "fanout_ratio": round(fan["forge"] / fan["bare"], 2),
        "fanout_overhead_ms_per_task": round((fan["forge"] - fan["bare"]) / (FANOUT + 1) * 1000,
                                             3),
        "fanout_engine_cpu_ms_per_task": round(fan["cpu"] / (FANOUT + 1) * 1000, 3),
        "fanout_bare_cores_busy": round(fan["bare_busy"], 2),
        "fanout_forge_cores_busy": round(fan["forge_busy"], 2),
        "disk_file_create_us": round(create_us, 1),
        # a session per child only with a terminal Forge could not give up (runtime/_spawn.py)
        "fanout_session_per_child": own_terminal(),
        # the same fan-out in a child cpu cgroup, as a systemd service runs (root only)
        **({"fanout_in_cgroup_bare_s": round(in_group["bare"], 3),
            "fanout_in_cgroup_forge_s": round(in_group["forge"], 3),
            "fanout_in_cgroup_ratio": round(in_group["forge"] / in_group["bare"], 2),
            "fanout_in_cgroup_forge_cores_busy": round(in_group["forge_busy"], 2)}
           if group is not None else {}),
        "chain_tasks": CHAIN,
        "chain_bare_s": round(bare_chain, 5),
        "chain_forge_s": round(forge_chain, 3),
        "chain_overhead_ms_per_task": round((forge_chain - bare_chain) / CHAIN * 1000, 3),
        "chain_engine_cpu_ms_per_task": round(chain_cpu / CHAIN * 1000, 3),
        "python_startup_ms": round(interpreter_startup() * 1000, 1),
        "cli_help_ms": round(cli_startup() * 1000, 1),
    }
    width = max(map(len, results))
    print("workflow engine benchmark")
    for key, val in results.items():
        print(f"  {key:<{width}}  {val}")
    print(json.dumps({"bench": "workflow", **results}))


if __name__ == "__main__":
    main()
