"""Hooks: commands and webhooks get the redacted payload, and failures come back as results."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from forge_core.hooks import run_hook
from forge_core.secrets import MASK, Redactor
from forge_core.spec import HookSpec, TaskSpec, WorkflowSpec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

SECRET = "s3cr3t-token-value"
PAYLOAD = {"run_id": "r1", "task": "load", "error": f"bad password {SECRET}"}


def workflow(**hooks: HookSpec) -> WorkflowSpec:
    return WorkflowSpec(name="etl", tasks=(TaskSpec(name="load", command="true"),), hooks=hooks)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each POST and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class TestRunHook:
    redactor = Redactor([SECRET])

    async def test_command_gets_payload_on_stdin_and_env(self, tmp_path: Path) -> None:
        """A command hook reads the redacted JSON payload and FORGE_* variables."""
        out = tmp_path / "got.json"
        script = ("import json,os,sys; d=json.load(sys.stdin); "
                  "ks=('FORGE_HOOK_EVENT','FORGE_RUN_ID','FORGE_TASK');"
                  "d['env']=[os.environ[k] for k in ks];"
                  f"open({str(out)!r},'w').write(json.dumps(d))")
        spec = workflow(notify=HookSpec(command=(sys.executable, "-c", script)))
        result = await run_hook("notify", spec, "task.failed", PAYLOAD, redactor=self.redactor)
        assert result.ok, result.detail
        got = json.loads(out.read_text())
        assert got["error"] == f"bad password {MASK}"
        assert got["env"] == ["task.failed", "r1", "load"]
        assert SECRET not in out.read_text()

    async def test_undefined_name_is_a_command_line(self, tmp_path: Path) -> None:
        """A reference that is not a defined hook runs as a command line without a shell."""
        marker = tmp_path / "marker"
        result = await run_hook(f"touch {marker}", workflow(), "task.succeeded", PAYLOAD,
                                redactor=self.redactor)
        assert result.ok
        assert marker.exists()

    async def test_shell_hook_runs_a_shell_line(self, tmp_path: Path) -> None:
        """With ``shell: true`` the command is a shell line."""
        spec = workflow(sh=HookSpec(command="echo $FORGE_HOOK_EVENT > ev.txt", shell=True))
        result = await run_hook("sh", spec, "task.retrying", PAYLOAD, redactor=self.redactor,
                                workdir=tmp_path)
        assert result.ok
        assert (tmp_path / "ev.txt").read_text().strip() == "task.retrying"

    async def test_failing_command_is_a_result_not_an_exception(self) -> None:
        """A non-zero exit comes back as ok=False with its redacted output."""
        spec = workflow(bad=HookSpec(command=(sys.executable, "-c",
                                              f"print('leak {SECRET}'); raise SystemExit(3)")))
        result = await run_hook("bad", spec, "task.failed", PAYLOAD, redactor=self.redactor)
        assert not result.ok
        assert "exit 3" in result.detail
        assert SECRET not in result.detail

    async def test_missing_program_and_timeout_fail_softly(self) -> None:
        """An absent program and a hook past its timeout both return ok=False."""
        spec = workflow(slow=HookSpec(command="sleep 30", timeout=0.3))
        missing = await run_hook("no-such-program-forge", spec, "e", {}, redactor=self.redactor)
        slow = await run_hook("slow", spec, "e", {}, redactor=self.redactor)
        assert (missing.ok, slow.ok) == (False, False)
        assert "timed out" in slow.detail

    async def test_webhook_posts_redacted_json(self, receiver: Receiver) -> None:
        """A real local HTTP server receives the JSON body and the hook's headers."""
        spec = workflow(web=HookSpec(webhook=receiver.url, headers={"X-Team": "data"}))
        result = await run_hook("web", spec, "sla.missed", PAYLOAD, redactor=self.redactor)
        assert result.ok, result.detail
        ((headers, body),) = receiver.requests
        assert headers["X-Team"] == "data"
        assert body["event"] == "sla.missed"
        assert body["workflow"] == "etl"
        assert body["error"] == f"bad password {MASK}"

    async def test_webhook_errors_are_results(self) -> None:
        """An HTTP 500 and a closed port both come back as ok=False."""
        failing = Receiver(status=500)
        try:
            spec = workflow(a=HookSpec(webhook=failing.url),
                            b=HookSpec(webhook="http://127.0.0.1:1/"))
            server_error = await run_hook("a", spec, "e", {}, redactor=self.redactor)
            refused = await run_hook("b", spec, "e", {}, redactor=self.redactor)
        finally:
            failing.close()
        assert "HTTP 500" in server_error.detail
        assert not server_error.ok
        assert not refused.ok
