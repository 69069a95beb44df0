"""Notification hooks: run a command or POST a JSON webhook when a task fails, succeeds,
retries or misses its SLA. A hook never raises and never fails the run: it returns a
:class:`HookResult` the engine records (``hook.succeeded`` / ``hook.failed``).

A reference names a hook in the workflow's ``hooks:``; anything else is a command line run
without a shell (split with :mod:`shlex`). The payload (redacted) goes to a command as JSON on
stdin, with ``FORGE_HOOK_EVENT``, ``FORGE_WORKFLOW``, ``FORGE_RUN_ID`` and ``FORGE_TASK`` in its
environment, and to a webhook as the JSON request body.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.abc import Process

from .secrets import Redactor
from .spec import HookSpec, WorkflowSpec

__all__ = ["HookResult", "hook_argv", "hook_spec", "run_hook"]

log = logging.getLogger(__name__)

_OUTPUT_LIMIT = 2000


@attrs.frozen(kw_only=True)
class HookResult:
    """How one hook call ended; ``detail`` is one redacted line for the event log."""

    ok: bool
    detail: str = ""


def hook_spec(ref: str, spec: WorkflowSpec) -> HookSpec:
    """The workflow's hook named ``ref``, or ``ref`` taken as a command line."""
    return spec.hooks.get(ref) or HookSpec(command=ref)


async def run_hook(
    ref: str,
    spec: WorkflowSpec,
    event: str,
    payload: Mapping[str, Any],
    *,
    redactor: Redactor,
    workdir: Path | None = None,
) -> HookResult:
    """Run the hook ``ref`` for ``event``; every failure becomes ``HookResult(ok=False)``."""
    hook = hook_spec(ref, spec)
    body = redactor.redact_obj({"event": event, "workflow": spec.name, **payload})
    results: list[HookResult] = []
    try:
        if hook.command:
            results.append(await _run_command(hook, event, body, workdir))
        if hook.webhook:
            results.append(await _post(hook, body))
    except Exception as exc:  # a hook must never break the run
        log.exception("hook %r crashed", ref)
        results.append(HookResult(ok=False, detail=f"{type(exc).__name__}: {exc}"))
    if not results:
        results.append(HookResult(ok=False, detail="hook has neither command nor webhook"))
    ok = all(r.ok for r in results)
    detail = redactor.redact("; ".join(r.detail for r in results if r.detail))
    return HookResult(ok=ok, detail=f"hook {ref!r}: {detail}" if detail else f"hook {ref!r}")


def hook_argv(hook: HookSpec) -> list[str]:
    """The argv a command hook runs (``ValueError`` for a command line shlex cannot split)."""
    command = hook.command or ""
    if hook.shell:
        line = command if isinstance(command, str) else shlex.join(command)
        return ["/bin/sh", "-c", line]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _env(event: str, body: Mapping[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env["FORGE_HOOK_EVENT"] = event
    for var, key in (("FORGE_WORKFLOW", "workflow"), ("FORGE_RUN_ID", "run_id"),
                     ("FORGE_TASK", "task")):
        if body.get(key) is not None:
            env[var] = str(body[key])
    return env


async def _run_command(
    hook: HookSpec, event: str, body: Mapping[str, Any], workdir: Path | None
) -> HookResult:
    argv = hook_argv(hook)
    if not argv:
        return HookResult(ok=False, detail="empty hook command")
    data = json.dumps(body, default=str).encode()
    try:
        process = await anyio.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=workdir, env=_env(event, body), start_new_session=True,
        )
    except OSError as exc:
        return HookResult(ok=False, detail=f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    output = bytearray()
    async with process:
        with anyio.move_on_after(hook.timeout) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_feed, process, data)
                tg.start_soon(_drain, process, output)
            await process.wait()
        if scope.cancelled_caught:
            _kill_group(process.pid)
            with anyio.CancelScope(shield=True):
                await process.wait()
            return HookResult(ok=False, detail=f"timed out after {hook.timeout:g}s")
    text = output[:_OUTPUT_LIMIT].decode("utf-8", "replace").strip().replace("\n", " | ")
    if process.returncode == 0:
        return HookResult(ok=True, detail=text)
    return HookResult(ok=False, detail=f"exit {process.returncode}" + (f": {text}" if text else ""))


async def _feed(process: Process, data: bytes) -> None:
    assert process.stdin is not None
    try:
        await process.stdin.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # the hook need not read its payload
    finally:
        await process.stdin.aclose()


async def _drain(process: Process, output: bytearray) -> None:
    assert process.stdout is not None
    async for chunk in process.stdout:
        if len(output) < _OUTPUT_LIMIT:
            output.extend(chunk)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


async def _post(hook: HookSpec, body: Mapping[str, Any]) -> HookResult:
    url = hook.webhook or ""
    if not url.startswith(("http://", "https://")):
        return HookResult(ok=False, detail=f"webhook URL must be http(s): {url!r}")
    data = json.dumps(body, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "forge-hook/1",
               **dict(hook.headers)}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310

    def send() -> HookResult:
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout) as response:  # noqa: S310
                return HookResult(ok=True, detail=f"webhook HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            return HookResult(ok=False, detail=f"webhook HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return HookResult(ok=False, detail=f"webhook {url} unreachable: {reason}")

    return await anyio.to_thread.run_sync(send)
