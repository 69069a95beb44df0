"""A hook call is committed with the state it is about and stays in the store's outbox until
it is recorded as sent: a Forge killed mid-call loses nothing, and whoever takes the run next
(``forge workflow resume``, or a daemon reclaiming a finished run) makes the call again.

Real processes throughout: ``forge run`` is SIGKILLed while a real local webhook server holds
its first request unanswered."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import FORGE, wait_for

from forge_core.config import load_project
from forge_core.daemon import Daemon, DaemonOptions
from forge_core.state import StateStore


class Webhook(BaseHTTPRequestHandler):
    """Records every POST; holds the first one unanswered until ``release`` is set."""

    bodies: list[dict[str, Any]] = []
    release = threading.Event()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Webhook.bodies.append(body)
        if len(Webhook.bodies) == 1:
            Webhook.release.wait(60)
        try:
            self.send_response(204)
            self.end_headers()
        except OSError:  # the caller was killed meanwhile
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Webhook.bodies = []
    Webhook.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    Webhook.release.set()
    server.shutdown()
    server.server_close()


def killed_mid_call(tmp_path: Path, url: str) -> tuple[dict[str, str], str]:
    """Run a workflow whose failing task calls the webhook; SIGKILL ``forge run`` once the run
    has finished and while the server holds that call. Returns the environment and the run
    id."""
    (tmp_path / "forge.yml").write_text(textwrap.dedent(f"""
        hooks:
          notify: {{webhook: "{url}", timeout: 60}}
        workflows:
          w:
            tasks:
              - name: bad
                command: "false"
                on_failure: notify
    """))
    env = {**os.environ, "FORGE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([*FORGE, "run", "w"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: Webhook.bodies, what="the webhook call")
        wait_for(lambda: run_state(tmp_path / "home") == "failed", what="the run to finish")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    Webhook.release.set()
    with StateStore(tmp_path / "home" / "state.db") as store:
        (run,) = store.list_runs("w")
        (pending,) = store.pending_hooks()
        assert (pending.run_id, pending.ref, pending.event) == (run.run_id, "notify", "on_failure")
        assert pending.payload["task"] == "bad"
        assert not [e for e in store.events(run.run_id) if e.kind.startswith("hook.")]
    return env, run.run_id


def run_state(home: Path) -> str | None:
    with closing(sqlite3.connect(home / "state.db")) as db:
        row = db.execute("SELECT state FROM runs").fetchone()
    return row[0] if row else None


def sent(home: Path, run_id: str) -> list[str]:
    with StateStore(home / "state.db") as store:
        assert store.pending_hooks() == []
        return [e.kind for e in store.events(run_id) if e.kind.startswith("hook.")]


class TestHookOutbox:
    def test_resume_makes_the_call_a_killed_forge_left_unanswered(
        self, tmp_path: Path, webhook: str
    ) -> None:
        env, run_id = killed_mid_call(tmp_path, webhook)
        pruned = subprocess.run([*FORGE, "system", "prune", "--keep", "0"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert pruned.returncode == 0, pruned.stderr
        assert run_state(tmp_path / "home") == "failed"  # kept: its call is not made yet
        result = subprocess.run([*FORGE, "workflow", "resume", run_id, "--json"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr  # the run itself failed
        assert len(Webhook.bodies) == 2
        assert Webhook.bodies[1] == Webhook.bodies[0]
        assert Webhook.bodies[1]["event"] == "on_failure"
        assert sent(tmp_path / "home", run_id) == ["hook.succeeded"]

    def test_a_daemon_makes_the_call_for_a_finished_run(
        self, tmp_path: Path, webhook: str
    ) -> None:
        _env, run_id = killed_mid_call(tmp_path, webhook)
        project = load_project(tmp_path / "forge.yml")
        store = StateStore(tmp_path / "home" / "state.db")

        async def main() -> None:
            daemon = Daemon(project=project, home=tmp_path / "home", store=store,
                            options=DaemonOptions(http=False, tick=3600, reclaim_every=3600))
            async with anyio.create_task_group() as tg:
                await tg.start(lambda task_status: daemon.serve(task_status=task_status,
                                                                handle_signals=False))
                with anyio.fail_after(60):
                    while len(Webhook.bodies) < 2 or daemon.driving:
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()

        try:
            anyio.run(main)
            assert store.get_run(run_id).state == "failed"  # delivered, not run again
        finally:
            store.close()
        assert Webhook.bodies[1] == Webhook.bodies[0]
        assert sent(tmp_path / "home", run_id) == ["hook.succeeded"]
