"""The ``queue`` executor: hands a workflow's tasks to long-lived agents through any Queue.

Each attempt becomes one queue item (idempotency key ``run/task/attempt``, so a resumed
engine never enqueues an attempt twice) whose payload is the resolved command; the built-in
agent ``python -m forge_core.agents.command_agent`` runs it and the result comes back as the
same :class:`Outcome` a local run would give.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import anyio

from ..abc import Executor, NewItem, Outcome, Queue, QueueItem, Runtime, TaskRun
from ..exceptions import ConfigError

__all__ = ["QueueExecutor", "payload_for"]

def payload_for(run: TaskRun) -> dict[str, Any]:
    """The JSON payload the command agent understands for ``run``."""
    payload: dict[str, Any] = {
        "run_id": run.run_id, "task": run.task, "attempt": run.attempt,
        "inputs": dict(run.inputs), "timeout": run.timeout, "grace": run.grace,
        "skip_exit_codes": list(run.skip_exit_codes),
        "log_path": str(run.log_path) if run.log_path else None,
    }
    if run.container is not None:
        spec = run.container
        payload.update(command=list(spec.command), env=dict(spec.env),
                       inherit_env=spec.inherit_env, workdir=spec.workdir)
    elif run.python is not None:
        payload["python"] = run.python
    else:
        raise ConfigError(f"task {run.task}: nothing to run (no command and no python target)")
    return payload


def outcome_from(item: QueueItem, skip_exit_codes: tuple[int, ...]) -> Outcome:
    """The :class:`Outcome` a finished queue item stands for."""
    if item.state == "cancelled":
        return Outcome(status="cancelled", error="cancelled on the queue")
    if item.state == "dead":
        return Outcome(status="failed", error=f"dead-lettered: {item.last_error or 'no result'}",
                       finished_at=item.finished_at or time.time())
    result: Mapping[str, Any] = item.result if isinstance(item.result, dict) else {}
    code = result.get("exit_code")
    times: dict[str, Any] = {"started_at": float(result.get("started_at") or item.created_at),
             "finished_at": float(result.get("finished_at") or item.finished_at or time.time())}
    outputs = dict(result.get("outputs") or {})
    if result.get("timed_out"):
        return Outcome(status="timed_out", exit_code=code, error="timed out", **times)
    if result.get("ok") is False or (code is None and result.get("signal") is None):
        return Outcome(status="failed", error=str(result.get("error") or "no result"), **times)
    if code is None:
        return Outcome(status="failed", error=f"killed by signal {result.get('signal')}", **times)
    if code == 0:
        return Outcome(status="succeeded", exit_code=0, outputs=outputs, **times)
    if code in skip_exit_codes:
        return Outcome(status="skipped", exit_code=code, outputs=outputs, **times)
    return Outcome(status="failed", exit_code=code, error=f"exit code {code}", outputs=outputs,
                   **times)


class QueueExecutor(Executor):
    """Puts each attempt on ``queue`` and waits for an agent's result (see module docs)."""

    name: ClassVar[str] = "queue"

    def __init__(self, *, concurrency: int = 4, runtime: Runtime | None = None,
                 queue: Queue | None = None, priority: int = 3) -> None:
        if queue is None:
            raise ConfigError("the queue executor needs a queue (e.g. --queue sqlite:///path)")
        super().__init__(concurrency=concurrency, runtime=runtime, queue=queue)
        self._queue = queue
        self._priority = priority

    async def execute(self, run: TaskRun) -> Outcome:
        item = NewItem(kind=run.kind, payload=payload_for(run), priority=self._priority,
                       key=f"{run.run_id}/{run.task}/{run.attempt}")
        item_id = await self._queue.put(item)
        try:
            return outcome_from(await self._wait(item_id), run.skip_exit_codes)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._queue.cancel(item_id)
            raise

    async def _wait(self, item_id: str) -> QueueItem:
        while True:
            item = await self._queue.wait(item_id, timeout=3600)
            if item.state in ("done", "dead", "cancelled"):
                return item
