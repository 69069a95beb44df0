"""The daemon as a real process: SIGKILL mid-run and restart, Prometheus over real HTTP,
secrets found nowhere Forge wrote, and a webhook received by a real local server."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from helpers import wait_for

from forge_core.state import StateStore

SECRET = "tok-Zq8!secret-value-91"
LEAKY = ('echo "token=$API_TOKEN"; printf %s "$API_TOKEN" | base64;'
         ' echo "{\\"t\\": \\"$API_TOKEN\\"}"; echo "bad $API_TOKEN" >&2; exit 1')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hooks(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        Hooks.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Hooks.received = []
    server = HTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/forge"
    server.shutdown()
    server.server_close()


class DaemonProcess:
    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp, self.port = tmp, port
        self.home = tmp / "home"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, FORGE_HOME=str(self.home), FORGE_TEST_SECRET=SECRET)
        with (self.tmp / "daemon.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from forge_core.cli import main; main()", "daemon",
                 "--config", str(self.tmp / "forge.yml"), "--port", str(self.port),
                 "--grace", "5"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self.get("/readyz") == "ready\n", what="the daemon to be ready")

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


def write_config(tmp: Path, webhook: str) -> None:
    spec = {
        "workflows": {
            "etl": {"schedule": "every 1h", "catchup": 7200, "executor": "local", "tasks": [
                {"name": "first", "command": f"echo ran >> {tmp}/first.count", "shell": True},
                {"name": "slow", "depends_on": ["first"], "shell": True,
                 "command": f"echo start >> {tmp}/slow.count; sleep 4"},
                {"name": "last", "depends_on": ["slow"], "command": "true"},
            ]},
            "secretive": {
                "schedule": "every 1h", "catchup": 7200, "executor": "local",
                "secrets": {"API_TOKEN": {"env": "FORGE_TEST_SECRET"}},
                "hooks": {"notify": {"webhook": webhook}},
                "tasks": [{"name": "leak", "shell": True, "on_failure": "notify",
                           "command": LEAKY}],
            },
        }
    }
    (tmp / "forge.yml").write_text(json.dumps(spec))


def make_due(home: Path, *workflows: str) -> None:
    """Put each workflow's scheduler cursor just before the last hour mark: one run is due."""
    mark = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    store = StateStore(home / "state.db")
    for wf in workflows:
        store.set_value("scheduler", wf, {"cursor": (mark - timedelta(seconds=1)).isoformat(),
                                          "backlog": []})
    store.close()


def task_state(home: Path, task: str) -> str | None:
    with closing(sqlite3.connect(home / "state.db")) as db:
        row = db.execute("SELECT state FROM tasks WHERE name = ?", (task,)).fetchone()
    return row[0] if row else None


@pytest.mark.slow
class TestDaemonProcess:
    def test_sigkill_restart_finishes_without_rerunning_succeeded_tasks(
        self, tmp_path: Path, webhook: str
    ) -> None:
        """Killed mid-run, the restarted daemon resumes the run; ``first`` ran once, and the
        metrics, the secret masking and the failure webhook hold over real processes."""
        write_config(tmp_path, webhook)
        daemon = DaemonProcess(tmp_path, free_port())
        make_due(daemon.home, "etl", "secretive")
        daemon.start()
        try:
            wait_for(lambda: task_state(daemon.home, "slow") == "running", what="slow to run")
            daemon.stop(signal.SIGKILL)
            daemon.start()
            store = StateStore(daemon.home / "state.db")
            run = wait_for(lambda: [r for r in store.list_runs("etl") if r.state == "succeeded"],
                           what="the resumed run to succeed")[0]
            wait_for(lambda: Hooks.received, what="the failure webhook")
            metrics = wait_for(lambda: (m := daemon.get("/metrics")) and
                               'forge_runs_total{state="succeeded",workflow="etl"}' in m and m,
                               what="metrics for the resumed run")
            api = [daemon.get(p) or "" for p in ("/api/workflows", "/api/runs")]
            secret_run = store.list_runs("secretive")[0]
            api.append(daemon.get(f"/api/runs/{secret_run.run_id}") or "")
            api.append(daemon.get(f"/api/runs/{secret_run.run_id}/tasks/leak/logs") or "")
        finally:
            daemon.stop()
        assert (tmp_path / "first.count").read_text().count("ran") == 1
        assert [a.number for t in store.get_run(run.run_id).tasks for a in t.attempts
                if t.name == "first"] == [1]
        assert "forge_task_duration_seconds_bucket" in metrics
        assert "forge_task_queue_wait_seconds_count" in metrics
        assert "token=***" in api[3]
        forms = [SECRET, base64.b64encode(SECRET.encode()).decode(), json.dumps(SECRET)[1:-1]]
        leaks = [(path, form) for path in daemon.home.rglob("*") if path.is_file()
                 for form in forms if form.encode() in path.read_bytes()]
        leaks += [("api", form) for text in api for form in forms if form in text]
        leaks += [("webhook", form) for body in Hooks.received for form in forms
                  if form.encode() in body]
        with closing(sqlite3.connect(daemon.home / "state.db")) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                dump = json.dumps(db.execute(f"SELECT * FROM {table}").fetchall(), default=str)
                leaks += [(table, form) for form in forms if form in dump]
        assert leaks == []
