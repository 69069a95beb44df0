"""docs/agents.md runs as written: its example agents (Python and shell) and its CLI
walkthrough, for real, on the sqlite queue and on a real redis-server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from helpers import PY

from forge_core.queue import open_queue

DOC = Path(__file__).resolve().parent.parent / "docs" / "agents.md"


def doc_files() -> dict[str, str]:
    """Every fenced block of the doc whose first line is ``# file: NAME``, by NAME."""
    blocks = re.findall(r"```\w*\n# file: (\S+)\n(.*?)```", DOC.read_text(), re.S)
    return {name: body for name, body in blocks}


def forge_on_path(tmp_path: Path) -> str:
    """A PATH whose ``forge`` runs this interpreter's Forge."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    forge = bin_dir / "forge"
    forge.write_text(f'#!/bin/sh\nexec {PY} -c "from forge_core.cli import main; main()" "$@"\n')
    forge.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.skipif(shutil.which("jq") is None, reason="the doc's examples use jq")
class TestAgentsDoc:
    def test_the_doc_has_both_agents_and_the_walkthrough(self) -> None:
        """The page carries a Python agent, a shell agent and a walkthrough script."""
        assert set(doc_files()) == {"shout_agent.py", "count_agent.sh", "walkthrough.sh"}

    def test_walkthrough_runs_as_written(self, tmp_path: Path, queue_url: str) -> None:
        """The walkthrough submits 1,003 tasks, both agents serve them, the bad one is
        dead-lettered with the agent's error, and the drain ends every agent."""
        work = tmp_path / "work"
        work.mkdir()
        for name, body in doc_files().items():
            (work / name).write_text(body)
        env = {**os.environ, "PATH": forge_on_path(tmp_path), "FORGE_QUEUE": queue_url,
               "FORGE_HOME": str(tmp_path / "home")}
        done = subprocess.run(["bash", "-e", "walkthrough.sh"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=100, check=False)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert "submitted 1000 tasks" in lines
        assert "3" in lines  # the shell agent counted three words
        assert any("dead" in line and "no text in payload" in line for line in lines)

        async def check() -> None:
            queue = open_queue(queue_url)
            stats = await queue.stats()
            assert dict(stats.by_state) == {"done": 1002, "dead": 1}
            shouted = await queue.list(state="done", kind="shout", limit=2000)
            assert {i.result["text"] for i in shouted} == {"HELLO"} | {
                f"TASK {n}" for n in range(1, 1001)}
            assert {i.result["by"] for i in shouted} <= {"shouter-0", "shouter-1"}
            await queue.aclose()

        anyio.run(check)
        logs = (tmp_path / "home" / "agents").glob("shouter-*.log")
        assert any("shouts task" in p.read_text() for p in logs)
