"""Start-to-exit cost of the ``process`` runtime and the core executors against bare subprocess.

Prints one JSON object (milliseconds per task, medians of several rounds) and a table.
Run: ``python benchmarks/bench_runtime.py [iterations]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

from forge_core.abc import ContainerSpec, TaskRun
from forge_core.executors import ProcessExecutor, ThreadExecutor
from forge_core.runtime import ProcessRuntime

ROUNDS = 5


def _bare(n: int) -> None:
    for _ in range(n):
        subprocess.run(["true"], check=True)


def _bare_session(n: int) -> None:
    for _ in range(n):
        subprocess.run(["true"], check=True, start_new_session=True, close_fds=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


async def _timed(n: int, one: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await one()
    return (time.perf_counter() - start) / n * 1e3


def _timed_sync(n: int, loop: Callable[[int], None]) -> float:
    start = time.perf_counter()
    loop(n)
    return (time.perf_counter() - start) / n * 1e3


async def _measure(n: int) -> dict[str, float]:
    runtime = ProcessRuntime()
    thread = ThreadExecutor(concurrency=1)
    process = ProcessExecutor(concurrency=1)
    true = ContainerSpec(command=["true"])
    detached = ContainerSpec(command=["true"], detach=True)
    cmd_task = TaskRun(run_id="b", task="t", attempt=1, container=true)
    py_task = TaskRun(run_id="b", task="p", attempt=1, kind="python", python="math:sqrt",
                      inputs={"x": 4.0})
    cases: dict[str, Callable[[], Awaitable[float]]] = {
        "ProcessRuntime.run(true)": lambda: _timed(n, lambda: runtime.run(true)),
        "ProcessRuntime.run(true, detach)": lambda: _timed(n, lambda: runtime.run(detached)),
        "ThreadExecutor command true": lambda: _timed(n, lambda: thread.submit(cmd_task)),
        "ThreadExecutor python math:sqrt": lambda: _timed(n, lambda: thread.submit(py_task)),
        "ProcessExecutor python math:sqrt": lambda: _timed(
            max(1, n // 20), lambda: process.submit(py_task)),
    }
    names = ["subprocess.run(true)", "subprocess.run(true, session)", *cases]
    results: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(ROUNDS):
        results["subprocess.run(true)"].append(_timed_sync(n, _bare))
        results["subprocess.run(true, session)"].append(_timed_sync(n, _bare_session))
        for name, case in cases.items():
            results[name].append(await case())
    return {name: round(statistics.median(values), 3) for name, values in results.items()}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    medians = anyio.run(_measure, n)
    base = medians["subprocess.run(true)"]
    print(json.dumps({"iterations": n, "rounds": ROUNDS, "ms_per_task": medians}))
    print(f"\n{'case':<36} {'ms/task':>9} {'vs bare':>9}")
    for name, value in medians.items():
        print(f"{name:<36} {value:>9.3f} {value - base:>+9.3f}")


if __name__ == "__main__":
    main()
