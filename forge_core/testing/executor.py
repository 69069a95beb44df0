"""``ExecutorConformance``: the tests every Executor backend passes with command tasks.

Subclass it, provide an ``executor`` fixture (its ``concurrency`` is what the suite checks),
and override :meth:`make_container` when commands need an image or other fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, cast

import anyio
import pytest

from ..abc import ContainerSpec, Executor, Outcome, TaskRun
from .runtime import FifoProbe

__all__ = ["ExecutorConformance"]


class ExecutorConformance:
    """Behaviour every :class:`~forge_core.abc.Executor` shares; needs an ``executor`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]
    shell: ClassVar[str] = "/bin/sh"

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    def make_container(self, *argv: str, **fields: Any) -> ContainerSpec:
        """The container for a command task; override to add an image or other fields."""
        return ContainerSpec(command=cast(Any, argv), **fields)

    def command_run(self, tmp_path: Path, script: str, task: str = "t", **fields: Any) -> TaskRun:
        """A command task running ``script`` with :attr:`shell`, its log and output in tmp_path."""
        fields.setdefault("log_path", tmp_path / f"{task}.log")
        fields.setdefault("output_path", tmp_path / f"{task}.out")
        container = self.make_container(self.shell, "-c", script)
        return TaskRun(run_id="run-1", task=task, attempt=1, container=container, **fields)

    async def test_success(self, executor: Executor, tmp_path: Path) -> None:
        """A command that exits 0 succeeds, with its output in the log."""
        result = await executor.submit(self.command_run(tmp_path, "echo hello"))
        assert (result.status, result.exit_code, result.error) == ("succeeded", 0, "")
        assert result.finished_at >= result.started_at > 0
        assert "hello\n" in (tmp_path / "t.log").read_text()

    async def test_failure_reports_the_exit_code(self, executor: Executor, tmp_path: Path) -> None:
        """A command that exits 3 fails with 'exit code 3'."""
        result = await executor.submit(self.command_run(tmp_path, "exit 3"))
        assert (result.status, result.exit_code, result.error) == ("failed", 3, "exit code 3")

    async def test_key_value_outputs(self, executor: Executor, tmp_path: Path) -> None:
        """key=value lines in $FORGE_OUTPUT become outputs; blanks and comments are skipped."""
        script = ('{ echo "# comment"; echo; echo "a=1"; echo "b=x=y"; '
                  'echo "task=$FORGE_TASK"; echo "attempt=$FORGE_ATTEMPT"; '
                  'echo "run=$FORGE_RUN_ID"; } >> "$FORGE_OUTPUT"')
        result = await executor.submit(self.command_run(tmp_path, script))
        assert result.status == "succeeded"
        assert result.outputs == {"a": "1", "b": "x=y", "task": "t", "attempt": "1", "run": "run-1"}

    async def test_json_outputs(self, executor: Executor, tmp_path: Path) -> None:
        """A JSON object in $FORGE_OUTPUT becomes the outputs, types kept."""
        script = """printf '{"n": 3, "tags": ["a"]}' > "$FORGE_OUTPUT" """
        result = await executor.submit(self.command_run(tmp_path, script))
        assert result.outputs == {"n": 3, "tags": ["a"]}

    async def test_malformed_outputs_fail_the_task(
        self, executor: Executor, tmp_path: Path,
    ) -> None:
        """A line that is not key=value fails the task, naming the line."""
        script = 'printf "a=1\\nnot a pair\\n" > "$FORGE_OUTPUT"'
        result = await executor.submit(self.command_run(tmp_path, script))
        assert result.status == "failed"
        assert "line 2" in result.error

    async def test_skip_exit_code(self, executor: Executor, tmp_path: Path) -> None:
        """An exit code listed in skip_exit_codes skips the task."""
        result = await executor.submit(self.command_run(tmp_path, "exit 42", skip_exit_codes=(42,)))
        assert (result.status, result.exit_code) == ("skipped", 42)

    async def test_timeout(self, executor: Executor, tmp_path: Path) -> None:
        """A command that outlives its timeout is stopped and reported timed_out."""
        run = self.command_run(tmp_path, "exec sleep 1000", timeout=0.2, grace=5)
        result = await executor.submit(run)
        assert result.status == "timed_out"
        assert "timed out" in result.error

    async def test_concurrency_limit_is_honoured(self, executor: Executor, tmp_path: Path) -> None:
        """No more than `concurrency` commands run at once, and that many do run together."""
        limit = executor.concurrency
        running, full = tmp_path / "running", tmp_path / "full"
        running.mkdir()
        script = (
            f'touch "{running}/$FORGE_TASK"; max=0; i=0\n'
            f'while [ $i -lt 500 ]; do n=$(ls "{running}" | wc -l)\n'
            '  [ "$n" -gt "$max" ] && max=$n\n'
            f'  [ "$n" -ge {limit} ] && touch "{full}"\n'
            f'  [ -e "{full}" ] && break; sleep 0.01; i=$((i+1)); done\n'
            f'echo "max=$max" >> "$FORGE_OUTPUT"; rm "{running}/$FORGE_TASK"'
        )
        results: list[Outcome] = []

        async def one(index: int) -> None:
            results.append(await executor.submit(self.command_run(tmp_path, script, f"c{index}")))

        async with anyio.create_task_group() as tg:
            for index in range(limit + 2):
                tg.start_soon(one, index)
        assert [r.status for r in results] == ["succeeded"] * (limit + 2)
        assert max(int(r.outputs["max"]) for r in results) == limit

    async def test_cancellation_stops_the_command(self, executor: Executor, tmp_path: Path) -> None:
        """Cancelling submit() kills the command's processes and re-raises the cancellation."""
        probe = FifoProbe(tmp_path / "probe")
        script = f"exec 3>{probe.path}; sleep 1000 & echo ready >&3; wait"
        try:
            assert not await probe.cancel_on(
                b"ready", lambda: executor.submit(self.command_run(tmp_path, script)))
            assert await probe.wait_closed(), "a process of the task survived the cancellation"
        finally:
            probe.close()
