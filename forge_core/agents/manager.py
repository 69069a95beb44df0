"""The agent manager: runs N long-lived agent processes through a Runtime and feeds them
tasks from a Queue, one at a time each.

It heartbeats each lease while its agent works, puts the task back when the agent crashes
and restarts it, checks health (alive, memory, CPU, an optional command), pauses and resumes
(SIGSTOP/SIGCONT), stops gracefully (stdin closed, SIGTERM, grace, SIGKILL of the group),
drains, and keeps a circuit breaker per task kind and a retry policy. Its agents' state is
written under ``$FORGE_HOME/agents/`` for ``forge agent list/stop/pause/resume/logs``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

from ..abc import ContainerSpec, Lease, Queue, Runtime
from ..exceptions import BackendUnavailable, ForgeError, LeaseLost
from . import state as agent_state
from ._process import AgentProcess
from .policy import BreakerConfig, CircuitBreaker, RetryPolicy

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

__all__ = ["AgentManager", "PoolConfig"]


@attrs.frozen(kw_only=True)
class PoolConfig:
    """One pool of identical agents (what ``forge agent start`` starts)."""

    command: tuple[str, ...] = attrs.field(converter=tuple)
    name: str = "agent"
    count: int = 1
    concurrency: int = 5
    """Most agents that may run at once; ``count`` is capped by it."""
    tags: tuple[str, ...] = ()
    kinds: tuple[str, ...] | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    workdir: str | None = None
    lease: float = 30.0
    poll: float = 0.5
    """Longest an idle agent blocks waiting for work before it re-checks breakers and drain;
    it wakes at once when work arrives (the queue's ``wait_for_work``)."""
    grace: float = 10.0
    silence_timeout: float | None = None
    """A busy agent that writes nothing for this long is deemed hung and restarted."""
    health_interval: float = 5.0
    health_command: tuple[str, ...] | None = None
    max_memory: int | None = None
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    breaker: BreakerConfig = attrs.field(factory=BreakerConfig)
    state_dir: Path | None = None


@attrs.define
class _Slot:
    name: str
    consumer: str
    proc: AgentProcess | None = None
    state: str = "starting"
    item: str | None = None
    paused: bool = False
    stopping: bool = False
    started_at: float = 0.0
    memory: int = 0
    cpu: float = 0.0
    counters: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(
        ("done", "failed", "crashes", "restarts", "lease_lost"), 0))


@attrs.define
class _Held:
    lease: Lease
    lost: bool = False


class AgentManager:
    """Runs one :class:`PoolConfig` against ``queue`` through ``runtime`` until drained."""

    def __init__(self, queue: Queue, runtime: Runtime, config: PoolConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.runtime = runtime
        self.config = config
        self.dir = agent_state.agents_dir(config.state_dir)
        host = socket.gethostname()
        count = max(1, min(config.count, config.concurrency))
        self.slots = [_Slot(name=f"{config.name}-{i}",
                            consumer=f"{host}:{os.getpid()}:{config.name}-{i}")
                      for i in range(count)]
        self.breakers: dict[str, CircuitBreaker] = {}
        self._draining = anyio.Event()
        self._clock = clock

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def drain(self) -> None:
        """Take no new tasks; finish the running ones, then stop every agent."""
        self._draining.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._watch)
            async with anyio.create_task_group() as tg:
                for slot in self.slots:
                    tg.start_soon(self._slot_loop, slot)
                task_status.started()
            outer.cancel_scope.cancel()
        self._write_states()

    # -- one agent ------------------------------------------------------------------------
    def _spec(self, slot: _Slot) -> ContainerSpec:
        env = {**self.config.env, "FORGE_AGENT_NAME": slot.name, "FORGE_AGENT_POOL":
               self.config.name}
        return ContainerSpec(command=self.config.command,
                             name=slot.name, env=env,
                             workdir=self.config.workdir, interactive=True,
                             log_path=self.dir / f"{slot.name}.log")

    async def _slot_loop(self, slot: _Slot) -> None:
        failures = 0
        try:
            while not (self._draining.is_set() or slot.stopping):
                if slot.proc is None and not await self._start(slot, failures):
                    failures += 1
                    continue
                if slot.paused:
                    await anyio.sleep(0.1)
                    continue
                lease = await self._reserve(slot)
                if lease is None:
                    continue
                if await self._work(slot, lease):
                    failures += 1
                    slot.counters["crashes"] += 1
                    await self._discard(slot)
                else:
                    failures = 0
        finally:
            with anyio.CancelScope(shield=True):
                if slot.proc is not None:
                    slot.state = "stopping"
                    await slot.proc.stop(self.config.grace)
                    slot.proc = None
                slot.state = "stopped"

    async def _start(self, slot: _Slot, failures: int) -> bool:
        if failures:
            await anyio.sleep(min(5.0, 0.1 * 2 ** (failures - 1)))
            slot.counters["restarts"] += 1
        try:
            slot.proc = await AgentProcess.start(self.runtime, self._spec(slot))
        except ForgeError as exc:
            log.error("cannot start agent %s: %s", slot.name, exc)
            slot.state = "failed"
            return False
        slot.state, slot.started_at, slot.paused = "idle", time.time(), False
        return True

    async def _discard(self, slot: _Slot) -> None:
        if slot.proc is not None:
            status = await slot.proc.kill()
            log.warning("agent %s ended (%s); restarting it", slot.name, status.describe())
            slot.proc = None

    async def _reserve(self, slot: _Slot) -> Lease | None:
        shut = [k for k, b in self.breakers.items() if not b.allows()]
        try:
            return await self.queue.reserve_wait(
                slot.consumer, self.config.lease, timeout=self.config.poll,
                kinds=self.config.kinds, tags=self.config.tags, exclude_kinds=shut)
        except BackendUnavailable as exc:
            log.warning("queue unavailable: %s", exc)
            await anyio.sleep(1.0)
            return None

    async def _work(self, slot: _Slot, lease: Lease) -> bool:
        """Hand ``lease`` to the agent and see it through; ``True`` if the agent must go."""
        assert slot.proc is not None
        slot.state, slot.item = "busy", lease.item.id
        held = _Held(lease)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, held)
                restart = await self._converse(slot, slot.proc, held)
                tg.cancel_scope.cancel()
        finally:
            slot.item = None
            slot.state = "paused" if slot.paused else "idle"
        return restart

    async def _heartbeat(self, held: _Held) -> None:
        every = max(0.05, self.config.lease / 3)
        while not held.lost:
            await anyio.sleep(every)
            try:
                held.lease = await self.queue.extend(held.lease, self.config.lease)
            except LeaseLost:
                log.warning("lost the lease on %s; its result will be refused", held.lease.item.id)
                held.lost = True
            except BackendUnavailable as exc:
                log.warning("cannot extend lease on %s: %s", held.lease.item.id, exc)

    async def _converse(self, slot: _Slot, proc: AgentProcess, held: _Held) -> bool:
        item = held.lease.item
        task = {"type": "task", "id": item.id, "kind": item.kind, "payload": item.payload,
                "checkpoint": item.checkpoint, "delivery": item.deliveries}
        sent = await proc.send(task)
        while True:
            try:
                msg = await proc.receive(self.config.silence_timeout) if sent else None
            except TimeoutError:
                await self._fail(slot, held, f"agent silent for {self.config.silence_timeout}s",
                                 retry=True)
                return True
            if msg is None:
                with anyio.move_on_after(self.config.grace):
                    status = await proc.wait()
                    await self._fail(slot, held, f"agent crashed: {status.describe()}", retry=True)
                    return True
                await self._fail(slot, held, "agent closed its output", retry=True)
                return True
            kind = msg.get("type")
            if kind == "result":
                await self._finish(slot, held, msg)
                return False
            if kind == "checkpoint":
                await self._guard(slot, self.queue.checkpoint(held.lease, msg.get("data")))
            elif kind in ("output", "log"):
                self._log(slot, f"{'stdout' if kind == 'output' else 'log'}: {msg.get('line')}")

    async def _finish(self, slot: _Slot, held: _Held, msg: Mapping[str, Any]) -> None:
        if msg.get("ok"):
            if await self._guard(slot, self.queue.ack(held.lease, msg.get("result"))):
                slot.counters["done"] += 1
                self._breaker(held.lease.item.kind).record(True)
            return
        error = str(msg.get("error") or "the agent reported a failure")
        await self._fail(slot, held, error, retry=msg.get("retry", True) is not False)

    async def _fail(self, slot: _Slot, held: _Held, error: str, *, retry: bool) -> None:
        slot.counters["failed"] += 1
        self._breaker(held.lease.item.kind).record(False)
        lease = held.lease
        self._log(slot, f"task {lease.item.id} failed: {error}")
        if retry and self.config.retry.retryable(error):
            retry_at = time.time() + self.config.retry.delay(lease.item.deliveries)
            await self._guard(slot, self.queue.nack(lease, error, retry_at=retry_at))
        else:
            await self._guard(slot, self.queue.nack(lease, error, final=True))

    async def _guard(self, slot: _Slot, call: Any) -> bool:
        try:
            await call
        except LeaseLost as exc:
            slot.counters["lease_lost"] += 1
            self._log(slot, f"refused: {exc}")
            return False
        except BackendUnavailable as exc:
            log.error("queue unavailable, the lease will expire and be reclaimed: %s", exc)
            return False
        return True

    def _breaker(self, kind: str) -> CircuitBreaker:
        return self.breakers.setdefault(kind, CircuitBreaker(self.config.breaker,
                                                                clock=self._clock))

    def _log(self, slot: _Slot, line: str) -> None:
        log.info("%s: %s", slot.name, line)
        try:
            with open(self.dir / f"{slot.name}.log", "a") as f:
                f.write(f"[forge {time.strftime('%H:%M:%S')}] {line}\n")
        except OSError:
            pass

    # -- control, health, visible state --------------------------------------------------------
    async def _watch(self) -> None:
        next_health = 0.0
        while True:
            for slot in self.slots:
                action = agent_state.take_request(self.dir, slot.name)
                if action:
                    await self.control(slot.name, action)
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + self.config.health_interval
                for slot in self.slots:
                    await self._check_health(slot)
            self._write_states()
            await anyio.sleep(0.2)

    async def control(self, name: str, action: str) -> None:
        """``stop`` (after its current task), ``pause`` or ``resume`` agent ``name``."""
        slot = next(s for s in self.slots if s.name == name)
        if action == "stop":
            slot.stopping = True
        if slot.proc is None:
            return
        if action == "pause" and not slot.paused:
            await slot.proc.signal(signal.SIGSTOP)
            slot.paused, slot.state = True, "paused"
        elif action in ("resume", "stop") and slot.paused:
            await slot.proc.signal(signal.SIGCONT)
            slot.paused = False
            slot.state = "busy" if slot.item else "idle"

    async def _check_health(self, slot: _Slot) -> None:
        proc = slot.proc
        if proc is None or slot.paused:
            return
        try:
            stats = await proc.stats()
        except ForgeError:
            return
        slot.memory, slot.cpu = stats.memory_bytes, stats.cpu_seconds
        reason = ""
        if self.config.max_memory and stats.memory_bytes > self.config.max_memory:
            reason = f"memory {stats.memory_bytes} over {self.config.max_memory} bytes"
        elif self.config.health_command:
            env = {**os.environ, "FORGE_AGENT_PID": str(proc.pid or "")}
            with anyio.move_on_after(self.config.health_interval) as scope:
                done = await anyio.run_process(self.config.health_command, check=False, env=env)
            if scope.cancelled_caught or done.returncode != 0:
                reason = "health command failed"
        if reason:
            self._log(slot, f"unhealthy ({reason}); killing it")
            await proc.signal(signal.SIGKILL)

    def _write_states(self) -> None:
        for slot in self.slots:
            proc = slot.proc
            agent_state.write_state(self.dir, slot.name, {
                "name": slot.name, "pool": self.config.name, "manager_pid": os.getpid(),
                "pid": proc.pid if proc else None, "state": slot.state, "item": slot.item,
                "started_at": slot.started_at, "memory": slot.memory, "cpu": slot.cpu,
                "command": list(self.config.command), "tags": list(self.config.tags),
                "log": str(self.dir / f"{slot.name}.log"), "updated_at": time.time(),
                **slot.counters})
