"""Benchmark: the ``forge`` command's start-up.

Prints a table and one JSON line: wall time of ``forge --help`` (the installed console script),
of ``forge NOUN`` handled by a trivial ``forge.cli_fast`` entry point (a test distribution on
``PYTHONPATH``), of a bare interpreter start, and the cost of finding a group's entry points
in a fresh interpreter — Forge's reader of ``entry_points.txt`` against
``importlib.metadata``. Run: ``python benchmarks/bench_cli.py [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOKUP = {
    "forge_reader": "from forge_core.cli._fast import entry_points\n"
                    "entry_points('forge.cli_fast')",
    "importlib_metadata": "from importlib.metadata import entry_points\n"
                          "entry_points(group='forge.cli_fast')",
}


def wall(argv: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    """Median wall seconds of running ``argv`` to completion."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def lookup_ms(code: str, repeat: int) -> float:
    """Median milliseconds ``code`` takes in a fresh interpreter (imports included)."""
    timed = f"import time\nstart = time.perf_counter()\n{code}\nprint(time.perf_counter() - start)"
    runs = [float(subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(repeat)]
    return statistics.median(runs) * 1000


def fast_site(folder: Path) -> Path:
    """A distribution whose ``forge.cli_fast`` entry ``benchnoun`` returns 0 at once."""
    info = folder / "fp_bench-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fp-bench\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[forge.cli_fast]\nbenchnoun = fp_bench:main\n")
    (folder / "fp_bench.py").write_text("def main(argv):\n    return 0\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    script = Path(sys.executable).with_name("forge")
    forge = [str(script)] if script.exists() else [
        sys.executable, "-c", "from forge_core.cli import main; main()"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(fast_site(Path(tmp)))}
        result = {
            "benchmark": "cli", "python": platform.python_version(), "repeat": args.repeat,
            "interpreter_ms": wall([sys.executable, "-c", "pass"], args.repeat) * 1000,
            "help_ms": wall([*forge, "--help"], args.repeat) * 1000,
            "fast_noun_ms": wall([*forge, "benchnoun"], args.repeat, env) * 1000,
            **{f"lookup_{k}_ms": lookup_ms(v, args.repeat) for k, v in LOOKUP.items()},
        }
    result = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result))
    print(f"{'measure':<32}{'ms':>10}")
    for key, value in result.items():
        if key.endswith("_ms"):
            print(f"{key:<32}{value:>10}")


if __name__ == "__main__":
    main()
