"""The ``process`` runtime: the Runtime conformance suite plus what only a child process shows."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from forge_core.abc import ContainerSpec, Handle, Resources
from forge_core.exceptions import NotFound, Unsupported
from forge_core.runtime import ProcessRuntime
from forge_core.runtime._logs import LogFiles
from forge_core.tail import follow
from forge_core.testing import FifoProbe, RuntimeConformance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def runtime() -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime()
    yield rt
    for handle in await rt.list():
        await rt.remove(handle)


class TestProcessRuntimeConformance(RuntimeConformance):
    """The shared Runtime behaviour, on the process runtime."""


_REPLACE_THE_WATCHDOG = """
    old = _watchdog.watchdog()
    os.kill(old.pid, signal.SIGKILL)
    os.waitpid(old.pid, 0)
    await rt.start(ContainerSpec(command=["sleep", "1000"]))  # brings up a new one
    assert _watchdog.watchdog().pid != old.pid
"""
"""What a helper does after its child started, so the child's group outlives the watchdog
that first guarded it."""


class TestProcessRuntime:
    """What the process runtime does beyond the shared contract."""

    def test_supports_exactly_what_it_enforces(self) -> None:
        """Memory, CPU time and detach are enforced; pids and cpus are refused."""
        assert ProcessRuntime.supports == {"resources.memory", "resources.cpu_time", "detach"}
        with pytest.raises(Unsupported, match=r"resources\.pids"):
            ProcessRuntime().validate(ContainerSpec(command=["true"], resources=Resources(pids=5)))

    async def test_memory_limit_is_enforced(self, runtime: ProcessRuntime, tmp_path: Path) -> None:
        """An allocation beyond resources.memory fails inside the child."""
        log = tmp_path / "log"
        spec = ContainerSpec(command=[sys.executable, "-c", "bytearray(1024 ** 3)"],
                             resources=Resources(memory=256 * 1024**2), log_path=log)
        status, _ = await runtime.run(spec)
        assert status.exit_code == 1
        assert "MemoryError" in log.read_text()

    async def test_cpu_time_limit_is_enforced(self, runtime: ProcessRuntime) -> None:
        """A busy loop is killed by the kernel once it used its CPU seconds."""
        spec = ContainerSpec(command=["sh", "-c", "while :; do :; done"],
                             resources=Resources(cpu_time=1))
        status, timed_out = await runtime.run(spec, timeout=60)
        assert not timed_out
        assert status.signal in (signal.SIGXCPU, signal.SIGKILL)

    async def test_env_is_inherited_unless_asked_not_to(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """inherit_env=False starts from spec.env alone."""
        os.environ["FORGE_TEST_INHERITED"] = "yes"
        try:
            log = tmp_path / "log"
            script = 'echo "[$FORGE_TEST_INHERITED]"'
            await runtime.run(ContainerSpec(command=["/bin/sh", "-c", script], log_path=log))
            await runtime.run(ContainerSpec(command=["/bin/sh", "-c", script], log_path=log,
                                            inherit_env=False))
        finally:
            del os.environ["FORGE_TEST_INHERITED"]
        assert log.read_text().splitlines() == ["[yes]", "[]"]

    async def test_no_forge_descriptor_leaks_into_the_child(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """Even an inheritable descriptor of Forge is closed in the child."""
        log = tmp_path / "log"
        fd = os.dup2(os.open(os.devnull, os.O_RDONLY), 77)
        os.set_inheritable(fd, True)
        try:
            await runtime.run(ContainerSpec(command=["sh", "-c", "ls /proc/$$/fd"], log_path=log))
        finally:
            os.close(fd)
        assert sorted(log.read_text().split()) == ["0", "1", "2"]

    def test_no_descriptor_leaks_from_a_process_that_owns_them(self, tmp_path: Path) -> None:
        """In a process that declared its descriptors its own (as the forge command does),
        an inheritable descriptor is still not inherited, and the process keeps it open."""
        log = tmp_path / "log"
        script = textwrap.dedent(f"""
            import os, anyio
            from forge_core.abc import ContainerSpec
            from forge_core.runtime import ProcessRuntime, own_descriptors
            fd = os.dup2(os.open(os.devnull, os.O_RDONLY), 77)
            os.set_inheritable(fd, True)
            owned = own_descriptors()
            spec = ContainerSpec(command=["sh", "-c", "ls /proc/$$/fd"], log_path={str(log)!r})
            anyio.run(ProcessRuntime().run, spec)
            os.fstat(fd)
            print(owned)
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=True)
        on_linux_before_313 = sys.platform.startswith("linux") and sys.version_info < (3, 13)
        assert done.stdout.strip() == str(on_linux_before_313)
        assert sorted(log.read_text().split()) == ["0", "1", "2"]

    @pytest.mark.parametrize("spawn", ["posix_spawn", "popen"])
    @pytest.mark.parametrize("terminal", ["leader", "released", "none"],
                             ids=["a-terminal-it-leads", "a-terminal-given-up", "no-terminal"])
    def test_a_child_leads_its_group_and_never_gets_a_terminal(
        self, tmp_path: Path, terminal: str, spawn: str
    ) -> None:
        """A child leads its own process group. While Forge has a controlling terminal, the
        child also leads its own session; once Forge gave it up (as the forge command does,
        unless it leads its session) or had none, the child stays in Forge's session. Either
        way, opening /dev/tty fails at once (ENXIO) rather than stopping it, and Ctrl-C on
        the terminal still reaches Forge."""
        log = tmp_path / "log"
        child = ("import errno, os\n"
                 "try:\n"
                 "    os.open('/dev/tty', os.O_RDONLY)\n"
                 "    tty = 'opened'\n"
                 "except OSError as exc:\n"
                 "    tty = errno.errorcode[exc.errno]\n"
                 "print(os.getpid(), os.getpgid(0), os.getsid(0), tty)\n")
        # an rlimit sends the start through Popen and its preexec_fn instead of posix_spawn
        resources = "Resources(memory=2 ** 40)" if spawn == "popen" else "Resources()"
        script = textwrap.dedent(f"""
            import fcntl, os, signal, sys, time, termios, anyio
            from forge_core.abc import ContainerSpec, Resources
            from forge_core.runtime import ProcessRuntime
            from forge_core.runtime._spawn import own_terminal, release_terminal
            if {terminal!r} != "none":  # a pseudo-terminal becomes this new session's terminal
                primary, secondary = os.openpty()
                fcntl.ioctl(secondary, termios.TIOCSCTTY, 0)
            if {terminal!r} == "released":  # Forge as a shell starts it: not the leader
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                pid = os.fork()
                if pid:
                    os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
            released = release_terminal()
            interrupted = []
            if {terminal!r} != "none":  # Ctrl-C typed on the terminal
                signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
                os.write(primary, b"\x03")
                deadline = time.monotonic() + 30
                while not interrupted and time.monotonic() < deadline:
                    time.sleep(0.01)
            spec = ContainerSpec(command=[sys.executable, "-c", {child!r}],
                                 resources={resources}, log_path={str(log)!r})
            status, _ = anyio.run(ProcessRuntime().run, spec)
            print(released, own_terminal(), bool(interrupted), os.getsid(0), status.exit_code)
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=True, start_new_session=True)
        released, has_terminal, interrupted, forge_session, exit_code = done.stdout.split()
        pid, group, session, tty = log.read_text().split()
        assert exit_code == "0"
        assert released == str(terminal == "released")
        assert has_terminal == str(terminal == "leader")
        assert interrupted == str(terminal != "none")
        assert group == pid
        assert session == (pid if terminal == "leader" else forge_session)
        assert tty == "ENXIO"

    async def test_signals_python_ignores_are_default_in_the_child(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """SIGPIPE and SIGXFSZ, which Python ignores, are not ignored by a child (as with Popen)."""
        log = tmp_path / "log"
        await runtime.run(ContainerSpec(command=["grep", "SigIgn", "/proc/self/status"],
                                        log_path=log))
        ignored = int(log.read_text().split()[1], 16)
        assert not ignored & (1 << (signal.SIGPIPE - 1))
        assert not ignored & (1 << (signal.SIGXFSZ - 1))

    async def test_a_command_is_looked_up_in_the_path_of_its_own_environment(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """A PATH in spec.env decides which program a bare command name runs."""
        tool = tmp_path / "bin" / "forge-test-tool"
        tool.parent.mkdir()
        tool.write_text("#!/bin/sh\necho from-task-path\n")
        tool.chmod(0o755)
        log = tmp_path / "log"
        path = f"{tool.parent}:{os.environ.get('PATH', '')}"
        status, _ = await runtime.run(ContainerSpec(command=["forge-test-tool"],
                                                    env={"PATH": path}, log_path=log))
        assert status.ok
        assert log.read_text() == "from-task-path\n"
        with pytest.raises(NotFound, match="forge-test-tool"):
            await runtime.run(ContainerSpec(command=["forge-test-tool"]))

    async def test_missing_workdir_is_not_found(self, runtime: ProcessRuntime) -> None:
        """A workdir that does not exist is reported as NotFound, naming it."""
        with pytest.raises(NotFound, match="/nonexistent-forge-dir"):
            await runtime.start(ContainerSpec(command=["true"], workdir="/nonexistent-forge-dir"))

    async def test_unknown_handle_is_not_found(self, runtime: ProcessRuntime) -> None:
        """wait() on a handle this runtime never started raises NotFound."""
        with pytest.raises(NotFound):
            await runtime.wait(Handle(id="proc-nope", runtime="process"))

    async def test_leader_exit_kills_its_leftovers(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """Background processes left in the group die once the leader is reaped."""
        probe = FifoProbe(tmp_path / "probe")
        script = f"exec 3>{probe.path}; sleep 1000 & echo ready >&3"
        handle = await runtime.start(ContainerSpec(command=["sh", "-c", script]))
        try:
            await probe.read_until(b"ready")
            assert (await runtime.wait(handle)).ok
            assert await probe.wait_closed()
        finally:
            await runtime.remove(handle)
            probe.close()

    @pytest.mark.parametrize("then", ["", _REPLACE_THE_WATCHDOG],
                             ids=["its-watchdog", "a-replaced-watchdog"])
    async def test_child_dies_with_forge(self, tmp_path: Path, then: str) -> None:
        """A non-detached tree is killed when the process that started it is SIGKILLed; also
        when its watchdog was killed before that (the replacement takes its groups over)."""
        probe = FifoProbe(tmp_path / "probe")
        script = f"exec 3>{probe.path}; sleep 1000 & echo ready >&3; wait"
        helper = _start_helper(tmp_path, script, detach=False, then=then)
        try:
            await probe.read_until(b"ready")
            helper.kill()
            helper.wait()
            assert await probe.wait_closed(), "the child outlived the process that started it"
        finally:
            helper.kill()
            probe.close()

    async def test_a_killed_watchdog_is_replaced(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """If the watchdog dies, the next start brings up a new one and registers with it."""
        from forge_core.runtime import _watchdog

        await runtime.run(ContainerSpec(command=["true"]))
        old = _watchdog.watchdog()
        assert old is not None
        os.kill(old.pid, signal.SIGKILL)
        os.waitpid(old.pid, 0)
        handle = await runtime.start(ContainerSpec(command=["sleep", "1000"]))
        await runtime.remove(handle)
        new = _watchdog.watchdog()
        assert new is not None
        assert new.pid != old.pid
        assert old.broken
        assert not new.broken

    async def test_detached_child_survives_forge(self, tmp_path: Path) -> None:
        """A detached child keeps running (and answers) after its starter is SIGKILLed."""
        probe, ping = FifoProbe(tmp_path / "probe"), tmp_path / "ping"
        os.mkfifo(ping)
        script = f'exec 3>{probe.path}; echo ready >&3; read x < {ping}; echo "alive $x" >&3'
        helper = _start_helper(tmp_path, script, detach=True)
        try:
            await probe.read_until(b"ready")
            helper.kill()
            helper.wait()
            fd = os.open(ping, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"ping\n")
            os.close(fd)
            await probe.read_until(b"alive ping")
            assert await probe.wait_closed()
        finally:
            probe.close()

    async def test_stats_count_exactly_the_group(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """stats() counts the shell and its two children, nothing else."""
        probe = FifoProbe(tmp_path / "probe")
        script = f"exec 3>{probe.path}; sleep 1000 & sleep 1000 & echo ready >&3; wait"
        handle = await runtime.start(ContainerSpec(command=["sh", "-c", script]))
        try:
            await probe.read_until(b"ready")
            assert (await runtime.stats(handle)).pids == 3
        finally:
            await runtime.remove(handle)
            probe.close()

    async def test_stats_of_an_ended_container_are_zero(self, runtime: ProcessRuntime) -> None:
        """Once reaped, a container has no processes left to measure."""
        handle = await runtime.start(ContainerSpec(command=["true"]))
        await runtime.wait(handle)
        assert (await runtime.stats(handle)).pids == 0
        await runtime.remove(handle)

    async def test_attach_refuses_a_non_interactive_container(
        self, runtime: ProcessRuntime
    ) -> None:
        """attach() needs interactive=True."""
        handle = await runtime.start(ContainerSpec(command=["sleep", "1000"]))
        with pytest.raises(Unsupported, match="interactive"):
            await runtime.attach(handle)
        await runtime.remove(handle)

    async def test_many_concurrent_waits_on_many_children(self, runtime: ProcessRuntime) -> None:
        """Twenty children started together are all reaped with their own exit codes."""
        codes: dict[int, int | None] = {}

        async def one(i: int) -> None:
            status, _ = await runtime.run(ContainerSpec(command=["sh", "-c", f"exit {i}"]))
            codes[i] = status.exit_code

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
        assert codes == {i: i for i in range(20)}

    async def test_a_cancelled_waiter_hands_the_wait_to_another(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """Two tasks wait for one child; the first is cancelled, the second still gets the
        exit code once the child ends."""
        gate = tmp_path / "gate"
        handle = await runtime.start(ContainerSpec(
            command=["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 7"]))
        first_scope = anyio.CancelScope()
        codes: list[int | None] = []

        async def first() -> None:
            with first_scope:
                await runtime.wait(handle)

        async def second() -> None:
            codes.append((await runtime.wait(handle)).exit_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()  # first waits for the exit itself
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            first_scope.cancel()
            await anyio.wait_all_tasks_blocked()
            gate.touch()
        assert codes == [7]
        await runtime.remove(handle)


def _start_helper(
    tmp_path: Path, script: str, *, detach: bool, then: str = ""
) -> subprocess.Popen[bytes]:
    """A separate Python process that starts ``script`` through a ProcessRuntime ``rt``, runs
    the statements ``then`` (``os``, ``signal`` and ``_watchdog`` in scope), and sleeps."""
    code = textwrap.dedent(f"""
        import anyio, os, signal, sys
        from forge_core.abc import ContainerSpec
        from forge_core.runtime import ProcessRuntime, _watchdog

        async def main():
            rt = ProcessRuntime()
            await rt.start(ContainerSpec(command=["sh", "-c", {script!r}], detach={detach}))
        {{then}}
            print("started", flush=True)
            await anyio.sleep(1000)

        anyio.run(main)
    """).replace("{then}\n", textwrap.indent(textwrap.dedent(then), "    "))
    path = tmp_path / "helper.py"
    path.write_text(code)
    helper = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE)
    assert helper.stdout is not None
    assert helper.stdout.readline() == b"started\n"  # start() returned: the child is registered
    helper.stdout.close()
    return helper


class TestLogFiles:
    """A child's log file holds its output; a child that wrote nothing leaves no file."""

    async def test_only_a_child_that_wrote_keeps_a_log_file(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """Silent children leave no file and take turns with one spare; a talking one keeps
        its log (the spare becomes it); closing the runtime deletes the spare."""
        for i in range(3):
            await runtime.run(ContainerSpec(command=["true"], log_path=tmp_path / f"q{i}.log"))
        [spare] = os.listdir(tmp_path)
        assert spare.startswith(".spool-")
        await runtime.run(ContainerSpec(command=["echo", "said"], log_path=tmp_path / "s.log"))
        assert os.listdir(tmp_path) == ["s.log"]
        assert (tmp_path / "s.log").read_text() == "said\n"
        await runtime.run(ContainerSpec(command=["true"], log_path=tmp_path / "q3.log"))
        assert len(os.listdir(tmp_path)) == 2
        await runtime.aclose()
        assert os.listdir(tmp_path) == ["s.log"]

    async def test_an_existing_log_is_appended_to(
        self, runtime: ProcessRuntime, tmp_path: Path
    ) -> None:
        """A log path that exists keeps what it held, silent child or not."""
        log = tmp_path / "agent.log"
        log.write_text("before\n")
        await runtime.run(ContainerSpec(command=["true"], log_path=log))
        await runtime.run(ContainerSpec(command=["echo", "after"], log_path=log))
        assert log.read_text() == "before\nafter\n"

    async def test_spares_go_with_a_runtime_nobody_closed(self, tmp_path: Path) -> None:
        rt = ProcessRuntime()
        await rt.run(ContainerSpec(command=["true"], log_path=tmp_path / "a.log"))
        assert len(os.listdir(tmp_path)) == 1  # the spare
        del rt
        gc.collect()
        assert os.listdir(tmp_path) == []

    def test_a_reader_of_a_silent_log_never_shows_the_next_childs_output(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """``follow`` opened a log whose child then ended silent; its file became the next
        child's log, which wrote to it: the reader stops, showing nothing."""
        logs = LogFiles()
        first = logs.open(tmp_path / "first.log")
        inode = os.fstat(first).st_ino
        handed_on = []

        def done() -> bool:  # the first child ends silent and the next one writes
            if not handed_on:
                logs.close(first)
                handed_on.append(logs.open(tmp_path / "next.log"))
                os.write(handed_on[0], b"the next child's output\n")
                return False
            return True

        assert follow(tmp_path / "first.log", done, interval=0.01)
        assert os.fstat(handed_on[0]).st_ino == inode  # the same file, reused
        assert capsysbinary.readouterr().out == b""
        assert (tmp_path / "next.log").read_bytes() == b"the next child's output\n"
        logs.close(handed_on[0])
        logs.release()
