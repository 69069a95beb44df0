"""Secrets never reach a task's log file: masked on their way to disk, while the task runs and
after the engine is SIGKILLed; without secrets the task writes its log file directly."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import FORGE, PY, wait_for

from forge_core.events import Event, EventBus
from forge_core.runner import run_workflow
from forge_core.spec import SecretSpec, TaskSpec, WorkflowSpec
from forge_core.state import StateStore

pytestmark = pytest.mark.anyio

SECRET = 'tok-"Zq8\\secret-value-91'
FORMS = (SECRET, json.dumps(SECRET)[1:-1], base64.b64encode(SECRET.encode()).decode())

LEAK = """
import base64, json, os, sys, time
s = os.environ["API_TOKEN"]
print("raw", s, flush=True)
print(json.dumps({"t": s}), flush=True)
print(base64.b64encode(s.encode()).decode(), flush=True)
sys.stdout.write("split " + s[:6]); sys.stdout.flush(); time.sleep(0.2)
sys.stdout.write(s[6:] + "\\n"); sys.stdout.flush()
print("err", s, file=sys.stderr, flush=True)
print("waiting", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("done", flush=True)
"""


def assert_masked(log: Path, masks: int) -> None:
    text = log.read_text()
    assert not [form for form in FORMS if form in text], text
    assert text.count("***") >= masks, text


def log_of(home: Path, task: str, attempt: int) -> Path | None:
    found = list((home / "logs").glob(f"*/{task}.{attempt}.log"))
    return found[0] if found else None


class TestSecretsNeverReachTheDisk:
    def test_a_killed_engine_leaves_only_masks_on_disk(self, tmp_path: Path) -> None:
        """While the task sleeps, and after SIGKILL of `forge run`, its log holds the masks
        of every form of the secret (one split across two writes) but never the secret; the
        resumed run masks its new attempt too and leaves no pipe behind."""
        gate = tmp_path / "gate"
        (tmp_path / "leak.py").write_text(LEAK)
        (tmp_path / "forge.yml").write_text(textwrap.dedent(f"""
            workflows:
              w:
                secrets:
                  API_TOKEN: {{env: FORGE_TEST_SECRET}}
                tasks:
                  - name: leak
                    command: {PY} leak.py {gate}
        """))
        home = tmp_path / "home"
        env = {**os.environ, "FORGE_HOME": str(home), "FORGE_TEST_SECRET": SECRET}
        proc = subprocess.Popen([*FORGE, "run", "w"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            log = wait_for(lambda: log_of(home, "leak", 1))
            wait_for(lambda: "waiting" in log.read_text())
            assert_masked(log, masks=5)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert_masked(log, masks=5)
        gate.touch()
        run_id = json.loads(subprocess.run(
            [*FORGE, "workflow", "history", "--json"], cwd=tmp_path, env=env,
            capture_output=True, text=True, check=True).stdout)[0]["run_id"]
        resumed = subprocess.run([*FORGE, "workflow", "resume", run_id], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
        assert resumed.returncode == 0, resumed.stderr
        second = log_of(home, "leak", 2)
        assert second is not None
        assert "done" in second.read_text()
        assert_masked(second, masks=5)
        assert list((home / "pipes").iterdir()) == []  # the killed engine's FIFOs are gone too

    async def test_python_task_tracebacks_are_masked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A thread-executor Python task whose exception names the secret leaves a masked
        traceback in its log and a masked error in its event."""
        def boom() -> None:
            raise RuntimeError(f"cannot log in with {os.environ['FORGE_TEST_SECRET']}")

        monkeypatch.setenv("FORGE_TEST_SECRET", SECRET)
        spec = WorkflowSpec(name="py", executor="thread",
                            secrets={"API_TOKEN": SecretSpec(env="FORGE_TEST_SECRET")},
                            tasks=(TaskSpec(name="boom", func=boom, python="tests:boom"),))
        events: list[Event] = []
        bus = EventBus()
        bus.subscribe(events.append)
        store = StateStore(tmp_path / "home" / "state.db")
        record = await run_workflow(spec, store=store, home=tmp_path / "home", bus=bus)
        assert record.state == "failed"
        log = log_of(tmp_path / "home", "boom", 1)
        assert log is not None
        assert "RuntimeError: cannot log in with ***" in log.read_text()
        assert_masked(log, masks=1)
        failed = next(e for e in events if e.kind == "task.failed")
        assert failed.data["error"] == "RuntimeError: cannot log in with ***"


class TestLogPath:
    @pytest.mark.parametrize(("secrets", "kind"), [(False, "file"), (True, "pipe")])
    async def test_output_goes_to_the_file_directly_unless_there_are_secrets(
        self, tmp_path: Path, secrets: bool, kind: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A task's stdout is the log file itself without secrets, and a pipe with them."""
        monkeypatch.setenv("FORGE_TEST_SECRET", SECRET)
        code = ("import os, stat; m = os.fstat(1).st_mode;"
                " print('file' if stat.S_ISREG(m) else 'pipe' if stat.S_ISFIFO(m) else m)")
        spec = WorkflowSpec(
            name="direct", tasks=(TaskSpec(name="t", command=(PY, "-c", code)),),
            secrets={"API_TOKEN": SecretSpec(env="FORGE_TEST_SECRET")} if secrets else {})
        store = StateStore(tmp_path / "home" / "state.db")
        record = await run_workflow(spec, store=store, home=tmp_path / "home")
        assert record.state == "succeeded"
        log = log_of(tmp_path / "home", "t", 1)
        assert log is not None
        assert log.read_text() == f"{kind}\n"
