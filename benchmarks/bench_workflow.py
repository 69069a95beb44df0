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
from forge_core.runtime import own_descriptors
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


def main() -> None:
    own_descriptors()  # as `forge run` does: this process's descriptors are Forge's own
    fan = WorkflowSpec(
        name="fanout", concurrency=2,
        tasks=(*(TaskSpec(name=f"t{i}", command=("true",)) for i in range(FANOUT)),
               TaskSpec(name="join", command=("true",),
                        depends_on=tuple(f"t{i}" for i in range(FANOUT)))),
    )
    bare, forge_fan, fan_cpu, bare_chain, forge_chain, chain_cpu = (float("inf"),) * 6
    bare_busy = forge_busy = 0.0  # of the best round of each
    with tempfile.TemporaryDirectory() as homes:  # deleted after the last round
        create_us = file_create_us(Path(homes))
        for _ in range(ROUNDS):  # alternating, best of each
            took, busy = bare_fanout(FANOUT)
            if took < bare:
                bare, bare_busy = took, busy
            took, cpu, busy = forge_run(fan, Path(homes))
            if took < forge_fan:
                forge_fan, forge_busy = took, busy
            fan_cpu = min(fan_cpu, cpu)
            bare_chain = min(bare_chain, bare_steps(CHAIN))
            took, cpu, _busy = forge_run(chain_spec(CHAIN), Path(homes))
            forge_chain, chain_cpu = min(forge_chain, took), min(chain_cpu, cpu)
    results = {
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        "rounds": ROUNDS,
        "fanout_tasks": FANOUT + 1,
        "fanout_bare_s": round(bare, 3),
        "fanout_forge_s": round(forge_fan, 3),
        "fanout_ratio": round(forge_fan / bare, 2),
        "fanout_overhead_ms_per_task": round((forge_fan - bare) / (FANOUT + 1) * 1000, 3),
        "fanout_engine_cpu_ms_per_task": round(fan_cpu / (FANOUT + 1) * 1000, 3),
        "fanout_bare_cores_busy": round(bare_busy, 2),
        "fanout_forge_cores_busy": round(forge_busy, 2),
        "disk_file_create_us": round(create_us, 1),
        # a session per child only when run from a terminal (forge_core/runtime/_spawn.py)
        "fanout_session_per_child": own_terminal(),
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
