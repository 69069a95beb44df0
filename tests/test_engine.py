"""The DAG engine end to end: real child processes, a real SQLite state file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from forge_core import plugins
from forge_core.abc import ContainerSpec, Handle
from forge_core.dag._rules import decide, retry_delay
from forge_core.events import Event, EventBus
from forge_core.exceptions import ConfigError, RunLocked
from forge_core.runner import drive_run, queue_run, resume_run, retry_run, run_workflow
from forge_core.runtime.process import ProcessRuntime
from forge_core.spec import HookSpec, TaskSpec, TriggerRule, WorkflowSpec
from forge_core.state import StateStore

pytestmark = pytest.mark.anyio

PY = sys.executable


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "home" / "state.db")


def py(code: str) -> tuple[str, ...]:
    return (PY, "-c", code)


def workflow(*tasks: TaskSpec, **kw: Any) -> WorkflowSpec:
    return WorkflowSpec(name=kw.pop("name", "wf"), tasks=tasks, **kw)


async def run(spec: WorkflowSpec, store: StateStore, tmp_path: Path, **kw: Any) -> Any:
    events: list[Event] = kw.pop("events", [])
    bus = EventBus()
    bus.subscribe(events.append)
    return await run_workflow(spec, store=store, home=tmp_path / "home", bus=bus, **kw)


def states(record: Any) -> dict[str, str]:
    return {t.name: t.state for t in record.tasks}


class TestReadySet:
    async def test_a_task_starts_as_soon_as_its_own_dependencies_finish(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """'fast_child' starts while the unrelated slow task is still running."""
        gate = tmp_path / "gate"
        spec = workflow(
            TaskSpec(name="slow", command=py(
                f"import os,time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)")),
            TaskSpec(name="fast", command=("true",)),
            TaskSpec(name="fast_child", command=("touch", str(gate)), depends_on=("fast",)),
            concurrency=3,
        )
        record = await run(spec, store, tmp_path)
        assert states(record) == {"slow": "succeeded", "fast": "succeeded", "fast_child": "succeeded"}

    async def test_the_concurrency_limit_is_never_exceeded(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """With concurrency 2, no more than two task processes are alive at once."""
        live = tmp_path / "live"
        live.mkdir()
        code = ("import os,sys,time\n"
                f"d={str(live)!r}\n"
                "p=os.path.join(d,str(os.getpid())); open(p,'w').close()\n"
                "n=len(os.listdir(d)); time.sleep(0.1); os.remove(p)\n"
                "open(os.environ['FORGE_OUTPUT'],'w').write(f'seen={n}')")
        spec = workflow(*(TaskSpec(name=f"t{i}", command=py(code)) for i in range(6)), concurrency=2)
        record = await run(spec, store, tmp_path)
        assert all(s == "succeeded" for s in states(record).values())
        assert max(int(t.outputs["seen"]) for t in record.tasks) <= 2


    async def test_the_first_tasks_start_before_a_large_ready_set_is_all_queued(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A worker starts its task as soon as it is queued; queueing the rest of the
        batch (all forty tasks are ready at once) goes on while it runs."""
        events: list[Event] = []
        spec = workflow(*(TaskSpec(name=f"t{i}", command=("true",)) for i in range(40)),
                        concurrency=2)
        record = await run(spec, store, tmp_path, events=events)
        assert all(s == "succeeded" for s in states(record).values())
        kinds = [e.kind for e in events if e.task]
        last_queued = max(i for i, kind in enumerate(kinds) if kind == "task.queued")
        assert kinds.index("task.started") < last_queued

class TestRetries:
    async def test_a_flaky_task_is_retried_until_it_succeeds(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A task failing twice and then succeeding ends succeeded after three attempts."""
        counter = tmp_path / "count"
        code = (f"import pathlib,sys\np=pathlib.Path({str(counter)!r})\n"
                "n=int(p.read_text()) if p.exists() else 0\np.write_text(str(n+1))\n"
                "sys.exit(0 if n>=2 else 1)")
        events: list[Event] = []
        spec = workflow(TaskSpec(name="flaky", command=py(code), retries=3, retry_delay=0.01))
        record = await run(spec, store, tmp_path, events=events)
        task = record.tasks[0]
        assert task.state == "succeeded"
        assert [a.state for a in task.attempts] == ["failed", "failed", "succeeded"]
        assert [e.kind for e in events].count("task.retrying") == 2

    async def test_a_task_that_keeps_failing_fails_after_its_retries(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """retries=2 means three attempts, then failed, and the run fails."""
        spec = workflow(TaskSpec(name="bad", command=("false",), retries=2, retry_delay=0.0))
        record = await run(spec, store, tmp_path)
        assert record.state == "failed"
        assert [a.exit_code for a in record.tasks[0].attempts] == [1, 1, 1]

    def test_backoff_grows_exponentially_and_is_capped(self) -> None:
        """Without jitter the delays double and stop at max_retry_delay."""
        task = TaskSpec(name="t", command=("true",), retry_delay=1, retry_backoff=2,
                        max_retry_delay=5, retry_jitter=False)
        assert [retry_delay(task, n) for n in range(1, 6)] == [1, 2, 4, 5, 5]

    def test_jitter_keeps_the_delay_between_half_and_all_of_it(self) -> None:
        """Equal jitter: every delay lies in [d/2, d]."""
        import random

        task = TaskSpec(name="t", command=("true",), retry_delay=8, retry_backoff=1)
        rng = random.Random(7)
        delays = {retry_delay(task, 1, rng) for _ in range(50)}
        assert all(4 <= d <= 8 for d in delays)
        assert len(delays) > 1


class TestTimeouts:
    async def test_a_timeout_kills_the_whole_process_tree(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A task and the grandchild it spawned are both gone after its timeout."""
        pidfile = tmp_path / "grandchild.pid"
        code = ("import subprocess,sys,time\n"
                f"p=subprocess.Popen([{PY!r},'-c','import time; time.sleep(300)'])\n"
                f"open({str(pidfile)!r},'w').write(str(p.pid))\n"
                "time.sleep(300)")
        spec = workflow(TaskSpec(name="hang", command=py(code), timeout=1.0, grace=0.5))
        record = await run(spec, store, tmp_path)
        attempt = record.tasks[0].attempts[0]
        assert attempt.state == "timed_out"
        pid = int(pidfile.read_text())
        assert _gone(pid), "the grandchild survived the timeout"


def _gone(pid: int) -> bool:
    for _ in range(100):  # reaping by init may lag a moment
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class TestTriggerRules:
    @pytest.mark.parametrize(
        ("rule", "upstream", "expected"),
        [
            (TriggerRule.ALL_SUCCESS, ["succeeded", "succeeded"], "run"),
            (TriggerRule.ALL_SUCCESS, ["succeeded", "failed"], "upstream_failed"),
            (TriggerRule.ALL_SUCCESS, ["succeeded", "skipped"], "skipped"),
            (TriggerRule.ALL_SUCCESS, ["succeeded", "running"], "wait"),
            (TriggerRule.ALL_FAILED, ["failed", "upstream_failed"], "run"),
            (TriggerRule.ALL_FAILED, ["failed", "succeeded"], "skipped"),
            (TriggerRule.ALL_DONE, ["failed", "skipped"], "run"),
            (TriggerRule.ALL_DONE, ["failed", "running"], "wait"),
            (TriggerRule.ONE_SUCCESS, ["succeeded", "running"], "run"),
            (TriggerRule.ONE_SUCCESS, ["failed", "failed"], "upstream_failed"),
            (TriggerRule.ONE_FAILED, ["failed", "running"], "run"),
            (TriggerRule.ONE_FAILED, ["succeeded", "succeeded"], "skipped"),
            (TriggerRule.NONE_FAILED, ["succeeded", "skipped"], "run"),
            (TriggerRule.NONE_FAILED, ["succeeded", "failed"], "upstream_failed"),
            (TriggerRule.NONE_SKIPPED, ["succeeded", "failed"], "run"),
            (TriggerRule.NONE_SKIPPED, ["succeeded", "skipped"], "skipped"),
        ],
    )
    def test_decisions_follow_the_upstream_states(
        self, rule: TriggerRule, upstream: list[str], expected: str
    ) -> None:
        """Each rule decides run / wait / skipped / upstream_failed as Airflow does."""
        assert decide(rule, upstream) == expected

    async def test_failure_propagates_and_cleanup_still_runs(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A failed task marks its dependents upstream_failed; an all_done task still runs;
        a one_failed alert fires."""
        spec = workflow(
            TaskSpec(name="a", command=("false",)),
            TaskSpec(name="b", command=("true",), depends_on=("a",)),
            TaskSpec(name="c", command=("true",), depends_on=("b",)),
            TaskSpec(name="alert", command=("true",), depends_on=("a",),
                     trigger_rule=TriggerRule.ONE_FAILED),
            TaskSpec(name="cleanup", command=("true",), depends_on=("c",),
                     trigger_rule=TriggerRule.ALL_DONE),
        )
        record = await run(spec, store, tmp_path)
        assert states(record) == {"a": "failed", "b": "upstream_failed", "c": "upstream_failed",
                                  "alert": "succeeded", "cleanup": "succeeded"}
        assert record.state == "failed"

    async def test_a_skip_exit_code_skips_and_skips_propagate(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """Exit code 99 with skip_exit_code 99 is skipped; all_success dependents skip too."""
        spec = workflow(
            TaskSpec(name="maybe", command=py("import sys; sys.exit(99)"), skip_exit_code=99),
            TaskSpec(name="after", command=("true",), depends_on=("maybe",)),
        )
        record = await run(spec, store, tmp_path)
        assert states(record) == {"maybe": "skipped", "after": "skipped"}
        assert record.state == "succeeded"


class TestDataFlow:
    async def test_outputs_reach_downstream_commands_and_env_as_data(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """key=value and JSON outputs fill later argv and env, params too."""
        seen = tmp_path / "seen"
        spec = workflow(
            TaskSpec(name="kv", command=py(
                "import os; open(os.environ['FORGE_OUTPUT'],'w').write('rows=42\\nname=a b')")),
            TaskSpec(name="js", command=py(
                "import os,json; json.dump({'n': 7}, open(os.environ['FORGE_OUTPUT'],'w'))")),
            TaskSpec(name="use", depends_on=("kv", "js"),
                     command=(*py(f"import sys,os; open({str(seen)!r},'w').write("
                                  "repr(sys.argv[1:]) + os.environ['N'])"),
                              "${{ tasks.kv.outputs.rows }}", "${{ tasks.kv.outputs.name }}",
                              "${{ params.day }}"),
                     env={"N": "${{ tasks.js.outputs.n }}"}),
            params={"day": "monday"},
        )
        record = await run(spec, store, tmp_path, params={"day": "tuesday"})
        assert record.state == "succeeded"
        assert seen.read_text() == "['42', 'a b', 'tuesday']7"

    @pytest.mark.parametrize(("written", "says"), [
        ("'x' * (1 << 20) + 'yz'", "holds more than 1 MiB; write bulk data to a file"),
        ("'{\"n\": '", "is not valid JSON"),
        ("'no equals sign here'", "line 1 is not key=value"),
    ])
    async def test_an_output_file_that_cannot_be_read_fails_its_task_saying_why(
        self, store: StateStore, tmp_path: Path, written: str, says: str
    ) -> None:
        """Too big (read no further than the limit), broken JSON or a line without '=':
        the task fails with the reason, and its dependents do not run."""
        spec = workflow(
            TaskSpec(name="out", command=py(
                f"import os; open(os.environ['FORGE_OUTPUT'],'w').write({written})")),
            TaskSpec(name="after", command=("true",), depends_on=("out",)),
        )
        record = await run(spec, store, tmp_path)
        assert states(record) == {"out": "failed", "after": "upstream_failed"}
        assert says in record.tasks[0].attempts[-1].error

    async def test_values_that_are_not_strings_reach_commands_as_json_text(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A boolean, a null, a list and a number, from params and JSON outputs, reach argv,
        env and FORGE_PARAM_* as YAML and JSON users write them (true, not True)."""
        seen = tmp_path / "seen"
        spec = workflow(
            TaskSpec(name="js", command=py(
                "import os,json; json.dump({'ok': True, 'none': None},"
                " open(os.environ['FORGE_OUTPUT'],'w'))")),
            TaskSpec(name="use", depends_on=("js",),
                     command=(*py(f"import sys,os; open({str(seen)!r},'w').write(repr(["
                                  "*sys.argv[1:], os.environ['OK'], os.environ['FORGE_PARAM_FLAG'],"
                                  " os.environ['FORGE_PARAM_TAGS']]))"),
                              "${{ tasks.js.outputs.ok }}", "${{ tasks.js.outputs.none }}",
                              "${{ params.tags }}", "${{ params.n }}"),
                     env={"OK": "${{ params.flag }}"}),
            params={"flag": False, "tags": ["a", "b"], "n": 2.5},
        )
        record = await run(spec, store, tmp_path)
        assert record.state == "succeeded"
        assert seen.read_text() == repr(["true", "null", '["a", "b"]', "2.5", "false", "false",
                                         '["a", "b"]'])

    async def test_a_template_with_no_value_fails_its_task_before_it_starts(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """An output a command needs but its upstream task never wrote: the attempt fails
        saying which, nothing is started, and it does not end before it began."""
        ran = tmp_path / "ran"
        spec = workflow(
            TaskSpec(name="quiet", command=("true",)),
            TaskSpec(name="use", depends_on=("quiet",),
                     command=("touch", str(ran), "${{ tasks.quiet.outputs.rows }}")),
        )
        record = await run(spec, store, tmp_path)
        assert states(record) == {"quiet": "succeeded", "use": "failed"}
        attempt = record.tasks[1].attempts[-1]
        assert "${{ tasks.quiet.outputs.rows }} has no value" in attempt.error
        assert not ran.exists()
        assert attempt.started_at is not None
        assert attempt.finished_at is not None
        assert attempt.finished_at >= attempt.started_at

    async def test_template_values_never_become_shell_code(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A param holding $(touch …) in a shell task is echoed, not executed."""
        pwned = tmp_path / "pwned"
        out = tmp_path / "out"
        spec = workflow(
            TaskSpec(name="sh", shell=True,
                     command=f'echo "${{{{ params.evil }}}}" > {out}'),
            params={"evil": "x"},
        )
        evil = f"$(touch {pwned}); `touch {pwned}`"
        record = await run(spec, store, tmp_path, params={"evil": evil})
        assert record.state == "succeeded"
        assert not pwned.exists()
        assert out.read_text().strip() == evil

    async def test_an_undeclared_param_is_refused_before_anything_runs(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """-p for a param the workflow does not declare is a config error."""
        spec = workflow(TaskSpec(name="t", command=("true",)), params={"day": "x"})
        with pytest.raises(ConfigError, match="no param 'dya'"):
            await run(spec, store, tmp_path, params={"dya": "y"})
        assert store.list_runs() == []

    async def test_a_param_given_as_text_takes_its_defaults_type(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """-p gives text; a Python task still gets an int, a float, a bool and a list where
        the declared defaults are those, and text where the default is text."""
        def show(n: int, ratio: float, dry: bool, tags: list[str], name: str) -> dict[str, Any]:
            return {"types": [type(v).__name__ for v in (n, ratio, dry, tags, name)],
                    "sum": n + 1, "tags": tags}

        spec = workflow(TaskSpec(name="show", func=show, python="tests:show"),
                        params={"n": 3, "ratio": 0.5, "dry": False, "tags": ["a"], "name": "x"})
        given = {"n": "7", "ratio": "2", "dry": "yes", "tags": '["b", "c"]', "name": "5"}
        record = await run(spec, store, tmp_path, params=given)
        assert record.tasks[0].outputs == {
            "types": ["int", "float", "bool", "list", "str"], "sum": 8, "tags": ["b", "c"]}

    @pytest.mark.parametrize(("name", "text", "says"), [
        ("n", "seven", "param 'n' takes a whole number (its default is 3), got 'seven'"),
        ("dry", "maybe", "param 'dry' takes true or false"),
        ("tags", "b,c", "param 'tags' takes a JSON list"),
    ])
    async def test_a_param_that_cannot_take_its_defaults_type_is_refused(
        self, store: StateStore, tmp_path: Path, name: str, text: str, says: str
    ) -> None:
        """Nothing runs, and the error says what the param takes."""
        spec = workflow(TaskSpec(name="t", command=("true",)),
                        params={"n": 3, "dry": False, "tags": ["a"]})
        with pytest.raises(ConfigError, match=re.escape(says)):
            await run(spec, store, tmp_path, params={name: text})
        assert store.list_runs() == []

    async def test_python_tasks_get_params_and_upstream_outputs_by_name(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A Python task's parameters are filled from params and upstream outputs."""
        def extract(day: str) -> dict[str, Any]:
            return {"rows": 3, "day": day}

        def load(extract: dict[str, Any]) -> dict[str, Any]:
            return {"total": extract["rows"] * 2, "day": extract["day"]}

        spec = workflow(
            TaskSpec(name="extract", func=extract, python="tests:extract"),
            TaskSpec(name="load", func=load, python="tests:load", depends_on=("extract",)),
            params={"day": "sun"},
        )
        record = await run(spec, store, tmp_path)
        assert record.tasks[1].outputs == {"total": 6, "day": "sun"}


class TestSlaAndHooks:
    async def test_a_missed_sla_is_recorded_and_announced(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A task still running past its SLA gets sla_missed and an sla.missed event."""
        events: list[Event] = []
        spec = workflow(TaskSpec(name="slow", command=("sleep", "1.5"), sla=0.3))
        record = await run(spec, store, tmp_path, events=events)
        assert record.tasks[0].sla_missed
        assert any(e.kind == "sla.missed" and e.task == "slow" for e in events)
        assert any(e.kind == "sla.missed" for e in store.events(record.run_id))

    async def test_on_failure_hook_runs_and_its_failure_never_fails_the_run(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """on_failure runs its command with the payload; a broken on_success hook is only
        recorded as hook.failed."""
        got = tmp_path / "payload.json"
        spec = workflow(
            TaskSpec(name="ok", command=("true",), on_success="broken"),
            TaskSpec(name="bad", command=("false",), on_failure="alert"),
            hooks={
                "alert": HookSpec(command=f"cat > {got}", shell=True),
                "broken": HookSpec(command=("false",)),
            },
        )
        record = await run(spec, store, tmp_path)
        assert states(record) == {"ok": "succeeded", "bad": "failed"}
        assert '"task": "bad"' in got.read_text().replace('":"', '": "')
        kinds = [(e.kind, e.data.get("hook")) for e in store.events(record.run_id)]
        assert ("hook.failed", "broken") in kinds
        assert ("hook.succeeded", "alert") in kinds
        assert store.pending_hooks() == []  # made, failed or not: out of the outbox


class TestRetry:
    @staticmethod
    def spec(ledger: Path, flag: Path) -> WorkflowSpec:
        """ok -> flaky -> after, and other beside them; flaky fails until ``flag`` exists.
        Every task appends its name to ``ledger`` each time it runs."""
        def note(name: str, then: str = "") -> tuple[str, ...]:
            return py(f"open({str(ledger)!r}, 'a').write({name!r} + ' '){then}")
        return workflow(
            TaskSpec(name="ok", command=note("ok")),
            TaskSpec(name="flaky", command=note(
                "flaky", f"; import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)"),
                depends_on=("ok",), retries=1, retry_delay=0),
            TaskSpec(name="after", command=note("after"), depends_on=("flaky",)),
            TaskSpec(name="other", command=note("other")),
        )

    async def test_a_failed_run_runs_its_failed_tasks_and_what_follows_again(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """Retrying runs the failed task (its retries afresh) and its dependents; the tasks
        that succeeded keep their results and do not run again; earlier attempts stay."""
        ledger, flag = tmp_path / "ledger", tmp_path / "flag"
        spec = self.spec(ledger, flag)
        home = tmp_path / "home"
        first = await run(spec, store, tmp_path)
        assert states(first) == {"ok": "succeeded", "flaky": "failed",
                                 "after": "upstream_failed", "other": "succeeded"}
        again = await retry_run(spec, first.run_id, store=store, home=home)  # still failing
        assert again.state == "failed"
        flaky = next(t for t in again.tasks if t.name == "flaky")
        assert [a.state for a in flaky.attempts] == ["failed"] * 4  # two more: retries afresh
        flag.touch()
        done = await retry_run(spec, first.run_id, store=store, home=home)
        assert (done.run_id, done.state) == (first.run_id, "succeeded")
        assert states(done) == dict.fromkeys(("ok", "flaky", "after", "other"), "succeeded")
        attempts = {t.name: [a.state for a in t.attempts] for t in done.tasks}
        assert attempts["flaky"] == ["failed"] * 4 + ["succeeded"]
        assert attempts["ok"] == attempts["other"] == attempts["after"] == ["succeeded"]
        assert sorted(ledger.read_text().split()) == ["after", "flaky", "flaky", "flaky", "flaky",
                                                      "flaky", "ok", "other"]

    async def test_named_tasks_run_again_in_a_succeeded_run(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """--task reruns a task that succeeded (and what follows it); with nothing failed
        and nothing named, the run is left as it is."""
        ledger, flag = tmp_path / "ledger", tmp_path / "flag"
        flag.touch()
        spec = self.spec(ledger, flag)
        home = tmp_path / "home"
        first = await run(spec, store, tmp_path)
        unchanged = await retry_run(spec, first.run_id, store=store, home=home)
        assert unchanged == first
        done = await retry_run(spec, first.run_id, store=store, home=home, tasks=["flaky"])
        assert done.state == "succeeded"
        assert sorted(ledger.read_text().split()) == ["after", "after", "flaky", "flaky", "ok",
                                                      "other"]

    async def test_only_a_finished_run_with_known_tasks_is_retried(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A run that has not finished is for resume; a task the run lacks is named."""
        spec = self.spec(tmp_path / "ledger", tmp_path / "flag")
        home = tmp_path / "home"
        first = await run(spec, store, tmp_path)
        with pytest.raises(ConfigError, match="has no task 'nope'; tasks: ok, flaky"):
            await retry_run(spec, first.run_id, store=store, home=home, tasks=["nope"])
        store.set_run_state(first.run_id, "running")
        with pytest.raises(ConfigError, match="is running, not finished; to finish it: "
                                              "forge workflow resume"):
            await retry_run(spec, first.run_id, store=store, home=home)


class TestDurability:
    async def test_a_run_asked_to_cancel_before_it_starts_runs_nothing(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """A cancel requested while the run is still queued (forge workflow cancel) is
        seen when its engine starts: no task runs, everything is cancelled, and the request
        stands until the run is resumed."""
        ran = tmp_path / "ran"
        spec = workflow(TaskSpec(name="a", command=("touch", str(ran))),
                        TaskSpec(name="b", command=("true",), depends_on=("a",)))
        run_id = queue_run(spec, store)
        store.request_cancel(run_id)
        record = await drive_run(spec, run_id, store=store, home=tmp_path / "home")
        assert record.state == "cancelled"
        assert states(record) == {"a": "cancelled", "b": "cancelled"}
        assert not ran.exists()
        assert store.cancel_requested(run_id)

    async def test_every_event_is_in_the_store_when_it_is_announced(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """Group commits still store each event (and its task state) before the bus sees it."""
        seen: list[str] = []
        checked: list[str] = []

        def stored(event: Event) -> None:  # an assertion here fails ``seen == checked``
            seen.append(event.kind)
            kinds = [(e.kind, e.task) for e in store.events(event.run_id, limit=100_000)]
            assert (event.kind, event.task) in kinds
            if event.task and event.kind in ("task.queued", "task.started", "task.succeeded"):
                task = next(t for t in store.tasks(event.run_id) if t.name == event.task)
                assert task.state != "pending"
            checked.append(event.kind)

        bus = EventBus()
        bus.subscribe(stored)
        spec = workflow(*(TaskSpec(name=f"t{i}", command=("true",)) for i in range(20)),
                        TaskSpec(name="join", command=("true",),
                                 depends_on=tuple(f"t{i}" for i in range(20))), concurrency=2)
        record = await run_workflow(spec, store=store, home=tmp_path / "home", bus=bus)
        assert record.state == "succeeded"
        assert seen == checked
        assert checked.count("task.succeeded") == 21
        assert [a.state for t in record.tasks for a in t.attempts] == ["succeeded"] * 21

    async def test_what_a_task_depends_on_is_in_the_store_before_it_starts(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """Starts are committed in groups, yet a task's process starts only once the end of
        every task it depends on is committed (a kill -9 cannot undo what it started on).
        The runtime is the real process runtime, reading the store as each child starts."""
        seen: dict[str, dict[str, str]] = {}

        class Probe(ProcessRuntime):
            async def start(self, spec: ContainerSpec) -> Handle:
                task, run_id = spec.labels["forge.task"], spec.labels["forge.run"]
                seen[task] = {t.name: t.state for t in store.tasks(run_id)}
                return await super().start(spec)

        spec = workflow(TaskSpec(name="a", command=("true",)),
                        TaskSpec(name="b", command=("true",), depends_on=("a",)),
                        TaskSpec(name="c", command=("true",), depends_on=("a", "b")),
                        runtime="probe")
        with plugins.register("runtime", "probe", Probe):
            record = await run(spec, store, tmp_path)
        assert record.state == "succeeded"
        assert seen["b"]["a"] == "succeeded"
        assert (seen["c"]["a"], seen["c"]["b"]) == ("succeeded", "succeeded")

    async def test_a_start_the_database_never_got_is_resumed_as_an_interrupted_attempt(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """Forge SIGKILLed right after writing an attempt's start ahead, before a group commit
        took it: the resumed run records that attempt as interrupted and runs attempt 2."""
        run_id = store.create_run("wf", ["t"])
        killed = subprocess.run([PY, "-c", textwrap.dedent(f"""
            import os, signal
            from pathlib import Path
            from forge_core.state import StateStore
            from forge_core.state._journal import Journal
            journal = Journal(StateStore(Path({str(store.path)!r})), {run_id!r})
            journal.start_attempt("t", 1, None)
            os.kill(os.getpid(), signal.SIGKILL)
        """)], check=False)
        assert killed.returncode == -signal.SIGKILL
        assert store.get_run(run_id).tasks[0].attempts == ()  # only the start file has it
        record = await resume_run(workflow(TaskSpec(name="t", command=("true",))), run_id,
                                  store=store, home=tmp_path / "home")
        assert record.state == "succeeded"
        assert [(a.number, a.state) for a in record.tasks[0].attempts] == [
            (1, "interrupted"), (2, "succeeded")]
        assert not (Path(f"{store.path}-starts") / run_id).exists()

    async def test_a_second_engine_on_a_live_run_is_refused(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """While one engine drives a run, resume_run from another owner raises RunLocked."""
        spec = workflow(TaskSpec(name="t", command=("sleep", "1")))
        result: dict[str, Any] = {}

        async def first() -> None:
            result["record"] = await run(spec, store, tmp_path)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            while not store.list_runs(states=["running"]):
                await anyio.sleep(0.01)
            run_id = store.list_runs()[0].run_id
            with pytest.raises(RunLocked):
                await resume_run(spec, run_id, store=store, home=tmp_path / "home")
        assert result["record"].state == "succeeded"

    async def test_a_cancelled_run_leaves_no_log_file_of_a_task_that_never_started(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """Tasks in line that never start leave no log file behind (nor a spare file the
        runtime kept for logs)."""
        started = tmp_path / "started"
        spec = workflow(TaskSpec(name="t0", command=py(
                            f"import time; print('up', flush=True); "
                            f"open({str(started)!r}, 'w').close(); time.sleep(30)"),
                            grace=0.5),
                        *(TaskSpec(name=f"t{i}", command=("true",)) for i in range(1, 5)),
                        concurrency=1)
        with anyio.move_on_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, spec, store, tmp_path)
                while not started.exists():
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        run_id = store.list_runs()[0].run_id
        assert os.listdir(tmp_path / "home" / "logs" / run_id) == ["t0.1.log"]
        assert states(store.get_run(run_id))["t1"] == "cancelled"

    async def test_cancelling_a_run_stops_tasks_and_records_them_cancelled(
        self, store: StateStore, tmp_path: Path
    ) -> None:
        """Cancellation (what Ctrl-C does) leaves the run and its running task cancelled."""
        spec = workflow(TaskSpec(name="t", command=("sleep", "30"), grace=0.5),
                        TaskSpec(name="u", command=("true",), depends_on=("t",)))
        with anyio.move_on_after(1.0):
            await run(spec, store, tmp_path)
        record = store.get_run(store.list_runs()[0].run_id)
        assert record.state == "cancelled"
        assert states(record) == {"t": "cancelled", "u": "cancelled"}

