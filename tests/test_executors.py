"""The core executors: the Executor conformance suite, plus Python tasks in each of them."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import psutil
import pytest

from forge_core.abc import Executor, TaskRun
from forge_core.executors import LocalExecutor, ProcessExecutor, ThreadExecutor
from forge_core.runtime import ProcessRuntime
from forge_core.testing import ExecutorConformance

pytestmark = pytest.mark.anyio

TASKS = '''
import os, time
from forge_core.exceptions import TaskFailed

def add(a, b):
    print("adding", a, b)
    return {"sum": a + b}

def scalar():
    return 42

def nothing():
    return None

def refuse(reason):
    raise TaskFailed(reason)

def skip():
    raise TaskFailed("nothing to do", exit_code=42)

def boom():
    raise ValueError("boom")

def unserialisable():
    return {"obj": object()}

def oversized():
    return {"blob": "x" * (1 << 20)}

async def coro(x):
    return {"double": x * 2}

def sleeper(pidfile):
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(1000)
'''


EXECUTORS: dict[str, type[Executor]] = {
    "local": LocalExecutor, "thread": ThreadExecutor, "process": ProcessExecutor}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tasks(tmp_path: Path) -> str:
    path = tmp_path / "tasks.py"
    path.write_text(TASKS)
    return str(path)


def python_run(tmp_path: Path, target: str, **fields: Any) -> TaskRun:
    fields.setdefault("log_path", tmp_path / "py.log")
    return TaskRun(run_id="run-1", task="py", attempt=1, kind="python", python=target, **fields)


class TestLocalExecutorConformance(ExecutorConformance):
    """The shared Executor behaviour, on the local executor."""

    @pytest.fixture
    def executor(self) -> LocalExecutor:
        return LocalExecutor()


class TestThreadExecutorConformance(ExecutorConformance):
    """The shared Executor behaviour, on the thread executor."""

    @pytest.fixture
    def executor(self) -> ThreadExecutor:
        return ThreadExecutor(concurrency=3)


class TestProcessExecutorConformance(ExecutorConformance):
    """The shared Executor behaviour, on the process executor."""

    @pytest.fixture
    def executor(self) -> ProcessExecutor:
        return ProcessExecutor(concurrency=2)


@pytest.fixture(params=["local", "thread", "process"])
async def any_executor(request: pytest.FixtureRequest) -> AsyncIterator[Executor]:
    executor: Executor = EXECUTORS[request.param](concurrency=2)
    yield executor
    await executor.aclose()


class TestPythonTasks:
    """Python tasks behave the same in every core executor."""

    async def test_dict_return_becomes_outputs(
        self, any_executor: Executor, tasks: str, tmp_path: Path
    ) -> None:
        """A returned dict is the task's outputs, called with the inputs as keywords."""
        run = python_run(tmp_path, f"{tasks}:add", inputs={"a": 2, "b": 3})
        result = await any_executor.submit(run)
        assert (result.status, result.outputs) == ("succeeded", {"sum": 5})

    async def test_other_return_is_under_return(
        self, any_executor: Executor, tasks: str, tmp_path: Path
    ) -> None:
        """A non-dict return value is the 'return' output; None gives no outputs."""
        result = await any_executor.submit(python_run(tmp_path, f"{tasks}:scalar"))
        assert result.outputs == {"return": 42}
        result = await any_executor.submit(python_run(tmp_path, f"{tasks}:nothing"))
        assert (result.status, result.outputs) == ("succeeded", {})

    async def test_module_target(self, any_executor: Executor, tmp_path: Path) -> None:
        """A 'module:function' target is imported by name."""
        result = await any_executor.submit(python_run(tmp_path, "json:dumps", inputs={"obj": [1]}))
        assert result.outputs == {"return": "[1]"}

    async def test_task_failed_gives_its_message(
        self, any_executor: Executor, tasks: str, tmp_path: Path
    ) -> None:
        """TaskFailed fails the task with its message and no exception type."""
        run = python_run(tmp_path, f"{tasks}:refuse", inputs={"reason": "no data today"})
        result = await any_executor.submit(run)
        assert (result.status, result.error) == ("failed", "no data today")

    async def test_task_failed_exit_code_can_skip(
        self, any_executor: Executor, tasks: str, tmp_path: Path
    ) -> None:
        """TaskFailed with an exit code listed in skip_exit_codes skips the task."""
        run = python_run(tmp_path, f"{tasks}:skip", skip_exit_codes=(42,))
        result = await any_executor.submit(run)
        assert (result.status, result.exit_code) == ("skipped", 42)

    async def test_exception_fails_with_type_and_traceback(
        self, any_executor: Executor, tasks: str, tmp_path: Path
    ) -> None:
        """Any other exception fails as 'Type: message' with the traceback in the log."""
        result = await any_executor.submit(python_run(tmp_path, f"{tasks}:boom"))
        assert (result.status, result.error) == ("failed", "ValueError: boom")
        log = (tmp_path / "py.log").read_text()
        assert "Traceback" in log
        assert 'raise ValueError("boom")' in log

    @pytest.mark.parametrize(("target", "says"), [
        ("unserialisable", ("JSON",)),
        ("oversized", ("more than 1 MiB", "return its path")),
    ])
    async def test_outputs_that_cannot_be_stored_fail(
        self, any_executor: Executor, tasks: str, tmp_path: Path, target: str,
        says: tuple[str, ...],
    ) -> None:
        """Outputs that are not JSON-serialisable, or larger than 1 MiB as JSON, fail the
        task, saying so (and, for the large ones, to return a path)."""
        result = await any_executor.submit(python_run(tmp_path, f"{tasks}:{target}"))
        assert result.status == "failed"
        for words in says:
            assert words in result.error

    async def test_missing_target_fails_clearly(
        self, any_executor: Executor, tmp_path: Path
    ) -> None:
        """A target module that does not exist fails the task naming it."""
        result = await any_executor.submit(python_run(tmp_path, "forge_no_such_module:f"))
        assert (result.status, result.error) == (
            "failed", "python task module not found: forge_no_such_module")

    async def test_async_function(self, any_executor: Executor, tasks: str, tmp_path: Path) -> None:
        """An async def task is awaited."""
        result = await any_executor.submit(python_run(tmp_path, f"{tasks}:coro", inputs={"x": 4}))
        assert result.outputs == {"double": 8}

    async def test_task_with_neither_command_nor_python_fails(
        self, any_executor: Executor
    ) -> None:
        """A TaskRun with nothing to run fails instead of raising."""
        result = await any_executor.submit(TaskRun(run_id="r", task="empty", attempt=1))
        assert result.status == "failed"
        assert "no command" in result.error


class TestEntryPoints:
    """The core executors and runtime are registered under their short names."""

    def test_entry_points_name_these_classes(self) -> None:
        """forge.executor local/thread/process and forge.runtime process load these classes."""
        found = {ep.name: ep.load() for ep in entry_points(group="forge.executor")
                 if ep.name in EXECUTORS}
        for name, cls in EXECUTORS.items():
            assert found[name] is cls
            assert cls.name == name
        runtimes = {ep.name: ep.load() for ep in entry_points(group="forge.runtime")}
        assert runtimes["process"] is ProcessRuntime


class TestLocalExecutor:
    """The local executor runs one task at a time."""

    def test_concurrency_is_always_one(self) -> None:
        """Whatever concurrency is asked, local runs one task at a time."""
        assert LocalExecutor(concurrency=8).concurrency == 1


class TestThreadExecutor:
    """Python tasks in worker threads."""

    async def test_timeout_abandons_the_thread(self, tmp_path: Path) -> None:
        """A Python task past its timeout is reported timed_out while its thread is abandoned."""
        release = threading.Event()
        run = TaskRun(run_id="r", task="wait", attempt=1, kind="python",
                      func=lambda: release.wait(60), timeout=0.1, log_path=tmp_path / "log")
        try:
            result = await ThreadExecutor().submit(run)
        finally:
            release.set()
        assert result.status == "timed_out"
        assert "abandoned" in (tmp_path / "log").read_text()

    async def test_callable_is_used_as_given(self) -> None:
        """An already-imported func runs without importing anything."""
        run = TaskRun(run_id="r", task="f", attempt=1, kind="python",
                      func=lambda n: {"n": n + 1}, inputs={"n": 1})
        assert (await ThreadExecutor().submit(run)).outputs == {"n": 2}


class TestProcessExecutor:
    """Python tasks in child Python processes."""

    async def test_print_output_lands_in_the_log(self, tasks: str, tmp_path: Path) -> None:
        """What a Python task prints is in its log file."""
        run = python_run(tmp_path, f"{tasks}:add", inputs={"a": 1, "b": 2})
        assert (await ProcessExecutor().submit(run)).status == "succeeded"
        assert (tmp_path / "py.log").read_text() == "adding 1 2\n"

    async def test_timeout_kills_the_python_process(self, tasks: str, tmp_path: Path) -> None:
        """A Python task past its timeout is killed for real."""
        pidfile = tmp_path / "pid"
        run = python_run(tmp_path, f"{tasks}:sleeper", inputs={"pidfile": str(pidfile)},
                         timeout=1.0, grace=0.5)
        result = await ProcessExecutor().submit(run)
        assert result.status == "timed_out"
        pid = int(pidfile.read_text())
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    async def test_forge_variables_reach_the_python_process(self, tmp_path: Path) -> None:
        """FORGE_TASK and friends are in the Python task's environment."""
        run = python_run(tmp_path, "os:getenv", inputs={"key": "FORGE_TASK"})
        assert (await ProcessExecutor().submit(run)).outputs == {"return": "py"}

    async def test_local_function_is_refused(self) -> None:
        """A lambda cannot be re-imported in a child, so it fails with a clear error."""
        run = TaskRun(run_id="r", task="f", attempt=1, kind="python", func=lambda: 1)
        result = await ProcessExecutor().submit(run)
        assert result.status == "failed"
        assert "importable" in result.error

    async def test_module_level_func_is_re_imported(self, tmp_path: Path) -> None:
        """A module-level func is run in the child by its module and name."""
        run = TaskRun(run_id="r", task="f", attempt=1, kind="python", func=json.dumps,
                      inputs={"obj": {"a": 1}})
        assert (await ProcessExecutor().submit(run)).outputs == {"return": '{"a": 1}'}

    async def test_injected_runtime_is_used(self, tmp_path: Path) -> None:
        """Command tasks go through the runtime passed to the constructor."""
        runtime = ProcessRuntime()
        executor = ProcessExecutor(runtime=runtime)
        assert executor.runtime is runtime
        run = TaskRun(run_id="r", task="pwd", attempt=1, log_path=tmp_path / "log",
                      container=_spec("pwd", workdir=str(tmp_path)))
        assert (await executor.submit(run)).status == "succeeded"
        assert (tmp_path / "log").read_text().strip() == os.path.realpath(tmp_path)


def _spec(*argv: str, **fields: Any) -> Any:
    from forge_core.abc import ContainerSpec

    return ContainerSpec(command=list(argv), **fields)
