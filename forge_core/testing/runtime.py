"""``RuntimeConformance``: the tests every Runtime backend passes, shipped or third-party.

Subclass it in a test module, provide a ``runtime`` fixture, and override :meth:`make_spec`
when containers need more than an argv (an image, a rootfs shell). A :class:`FifoProbe`
proves that every process holding a pipe end died, without timing anything.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import anyio
import pytest

from ..abc import ContainerSpec, PortMapping, Resources, Runtime, Volume
from ..exceptions import NotFound, Unsupported

__all__ = ["FifoProbe", "RuntimeConformance"]

_GUARD = 20.0
"""Seconds after which a wait that should end is declared hung (a guard, not an assertion)."""


class FifoProbe:
    """A named pipe the test reads; a task writes to it, and EOF means every writer is dead."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.received = b""

    async def read_until(self, marker: bytes) -> None:
        """Wait until ``marker`` has arrived."""
        with anyio.fail_after(_GUARD):
            while marker not in self.received:
                if not self._read():
                    await anyio.sleep(0.01)

    async def cancel_on(self, marker: bytes, work: Callable[[], Awaitable[object]]) -> bool:
        """Run ``work()`` and cancel it once ``marker`` has arrived; whether ``work`` returned
        on its own first (a cancellable task must not)."""
        returned = False

        async def call() -> None:
            nonlocal returned
            await work()
            returned = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await self.read_until(marker)
            tg.cancel_scope.cancel()
        return returned

    async def wait_closed(self) -> bool:
        """Whether every writer closed the pipe (all processes holding it died) within the guard."""
        with anyio.move_on_after(_GUARD):
            while True:
                try:
                    if os.read(self._fd, 65536) == b"":
                        return True
                except BlockingIOError:
                    await anyio.sleep(0.01)
        return False

    def _read(self) -> bool:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return False
        self.received += data
        return bool(data)

    def close(self) -> None:
        os.close(self._fd)


class RuntimeConformance:
    """Behaviour every :class:`~forge_core.abc.Runtime` shares; needs a ``runtime`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]
    shell: ClassVar[str] = "/bin/sh"
    """A POSIX shell inside the container."""
    scratch_dir: ClassVar[str] = "/tmp"  # noqa: S108 - only a cwd, nothing is written
    """A directory that exists inside the container (used as a workdir)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    def make_spec(self, *argv: str, **fields: Any) -> ContainerSpec:
        """A spec running ``argv``; override to add an image or other required fields."""
        return ContainerSpec(command=cast(Any, argv), **fields)

    def sh(self, script: str, **fields: Any) -> ContainerSpec:
        """A spec running ``script`` with :attr:`shell`."""
        return self.make_spec(self.shell, "-c", script, **fields)

    async def test_exit_code_is_reported(self, runtime: Runtime) -> None:
        """A command's exit code comes back from run() and it did not time out."""
        status, timed_out = await runtime.run(self.sh("exit 3"))
        assert (status.exit_code, status.signal, timed_out) == (3, None, False)
        assert not status.ok

    async def test_signal_death_is_reported(self, runtime: Runtime) -> None:
        """A command killed by a signal reports the signal and no exit code."""
        status, _ = await runtime.run(self.sh("kill -KILL $$"))
        assert (status.exit_code, status.signal) == (None, signal.SIGKILL)

    async def test_stdout_and_stderr_are_appended_to_log(
        self, runtime: Runtime, tmp_path: Path,
    ) -> None:
        """Both streams land in log_path, after what the file already held."""
        log = tmp_path / "task.log"
        log.write_text("before\n")
        status, _ = await runtime.run(self.sh("echo out; echo err >&2", log_path=log))
        assert status.ok
        assert log.read_text().splitlines() == ["before", "out", "err"]

    async def test_env_and_workdir_are_applied(self, runtime: Runtime, tmp_path: Path) -> None:
        """The command sees spec.env and starts in spec.workdir."""
        log = tmp_path / "task.log"
        spec = self.sh('echo "$FORGE_CONF_VAR"; pwd', env={"FORGE_CONF_VAR": "v a l"},
                       workdir=self.scratch_dir, log_path=log)
        await runtime.run(spec)
        assert log.read_text().splitlines() == ["v a l", self.scratch_dir]

    async def test_missing_executable_is_not_found(self, runtime: Runtime) -> None:
        """Starting a command that does not exist raises NotFound."""
        with pytest.raises(NotFound, match="forge-no-such-command"):
            await runtime.start(self.make_spec("/nonexistent/forge-no-such-command"))

    async def test_stop_kills_a_tree_that_ignores_sigterm(
        self, runtime: Runtime, tmp_path: Path,
    ) -> None:
        """stop() escalates to SIGKILL after the grace and no process of the tree survives."""
        probe = FifoProbe(tmp_path / "probe")
        script = f"trap '' TERM; exec 3>{probe.path}; sleep 1000 & echo ready >&3; wait"
        handle = await runtime.start(self.sh(script))
        try:
            await probe.read_until(b"ready")
            status = await runtime.stop(handle, grace=0.2)
            assert status.signal == signal.SIGKILL
            assert await probe.wait_closed(), "a process of the container survived stop()"
        finally:
            await runtime.remove(handle)
            probe.close()

    async def test_stop_ends_a_cooperative_command_with_sigterm(self, runtime: Runtime) -> None:
        """A command that honours SIGTERM ends with it inside the grace period."""
        handle = await runtime.start(self.make_spec("sleep", "1000"))
        try:
            status = await runtime.stop(handle, grace=_GUARD)
            assert status.signal == signal.SIGTERM
        finally:
            await runtime.remove(handle)

    async def test_cancelled_run_stops_the_command_with_sigterm_first(
        self, runtime: Runtime, tmp_path: Path,
    ) -> None:
        """Cancelling run() (Ctrl-C) gives the command SIGTERM and its grace before SIGKILL,
        and waits for it: its TERM handler runs, and no process of it survives."""
        probe = FifoProbe(tmp_path / "probe")
        script = (f"exec 3>{probe.path}; trap 'echo got-term >&3; exit 3' TERM; "
                  "sleep 1000 & echo ready >&3; wait")
        try:
            assert not await probe.cancel_on(
                b"ready", lambda: runtime.run(self.sh(script), grace=_GUARD))
            await probe.read_until(b"got-term")  # the TERM handler ran: no SIGKILL first
            assert await probe.wait_closed(), "a process of the container survived the cancel"
        finally:
            probe.close()

    async def test_wait_is_idempotent_and_concurrent(self, runtime: Runtime) -> None:
        """Concurrent and repeated waits all return the same status."""
        handle = await runtime.start(self.sh("exit 5"))
        results = []

        async def wait() -> None:
            results.append(await runtime.wait(handle))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(wait)
        results.append(await runtime.wait(handle))
        await runtime.remove(handle)
        assert {r.exit_code for r in results} == {5}
        assert len(results) == 4

    async def test_signal_after_exit_is_not_an_error(self, runtime: Runtime) -> None:
        """Signalling a container that already ended does nothing."""
        handle = await runtime.start(self.sh("exit 0"))
        await runtime.wait(handle)
        await runtime.signal(handle, signal.SIGTERM)
        await runtime.remove(handle)

    async def test_stats_count_the_processes(self, runtime: Runtime, tmp_path: Path) -> None:
        """stats() sees every process of a running tree and the memory they hold."""
        probe = FifoProbe(tmp_path / "probe")
        script = f"exec 3>{probe.path}; sleep 1000 & sleep 1000 & echo ready >&3; wait"
        handle = await runtime.start(self.sh(script))
        try:
            await probe.read_until(b"ready")
            stats = await runtime.stats(handle)
            assert stats.pids >= 3  # the shell and two sleeps (plus any init the runtime adds)
            assert stats.memory_bytes > 0
        finally:
            await runtime.remove(handle)
            probe.close()

    async def test_list_and_remove(self, runtime: Runtime) -> None:
        """A started container is listed until removed; removing twice is fine."""
        handle = await runtime.start(self.make_spec("sleep", "1000"))
        assert handle.id in {h.id for h in await runtime.list()}
        await runtime.remove(handle)
        await runtime.remove(handle)
        assert handle.id not in {h.id for h in await runtime.list()}

    async def test_discard_keeps_a_running_container(self, runtime: Runtime) -> None:
        """discard() refuses a container that still runs; run() leaves nothing listed."""
        handle = await runtime.start(self.make_spec("sleep", "1000"))
        try:
            assert not runtime.discard(handle)
            assert handle.id in {h.id for h in await runtime.list()}
        finally:
            await runtime.remove(handle)
        status, timed_out = await runtime.run(self.make_spec("true"))
        assert status.ok
        assert not timed_out
        assert await runtime.list() == []

    async def test_remove_kills_a_running_container(self, runtime: Runtime, tmp_path: Path) -> None:
        """Removing a running container kills every process of it."""
        probe = FifoProbe(tmp_path / "probe")
        script = f"exec 3>{probe.path}; echo ready >&3; exec sleep 1000"
        handle = await runtime.start(self.sh(script))
        await probe.read_until(b"ready")
        await runtime.remove(handle)
        try:
            assert await probe.wait_closed(), "the container survived remove()"
        finally:
            probe.close()

    async def test_unsupported_features_are_refused(self, runtime: Runtime) -> None:
        """validate() and start() refuse a feature outside runtime.supports, naming it."""
        candidates: dict[str, dict[str, Any]] = {
            "resources.cpus": {"resources": Resources(cpus=0.5)},
            "resources.pids": {"resources": Resources(pids=10)},
            "ports": {"ports": (PortMapping(host_port=18080, container_port=80),)},
            "volumes": {"volumes": (Volume(source="/", target="/mnt"),)},
            "network.none": {"network": "none"},
            "hostname": {"hostname": "forge-test"},
        }
        unsupported = [f for f in candidates if f not in runtime.supports]
        if not unsupported:
            pytest.skip("this runtime supports every feature the suite knows how to ask for")
        feature = unsupported[0]
        spec = self.make_spec("true", **candidates[feature])
        with pytest.raises(Unsupported, match=re.escape(feature)):
            runtime.validate(spec)
        with pytest.raises(Unsupported, match=re.escape(feature)):
            await runtime.start(spec)

    async def test_run_stops_a_command_at_its_timeout(self, runtime: Runtime) -> None:
        """run() with a timeout stops the command, reports timed_out and removes it."""
        status, timed_out = await runtime.run(self.make_spec("sleep", "1000"), timeout=0.2, grace=5)
        assert timed_out
        assert status.signal in (signal.SIGTERM, signal.SIGKILL)
        assert await runtime.list() == []

    async def test_cancelled_run_leaves_nothing_behind(
        self, runtime: Runtime, tmp_path: Path,
    ) -> None:
        """Cancelling run() kills the command and removes the container."""
        probe = FifoProbe(tmp_path / "probe")
        spec = self.sh(f"exec 3>{probe.path}; echo ready >&3; exec sleep 1000")
        async with anyio.create_task_group() as tg:
            tg.start_soon(runtime.run, spec)
            await probe.read_until(b"ready")
            tg.cancel_scope.cancel()
        try:
            assert await probe.wait_closed(), "the command survived the cancellation"
            assert await runtime.list() == []
        finally:
            probe.close()

    async def test_interactive_container_talks_through_attach(self, runtime: Runtime) -> None:
        """An interactive container's stdin and stdout are reachable through attach()."""
        handle = await runtime.start(self.make_spec("cat", interactive=True))
        try:
            try:
                send, receive = await runtime.attach(handle)
            except Unsupported:
                pytest.skip("this runtime does not attach to stdio")
            await send.send(b"hello forge\n")
            await send.aclose()
            received = b""
            with anyio.fail_after(_GUARD):
                while True:
                    try:
                        received += await receive.receive()
                    except anyio.EndOfStream:
                        break
            assert received == b"hello forge\n"
            assert (await runtime.wait(handle)).ok
        finally:
            await runtime.remove(handle)
