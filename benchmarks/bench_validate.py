"""Benchmark: load and validate a generated 10,000-task workflow (YAML -> specs -> checks).

Prints JSON and a table: wall and CPU time of the whole ``load_project`` (parse, substitution,
defaults, cattrs, validation), of the YAML parse alone and of ``validate_workflow`` alone, the
peak memory (tracemalloc) of one load, and the time to reject the same file with one bad
dependency in its last task (lines are worked out only then).
Run: ``python benchmarks/bench_validate.py [--tasks N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from forge_core.config import load_project, validate_workflow
from forge_core.config._source import read_document
from forge_core.exceptions import ConfigError


def generate(tasks: int, seed: int = 7) -> str:
    """A workflow where each task depends on up to three earlier ones and reads one's output."""
    rng = random.Random(seed)
    lines = [
        "workflows:",
        "  big:",
        "    concurrency: 8",
        "    params: {date: '2024-01-01'}",
        "    defaults: {retries: 2, retry_delay: 5s, timeout: 10m, env: {STAGE: bench}}",
        "    tasks:",
    ]
    for i in range(tasks):
        deps = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(1, 3))}) if i else []
        arg = f"${{{{ tasks.{deps[0]}.outputs.rows }}}}" if deps else "${{ params.date }}"
        lines += [
            f"      - name: t{i}",
            f"        command: [python, -c, 'print(1)', '{arg}']",
            f"        depends_on: [{', '.join(deps)}]",
        ]
    return "\n".join(lines) + "\n"


def measure(path: Path, repeat: int) -> dict[str, float]:
    walls, cpus, parses, checks, errors = [], [], [], [], []
    bad = path.with_name("bad.yml")
    bad.write_text(path.read_text() + "      - {name: bad, command: x, depends_on: [missing]}\n")
    for _ in range(repeat):
        start = time.perf_counter()
        read_document(path)
        parses.append(time.perf_counter() - start)
        start, cpu = time.perf_counter(), time.process_time()
        project = load_project(path)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        spec = project.workflows["big"]
        start = time.perf_counter()
        validate_workflow(spec)
        checks.append(time.perf_counter() - start)
        start = time.perf_counter()
        with contextlib.suppress(ConfigError):  # the point: it is refused, with a line
            load_project(bad)
        errors.append(time.perf_counter() - start)
    tracemalloc.start()
    load_project(path)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"load_and_validate_s": statistics.median(walls), "best_s": min(walls),
            "cpu_s": statistics.median(cpus), "yaml_parse_s": statistics.median(parses),
            "validate_only_s": statistics.median(checks), "peak_mb": peak / 2**20,
            "reject_with_line_s": statistics.median(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forge.yml"
        path.write_text(generate(args.tasks))
        result = {"benchmark": "validate", "tasks": args.tasks, "repeat": args.repeat,
                  "file_kb": round(path.stat().st_size / 1024), "python": platform.python_version(),
                  **{k: round(v, 4) for k, v in measure(path, args.repeat).items()}}
    print(json.dumps(result))
    print(f"{'measure':<24}{'value':>12}")
    for key in ("tasks", "file_kb", "load_and_validate_s", "best_s", "cpu_s", "yaml_parse_s",
                "validate_only_s", "peak_mb", "reject_with_line_s"):
        print(f"{key:<24}{result[key]:>12}")


if __name__ == "__main__":
    main()
