"""The CLI around scheduling: graph, backfill, pause/unpause, gantt, and a background daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_for

from forge_core.state import StateStore

CONFIG = {"workflows": {"etl": {
    "schedule": "@daily", "timezone": "Europe/Paris", "executor": "local",
    "tasks": [{"name": "extract", "command": "echo $FORGE_LOGICAL_DATE", "shell": True},
              {"name": "load", "command": "true", "depends_on": ["extract"]}],
}}}


def forge(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FORGE_HOME=str(tmp / "home"))
    return subprocess.run([sys.executable, "-c", "from forge_core.cli import main; main()",
                           *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "forge.yml").write_text(json.dumps(CONFIG))
    return tmp_path


class TestWorkflowCommands:
    def test_graph_formats(self, project: Path) -> None:
        """graph prints Mermaid by default and writes an HTML file with -o."""
        mermaid = forge(project, "workflow", "graph", "etl")
        html = forge(project, "workflow", "graph", "etl", "--format", "html", "-o", "g.html")
        bad = forge(project, "workflow", "graph", "etl", "--format", "png")
        assert mermaid.returncode == 0
        assert "t0 --> t1" in mermaid.stdout
        assert html.returncode == 0
        assert "<svg" in (project / "g.html").read_text()
        assert bad.returncode == 2
        assert "Traceback" not in bad.stderr

    def test_backfill_dry_run_then_reprocess_none(self, project: Path) -> None:
        """A dry run lists Paris midnights newest first; a real backfill runs each once and a
        second one with --reprocess none has nothing left to do."""
        dry = forge(project, "workflow", "backfill", "etl", "--from", "2026-01-01",
                    "--to", "2026-01-03", "--dry-run", "--order", "newest")
        assert dry.stdout.split() == ["2026-01-03T00:00:00+01:00", "2026-01-02T00:00:00+01:00",
                                      "2026-01-01T00:00:00+01:00"]
        real = forge(project, "workflow", "backfill", "etl", "--from", "2026-01-01",
                     "--to", "2026-01-02")
        again = forge(project, "workflow", "backfill", "etl", "--from", "2026-01-01",
                      "--to", "2026-01-02", "--dry-run")
        assert real.returncode == 0, real.stderr
        assert again.stdout.strip() == "nothing to backfill"
        store = StateStore(project / "home" / "state.db")
        runs = store.list_runs("etl")
        assert sorted(r.trigger for r in runs) == ["backfill", "backfill"]

    def test_a_reversed_backfill_range_is_refused(self, project: Path) -> None:
        """--from after --to is a usage error saying so, not a silent 'nothing to backfill'."""
        result = forge(project, "workflow", "backfill", "etl", "--from", "2026-01-03",
                       "--to", "2026-01-01")
        assert result.returncode == 2
        assert result.stderr.startswith("error: --from 2026-01-03 is after --to 2026-01-01")
        assert StateStore(project / "home" / "state.db").list_runs() == []

    def test_sigterm_stops_a_backfill_before_its_later_dates(self, tmp_path: Path) -> None:
        """SIGTERM during a backfill's first run stops that run (cancelled) and exits 143;
        the later dates never run."""
        started = tmp_path / "started"
        (tmp_path / "forge.yml").write_text(json.dumps({"workflows": {"slow": {
            "schedule": "@daily", "tasks": [{"name": "wait", "shell": True, "grace": 20,
                                             "command": f"touch {started}; sleep 60"}]}}}))
        env = dict(os.environ, FORGE_HOME=str(tmp_path / "home"))
        proc = subprocess.Popen(
            [sys.executable, "-c", "from forge_core.cli import main; main()", "workflow",
             "backfill", "slow", "--from", "2026-01-01", "--to", "2026-01-03"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(started.exists)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert "later dates did not run" in err
        runs = StateStore(tmp_path / "home" / "state.db").list_runs("slow")
        assert [r.state for r in runs] == ["cancelled"]

    def test_pause_unpause_and_gantt(self, project: Path) -> None:
        """pause/unpause flip the stored flag; gantt writes the last run's chart."""
        assert forge(project, "workflow", "pause", "etl").returncode == 0
        store = StateStore(project / "home" / "state.db")
        assert store.get_value("paused", "etl")["reason"] == "paused by user"
        assert forge(project, "workflow", "unpause", "etl").returncode == 0
        assert store.get_value("paused", "etl") is None
        forge(project, "workflow", "backfill", "etl", "--from", "2026-01-01", "--to", "2026-01-01")
        gantt = forge(project, "workflow", "gantt", "last", "-o", "run.html")
        assert gantt.returncode == 0, gantt.stderr
        assert 'id="forge-data"' in (project / "run.html").read_text()


class TestDaemonCommands:
    @pytest.mark.slow
    def test_start_status_stop(self, project: Path) -> None:
        """start writes a PID file, status finds the daemon, stop ends it gracefully."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        started = forge(project, "daemon", "start", "--port", port)
        try:
            assert started.returncode == 0, started.stderr
            status = forge(project, "daemon", "status", "--json")
            assert json.loads(status.stdout)["running"] is True
        finally:
            stopped = forge(project, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr
        after = forge(project, "daemon", "status")
        assert after.returncode == 1
        assert "not running" in after.stdout
