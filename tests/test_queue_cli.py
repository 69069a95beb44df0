"""`forge task submit` from JSONL: thousands of tasks at once through put_many, all or
nothing, on the sqlite queue and on a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PY = sys.executable
FORGE = [PY, "-c", "from forge_core.cli import main; main()"]


def forge(url: str, tmp_path: Path, *args: str, stdin: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FORGE_HOME": str(tmp_path / "home"), "FORGE_QUEUE": url}
    return subprocess.run([*FORGE, *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=100, check=False)


class TestSubmitMany:
    def test_thousands_from_stdin_once_each(self, queue_url: str, tmp_path: Path) -> None:
        """5,000 JSONL tasks from stdin are all stored; submitting them again with their
        idempotency keys adds none."""
        lines = "".join(json.dumps({"kind": "k", "payload": {"n": n}, "key": f"job-{n}",
                                    "priority": 1 + n % 5}) + "\n" for n in range(5000))
        first = forge(queue_url, tmp_path, "task", "submit", "--file", "-", stdin=lines)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "submitted 5000 tasks"
        again = forge(queue_url, tmp_path, "task", "submit", "--file", "-", "--json",
                      stdin=lines)
        assert again.returncode == 0, again.stderr
        assert len(set(json.loads(again.stdout))) == 5000
        stats = json.loads(forge(queue_url, tmp_path, "queue", "stats", "--json").stdout)
        assert stats["by_state"] == {"pending": 5000}
        assert stats["pending_by_priority"] == {str(p): 1000 for p in range(1, 6)}

    def test_a_bad_line_submits_nothing(self, queue_url: str, tmp_path: Path) -> None:
        """A file with one line that is not JSON is refused whole, naming the line."""
        lines = '{"kind": "k"}\n{"kind": "k"}\nnot json\n'
        bad = forge(queue_url, tmp_path, "task", "submit", "--file", "-", stdin=lines)
        assert bad.returncode == 2
        assert "-:3: not JSON" in bad.stderr
        stats = json.loads(forge(queue_url, tmp_path, "queue", "stats", "--json").stdout)
        assert stats["by_state"] == {}


class TestAgentLogs:
    def test_an_agent_that_wrote_nothing_has_an_empty_log(self, tmp_path: Path) -> None:
        """A known agent without a log file (it wrote nothing, so it has none) prints
        nothing; an unknown one is a clear error."""
        from forge_core.agents.state import write_state

        folder = tmp_path / "agents"
        write_state(folder, "quiet-0", {"name": "quiet-0", "state": "stopped"})
        quiet = forge("sqlite://", tmp_path, "agent", "logs", "quiet-0",
                      "--state-dir", str(folder))
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
        (folder / "talks-0.log").write_text("one\ntwo\n")
        write_state(folder, "talks-0", {"name": "talks-0", "state": "stopped"})
        talks = forge("sqlite://", tmp_path, "agent", "logs", "talks-0", "-n", "1",
                      "--state-dir", str(folder))
        assert talks.stdout == "two\n"
        unknown = forge("sqlite://", tmp_path, "agent", "logs", "nobody",
                        "--state-dir", str(folder))
        assert unknown.returncode != 0
        assert "no log for agent 'nobody'" in unknown.stderr
        assert "Traceback" not in unknown.stderr
