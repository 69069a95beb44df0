"""Daemon figures: idle RSS with a few scheduled workflows, and scheduler lag (fire time to
run start) over real schedules. Prints JSON, then a table. Run: python benchmarks/bench_daemon.py"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(schedule: str, count: int) -> str:
    flows = {f"wf{i}": {"schedule": schedule, "executor": "local",
                        "tasks": [{"name": "a", "command": "true"},
                                  {"name": "b", "command": "true", "depends_on": ["a"]}]}
             for i in range(count)}
    return json.dumps({"workflows": flows})


def get(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return None


def run_daemon(schedule: str, count: int, seconds: float) -> tuple[float, str]:
    """Run a daemon for ``seconds`` once ready; returns (RSS MiB at the end, /metrics text)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "forge.yml"
        cfg.write_text(config(schedule, count))
        port = free_port()
        env = dict(os.environ, FORGE_HOME=str(Path(tmp) / "home"))
        proc = subprocess.Popen(
            [sys.executable, "-c", "from forge_core.cli import main; main()", "daemon",
             "--config", str(cfg), "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while get(port, "/readyz") != "ready\n":
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the daemon did not become ready")
                time.sleep(0.05)
            time.sleep(seconds)
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            return rss, get(port, "/metrics") or ""
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def lag_figures(metrics: str) -> dict[str, float]:
    count = total = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "forge_scheduler_lag_seconds_count":
                count += s.value
            elif s.name == "forge_scheduler_lag_seconds_sum":
                total += s.value
            elif s.name == "forge_scheduler_lag_seconds_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    p95 = next((le for le, n in sorted(buckets.items()) if count and n >= 0.95 * count),
               float("nan"))
    return {"scheduled_runs": count, "lag_mean_ms": 1000 * total / count if count else float("nan"),
            "lag_p95_bucket_ms": 1000 * p95}


def main() -> None:
    idle_rss, _ = run_daemon("@hourly", 5, 5.0)
    busy_rss, metrics = run_daemon("every 2s", 3, 12.0)
    figures = {"idle_rss_mib_5_workflows": round(idle_rss, 1),
               "rss_mib_after_busy_3_workflows_every_2s": round(busy_rss, 1),
               **{k: round(v, 2) for k, v in lag_figures(metrics).items()}}
    print(json.dumps(figures))
    width = max(len(k) for k in figures)
    print(f"{'figure':<{width}}  value")
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
