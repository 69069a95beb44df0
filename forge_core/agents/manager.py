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
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc

from ..abc import ContainerSpec, Lease, Queue, Runtime
from ..exceptions import BackendUnavailable, ForgeError, LeaseLost
from . import state as agent_state
from ._pool import PoolConfig, _Held, _Slot
from ._process import AgentProcess
from .policy import CircuitBreaker

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

__all__ = ["AgentManager", "PoolConfig"]


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
                    tg.start_soon(self._supervise, slot)
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

    async def _supervise(self, slot: _Slot) -> None:
        """Run the slot; an unexpected error (a bug, an unmapped backend error) is logged with
        its traceback in the agent's log and the slot starts over, so the pool keeps going."""
        while True:
            try:
                await self._slot_loop(slot)
                return
            except Exception:
                log.exception("agent %s failed; starting it over", slot.name)
                self._log(slot, f"internal error, starting over:\n{traceback.format_exc()}")
                await anyio.sleep(1.0)

    async def _slot_loop(self, slot: _Slot) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, slot)
                tg.start_soon(self._sync_loop, slot)
                await self._serve(slot)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if slot.proc is not None:
                    slot.state = "stopping"
                    await slot.proc.stop(self.config.grace)
                    slot.proc = None
                slot.state = "stopped"

    async def _serve(self, slot: _Slot) -> None:
        """Feed the slot's agent until drain or stop: tasks leased ahead first, then new ones."""
        failures = 0
        lease: Lease | None
        while True:
            if not slot.ready and (slot.acks or slot.syncing):
                await self._flush(slot)  # hands in results and takes the next task in one call
            if slot.ready:
                lease = slot.ready.popleft()
                if slot.proc is None and not await self._start(slot, failures):
                    slot.ready.appendleft(lease)
                    failures += 1
                    continue
            else:
                if self._draining.is_set() or slot.stopping:
                    return
                if slot.proc is None and not await self._start(slot, failures):
                    failures += 1
                    continue
                if slot.paused:
                    await anyio.sleep(0.1)
                    continue
                lease = await self._reserve(slot)
                if lease is None:
                    continue
            if self._target(slot) > len(slot.ready):
                slot.sync_wanted.set()  # lease more ahead while the agent works
            if await self._work(slot, lease):
                failures += 1
                slot.counters["crashes"] += 1
                await self._discard(slot)
            else:
                failures = 0

    def _target_blocked(self, slot: _Slot) -> bool:
        return self._draining.is_set() or slot.stopping or slot.paused

    def _target(self, slot: _Slot) -> int:
        """How many tasks the slot should hold ahead now."""
        if self._target_blocked(slot):
            return 0
        per_task = max(slot.avg_task, 1e-6)
        return min(self.config.prefetch, int(self.config.prefetch_window / per_task))

    async def _flush(self, slot: _Slot) -> None:
        """Wait until every result handed in so far is settled with the queue."""
        while slot.acks or slot.syncing:
            done = slot.synced
            slot.sync_wanted.set()
            await done.wait()

    async def _sync_loop(self, slot: _Slot) -> None:
        """Settle results and lease ahead, one queue call per round (one fsync for many)."""
        while True:
            await slot.sync_wanted.wait()
            slot.sync_wanted = anyio.Event()
            acks, slot.acks = slot.acks, []
            target = self._target(slot)
            # an agent about to go idle takes its next task in the same call as its results
            want = 0 if target == 0 and self._target_blocked(slot) else max(
                target - len(slot.ready), 0 if slot.ready else 1)
            slot.syncing = True
            try:
                if acks or want:
                    await self._settle(slot, acks, want)
            finally:
                slot.syncing = False
                done, slot.synced = slot.synced, anyio.Event()
                done.set()

    async def _settle(self, slot: _Slot, acks: list[tuple[Lease, Any]], want: int) -> None:
        try:
            lost, taken = await self.queue.settle(
                acks, slot.consumer, self.config.lease, want=want, kinds=self.config.kinds,
                tags=self.config.tags, exclude_kinds=self._shut())
        except BackendUnavailable as exc:
            log.error("queue unavailable, unsettled leases will expire and be reclaimed: %s",
                      exc)
            return
        slot.ready.extend(taken)
        for lease, _ in acks:
            if lease.item.id in lost:
                slot.counters["lease_lost"] += 1
                self._log(slot, f"refused: the lease on {lease.item.id} (token "
                                f"{lease.token}) was lost; another agent has it")
            else:
                slot.counters["done"] += 1
                self._breaker(lease.item.kind).record(True)

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

    def _shut(self) -> list[str]:
        """Kinds whose circuit breaker is open."""
        return [k for k, b in self.breakers.items() if not b.allows()]

    async def _reserve(self, slot: _Slot) -> Lease | None:
        shut = self._shut()
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
        slot.held = held = _Held(lease)
        started = time.monotonic()
        try:
            return await self._converse(slot, slot.proc, held)
        finally:
            slot.avg_task = 0.8 * slot.avg_task + 0.2 * (time.monotonic() - started)
            slot.held = slot.item = None
            slot.state = "paused" if slot.paused else "idle"

    async def _heartbeat(self, slot: _Slot) -> None:
        """Extend the lease of whatever the slot's agent is working on, every third of it."""
        every = max(0.05, self.config.lease / 3)
        while True:
            await anyio.sleep(every)
            await self._extend_ahead(slot)
            held = slot.held
            if held is None or held.lost:
                continue
            try:
                held.lease = await self.queue.extend(held.lease, self.config.lease)
            except LeaseLost:
                if slot.held is held:
                    log.warning("lost the lease on %s; its result will be refused",
                                held.lease.item.id)
                    held.lost = True
            except BackendUnavailable as exc:
                log.warning("cannot extend lease on %s: %s", held.lease.item.id, exc)

    async def _extend_ahead(self, slot: _Slot) -> None:
        """Heartbeat the tasks leased ahead; one lost meanwhile (cancelled) is dropped."""
        for lease in list(slot.ready):
            try:
                fresh = await self.queue.extend(lease, self.config.lease)
            except LeaseLost:
                fresh = None
            except BackendUnavailable:
                continue
            if lease in slot.ready:
                index = slot.ready.index(lease)
                del slot.ready[index]
                if fresh is not None:
                    slot.ready.insert(index, fresh)

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
            slot.acks.append((held.lease, msg.get("result")))  # settled by _sync_loop
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
