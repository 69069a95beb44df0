"""The built-in agent for the ``queue`` executor: ``python -m forge_core.agents.command_agent``.

It speaks the agent contract (docs/agents.md): a task per stdin line whose payload names a
command (argv, env, workdir, timeout, grace, skip codes) or a Python callable; it runs it in
its own process group, heartbeats while it runs, stops it on timeout (SIGTERM, grace,
SIGKILL), and answers with exit code, outputs (``$FORGE_OUTPUT``) and timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main", "parse_outputs", "run_task"]

HEARTBEAT = 2.0

_CALL = """
import importlib, importlib.util, json, os, sys
target, _, name = sys.argv[1].rpartition(":")
if target.endswith(".py"):
    spec = importlib.util.spec_from_file_location("forge_task", target)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
else:
    mod = importlib.import_module(target)
fn = mod
for part in name.split("."):
    fn = getattr(fn, part)
value = fn(**json.loads(os.environ.get("FORGE_INPUTS") or "{}"))
if isinstance(value, dict):
    with open(os.environ["FORGE_OUTPUT"], "w") as f:
        json.dump(value, f)
"""


def parse_outputs(text: str) -> dict[str, Any]:
    """Outputs a task wrote: a JSON object, or ``key=value`` lines."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, _, v in pairs}


def _argv(payload: dict[str, Any]) -> list[str]:
    if payload.get("python"):
        return [sys.executable, "-c", _CALL, str(payload["python"])]
    command = payload.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise ValueError("payload.command must be a non-empty list of strings")
    return command


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_task(payload: dict[str, Any], out: TextIO) -> dict[str, Any]:
    """Run one command task, writing heartbeats to ``out``; return the result record."""
    argv = _argv(payload)
    env = dict(os.environ) if payload.get("inherit_env", True) else {}
    env.update({str(k): str(v) for k, v in (payload.get("env") or {}).items()})
    env["FORGE_INPUTS"] = json.dumps(payload.get("inputs") or {})
    timeout = payload.get("timeout")
    grace = float(payload.get("grace", 10.0))
    log_path = payload.get("log_path")
    with tempfile.TemporaryDirectory(prefix="forge-agent-") as tmp:
        output = Path(tmp) / "output"
        env["FORGE_OUTPUT"] = str(output)
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        started = time.time()
        try:
            proc = subprocess.Popen(argv, env=env, cwd=payload.get("workdir"),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        except OSError as exc:
            return {"exit_code": 127, "error": f"cannot start {argv[0]}: {exc.strerror}",
                    "started_at": started, "finished_at": time.time(), "outputs": {},
                    "timed_out": False}
        finally:
            if log_path and log != subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        timed_out = False
        deadline = None if timeout is None else started + float(timeout)
        while True:
            left = HEARTBEAT if deadline is None else min(HEARTBEAT, deadline - time.time())
            try:
                proc.wait(timeout=max(0.0, left))
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.time() >= deadline:
                    timed_out = True
                    _stop(proc, grace)
                    break
                out.write('{"type":"heartbeat"}\n')
                out.flush()
        code = proc.returncode
        outputs = parse_outputs(output.read_text()) if output.exists() else {}
    return {"exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None,
            "timed_out": timed_out, "outputs": outputs, "started_at": started,
            "finished_at": time.time(), "error": ""}


def main() -> None:
    """Serve tasks from stdin until it closes or SIGTERM arrives."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        try:
            result = run_task(dict(task.get("payload") or {}), out)
            reply: dict[str, Any] = {"type": "result", "id": task.get("id"), "ok": True,
                                     "result": result}
        except (ValueError, TypeError) as exc:
            reply = {"type": "result", "id": task.get("id"), "ok": False, "error": str(exc),
                     "retry": False}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
