"""Workflows through the queue to long-lived agents: real `forge agent start` processes and
a real SQLite queue file (agents killed mid-task: tests/test_agents_faults.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FORGE, PY


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FORGE_HOME": str(tmp_path / "home"),
            "FORGE_QUEUE": f"sqlite:///{tmp_path / 'home' / 'queue.db'}"}


@pytest.fixture
def agents(tmp_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Two command agents managed by `forge agent start`, stopped (and drained) afterwards."""
    (tmp_path / "home").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [*FORGE, "agent", "start", "--count", "2", "--",
         PY, "-m", "forge_core.agents.command_agent"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    yield proc
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def forge(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FORGE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


class TestQueueExecutor:
    def test_a_workflow_runs_through_agents_with_local_semantics(
        self, tmp_path: Path, env: dict[str, str], agents: subprocess.Popen[bytes]
    ) -> None:
        """Outputs flow downstream, a skip code skips, a failure retries then fails — as local."""
        (tmp_path / "forge.yml").write_text(textwrap.dedent("""
            workflows:
              q:
                executor: queue
                tasks:
                  - name: produce
                    command: ["python3", "-c", "import os; open(os.environ['FORGE_OUTPUT'],'w').write('n=5')"]
                  - name: consume
                    command:
                      - python3
                      - -c
                      - "import sys; sys.exit(0 if sys.argv[1] == '5' else 1)"
                      - ${{ tasks.produce.outputs.n }}
                    depends_on: [produce]
                  - name: maybe
                    command: ["python3", "-c", "import sys; sys.exit(42)"]
                    skip_exit_code: 42
                  - name: broken
                    command: ["false"]
                    retries: 1
                    retry_delay: 0
        """))
        env = {**env, "PATH": f"{Path(PY).parent}:{env['PATH']}"}
        result = forge("run", "q", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 1, result.stderr
        tasks = {t["name"]: t for t in json.loads(result.stdout)["tasks"]}
        assert tasks["produce"]["state"] == "succeeded"
        assert tasks["produce"]["outputs"] == {"n": "5"}
        assert tasks["consume"]["state"] == "succeeded"
        assert tasks["maybe"]["state"] == "skipped"
        assert [a["exit_code"] for a in tasks["broken"]["attempts"]] == [1, 1]
