"""The ``forge`` command as a person uses it: real subprocesses, a real state file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import textwrap
import time
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from helpers import FORGE, PY, wait_for

from forge_core.testing import FifoProbe


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FORGE_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}


def forge(*args: str, cwd: Path, env: dict[str, str],
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FORGE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def start_waiting_run(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    """``forge run w`` in the background, w's one task ``wait`` running until the returned
    gate file exists; returns once the task has started."""
    started, gate = tmp_path / "started", tmp_path / "gate"
    write(tmp_path / "forge.yml", f"""
        workflows:
          w:
            tasks:
              - name: wait
                shell: true
                command: touch {started}; while [ ! -e {gate} ]; do sleep 0.05; done
    """)
    proc = subprocess.Popen([*FORGE, "run", "w"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(started.exists)
    except BaseException:
        gate.touch()
        proc.kill()
        raise
    return proc, gate


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: ")


class TestRun:
    def test_runs_a_workflow_by_name_from_the_discovered_config(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """forge run NAME finds forge.yml upward from a subdirectory and exits 0."""
        write(tmp_path / "forge.yml", """
            workflows:
              hello:
                tasks:
                  - name: greet
                    command: echo hi
        """)
        sub = tmp_path / "a" / "b"
        sub.mkdir(parents=True)
        result = forge("run", "hello", "--json", cwd=sub, env=env)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["state"] == "succeeded"
        assert record["run_id"]

    def test_a_failing_workflow_exits_1_and_says_where_to_look(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A failed task makes the exit code 1 and names the task and its logs."""
        write(tmp_path / "forge.yml", """
            workflows:
              w:
                tasks:
                  - {name: boom, command: "false"}
        """)
        result = forge("run", "w", cwd=tmp_path, env=env)
        assert result.returncode == 1
        assert "boom failed: exit code 1" in result.stdout
        assert "forge logs" in result.stdout

    def test_runs_a_python_workflow_file(self, tmp_path: Path, env: dict[str, str]) -> None:
        """forge run flow.py runs Workflow objects built with the Python API."""
        write(tmp_path / "flow.py", """
            from forge_core.flow import Workflow

            wf = Workflow("py", params={"n": 2})

            @wf.task()
            def make(n):
                return {"value": int(n) * 21}

            @wf.task(depends_on=[make])
            def check(make):
                assert make["value"] == 42
        """)
        result = forge("run", "flow.py", "-p", "n=2", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        tasks = {t["name"]: t for t in json.loads(result.stdout)["tasks"]}
        assert tasks["make"]["outputs"] == {"value": 42}

    def test_dry_run_prints_the_plan_and_runs_nothing(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """--dry-run lists the steps with parallel tasks together and creates no run."""
        write(tmp_path / "forge.yml", """
            workflows:
              w:
                tasks:
                  - {name: a, command: "true"}
                  - {name: b, command: "true", depends_on: [a]}
                  - {name: c, command: "true", depends_on: [a]}
        """)
        result = forge("run", "w", "--dry-run", cwd=tmp_path, env=env)
        assert result.returncode == 0
        assert "step 2: b, c (in parallel)" in result.stdout
        assert "no runs yet" in forge("workflow", "history", cwd=tmp_path, env=env).stdout

    def test_seed_workflow_runs_as_written(self, tmp_path: Path, env: dict[str, str]) -> None:
        """The issue's daily_etl form, shipped in examples/, loads and runs to success."""
        example = tmp_path / "daily_etl"
        shutil.copytree(Path(__file__).parent.parent / "examples" / "daily_etl", example,
                        ignore=shutil.ignore_patterns("data"))
        env = {**env, "PATH": f"{Path(PY).parent}:{env['PATH']}"}
        result = forge("workflow", "run", "daily_etl", "--config", "forge.yml", cwd=example, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        logs = forge("logs", "last", "load", cwd=example, env=env)
        assert logs.stdout.startswith("loaded ")

    def test_sla_at_risk_is_told_by_a_foreground_run(self, tmp_path: Path, env: dict[str, str]) -> None:
        """History says extract takes 100 s, so `forge run` warns that load (SLA 60 s) is at risk."""
        from forge_core.state import StateStore

        from .test_engine_sla import record_history

        write(tmp_path / "forge.yml", """
            workflows:
              etl:
                tasks:
                  - {name: extract, command: "true"}
                  - {name: load, command: "true", depends_on: [extract], sla: 60}
                  - {name: report, command: "true", depends_on: [load]}
        """)
        home = Path(env["FORGE_HOME"])
        home.mkdir()
        record_history(StateStore(home / "state.db"), {"extract": 100.0, "load": 5.0, "report": 1.0})
        result = forge("run", "etl", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        warned = [ln for ln in result.stderr.splitlines() if " sla.at_risk " in ln]
        assert len(warned) == 1, result.stderr
        assert " load " in warned[0]
        assert "sla=60" in warned[0]


class TestBadInput:
    @pytest.mark.parametrize(
        ("yaml_text", "expected"),
        [
            ("workflows:\n  w:\n    tasks:\n      - {name: a, command: x, retrys: 2}\n",
             "forge.yml:4: workflows.w.tasks[0]"),
            ("workflows:\n  w:\n    tasks:\n      - {name: a, command: x, depends_on: [zz]}\n",
             "forge.yml:4"),
            ("workflows:\n  w:\n    tasks:\n      - {name: a, command: x, depends_on: [b]}\n"
             "      - {name: b, command: x, depends_on: [a]}\n", "cycle"),
            ("workflows:\n  w:\n    tasks:\n      - {name: a, command: x, timeout: soon}\n",
             "forge.yml:4: workflows.w.tasks[0].timeout"),
            ("workflows:\n  w:\n    tasks: [\n", "forge.yml:"),
            ("workflows:\n  w:\n    schedule: '61 * * * *'\n    tasks: [{name: a, command: x}]\n",
             "forge.yml:3: workflows.w.schedule: schedule '61 * * * *' is not a cron expression"),
            ("workflows:\n  w:\n    schedule: '@daily'\n    timezone: Mars/Olympus\n"
             "    tasks: [{name: a, command: x}]\n",
             "forge.yml:4: workflows.w.timezone: unknown time zone 'Mars/Olympus'"),
        ],
    )
    def test_bad_config_is_one_line_per_problem_with_file_line_and_field(
        self, tmp_path: Path, env: dict[str, str], yaml_text: str, expected: str
    ) -> None:
        """validate exits 2 and names file, line and field; never a traceback."""
        (tmp_path / "forge.yml").write_text(yaml_text)
        result = forge("workflow", "validate", cwd=tmp_path, env=env)
        assert_clean_error(result)
        assert expected in result.stderr

    def test_validate_warns_of_a_hook_that_will_fail_when_called(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """on_failure naming nothing under hooks: and no command on PATH is valid (the seed
        form) but will fail when called: validate says so, with file, line and field, and
        still exits 0. A defined hook and a command on PATH get no warning."""
        write(tmp_path / "forge.yml", """
            hooks:
              page: {command: "true"}
            workflows:
              w:
                tasks:
                  - name: a
                    command: "true"
                    on_failure: email_alert
                    on_success: page
                    on_retry: echo retrying
        """)
        result = forge("workflow", "validate", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines() == [
            f"warning: {tmp_path / 'forge.yml'}:9: workflows.w.tasks[0].on_failure: "
            "'email_alert' is neither a hook under 'hooks:' nor a command on PATH; "
            "it will fail when called"]
        result = forge("workflow", "validate", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is True
        assert len(report["warnings"]) == 1
        assert "'email_alert'" in report["warnings"][0]

    def test_an_unknown_workflow_name_says_what_exists(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A typo in the workflow name suggests the close one."""
        write(tmp_path / "forge.yml", "workflows:\n  daily:\n    tasks:\n      - {name: a, command: x}\n")
        result = forge("run", "dialy", cwd=tmp_path, env=env)
        assert_clean_error(result)
        assert "daily" in result.stderr

    def test_a_missing_plugin_says_which_distribution_to_install(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """executor: grpc without forge-worker-grpc tells the user what to pip install."""
        write(tmp_path / "forge.yml", """
            workflows:
              w:
                executor: grpc
                tasks:
                  - {name: a, command: "true"}
        """)
        result = forge("run", "w", cwd=tmp_path, env=env)
        assert_clean_error(result)
        assert "pip install forge-worker-grpc" in result.stderr

    def test_no_config_anywhere_says_what_to_do(self, tmp_path: Path, env: dict[str, str]) -> None:
        """forge run with no forge.yml in sight is a usage error, not a crash."""
        result = forge("run", "x", cwd=tmp_path, env=env)
        assert_clean_error(result)

    @pytest.mark.parametrize("damage", ["not a database", "a directory", "home is a file"])
    def test_an_unusable_state_database_is_named_with_what_to_do(
        self, tmp_path: Path, env: dict[str, str], damage: str
    ) -> None:
        """A state.db that is not a database (or not a file, or under a FORGE_HOME that is a
        file) is one line naming it, not an internal error."""
        write(tmp_path / "forge.yml", "workflows:\n  w:\n    tasks:\n      - {name: a, command: x}\n")
        db = Path(env["FORGE_HOME"]) / "state.db"
        if damage == "a directory":
            db.mkdir(parents=True)
        elif damage == "home is a file":
            db.parent.write_text("")
        else:
            db.parent.mkdir(parents=True)
            db.write_text("these are not the pages of a SQLite file\n" * 200)
        for args in (("run", "w"), ("workflow", "history")):
            result = forge(*args, cwd=tmp_path, env=env)
            assert_clean_error(result, code=1)
            assert f"cannot use the state database {db}" in result.stderr
            assert "internal error" not in result.stderr
            assert "FORGE_HOME" in result.stderr

    def test_a_negative_keep_is_refused_and_deletes_nothing(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """`system prune --keep -1` is a usage error (SQLite would read OFFSET -1 as 0 and
        delete every finished run)."""
        write(tmp_path / "forge.yml", "workflows:\n  w:\n    tasks:\n      - {name: a, command: 'true'}\n")
        assert forge("run", "w", cwd=tmp_path, env=env).returncode == 0
        result = forge("system", "prune", "--keep", "-1", cwd=tmp_path, env=env)
        assert result.returncode == 2
        assert "--keep" in result.stderr
        assert "Traceback" not in result.stderr
        history = forge("workflow", "history", "--json", cwd=tmp_path, env=env)
        assert len(json.loads(history.stdout)) == 1

    def test_a_bad_param_flag_says_how_to_write_it(self, tmp_path: Path, env: dict[str, str]) -> None:
        """-p without '=' is refused with the right form."""
        write(tmp_path / "forge.yml", "workflows:\n  w:\n    tasks:\n      - {name: a, command: x}\n")
        result = forge("run", "w", "-p", "oops", cwd=tmp_path, env=env)
        assert_clean_error(result)
        assert "-p key=value" in result.stderr


class TestCrashAndResume:
    def test_a_killed_run_resumes_without_rerunning_succeeded_tasks(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """SIGKILL forge mid-task; resume finishes the run; 'first' ran exactly once."""
        ledger = tmp_path / "ledger"
        gate = tmp_path / "gate"
        write(tmp_path / "forge.yml", f"""
            workflows:
              w:
                tasks:
                  - name: first
                    shell: true
                    command: echo first >> {ledger}
                  - name: middle
                    shell: true
                    command: echo middle >> {ledger}; while [ ! -e {gate} ]; do sleep 0.05; done
                    depends_on: [first]
                  - name: last
                    shell: true
                    command: echo last >> {ledger}
                    depends_on: [middle]
        """)
        proc = subprocess.Popen([*FORGE, "run", "w"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: ledger.exists() and "middle" in ledger.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gate.touch()
        history = json.loads(forge("workflow", "history", "--json", cwd=tmp_path, env=env).stdout)
        assert history[0]["state"] == "running"
        run_id = history[0]["run_id"]
        # for a person: the run's engine is gone, and what to type about it
        listed = forge("workflow", "history", cwd=tmp_path, env=env).stdout.split()
        assert listed[listed.index(run_id) + 2] == "interrupted"
        shown = forge("workflow", "show", run_id, cwd=tmp_path, env=env).stdout.splitlines()
        assert "running (its engine is gone)" in shown[0]
        assert shown[-1].startswith(f"finish it with: forge workflow resume {run_id}")
        rows = {line.split()[0]: line.split()[1:4] for line in shown[2:-1]}
        assert rows["middle"] == ["running", "1", "-"]  # how long it ran: unknown
        result = forge("workflow", "resume", run_id[:12], "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["state"] == "succeeded"
        lines = ledger.read_text().split()
        assert lines.count("first") == 1
        assert lines.count("last") == 1
        middle = next(t for t in record["tasks"] if t["name"] == "middle")
        assert [a["state"] for a in middle["attempts"]] == ["interrupted", "succeeded"]

    def test_cancel_stops_a_run_driven_by_another_forge_process(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """forge workflow cancel, from another terminal: the running task gets SIGTERM (its
        handler runs), the run and its unfinished tasks are recorded cancelled, cancel
        prints that and exits 0, and the forge run that drove it exits 1."""
        started, stopped = tmp_path / "started", tmp_path / "stopped"
        write(tmp_path / "forge.yml", f"""
            workflows:
              w:
                tasks:
                  - name: long
                    shell: true
                    command: "trap 'touch {stopped}; exit 3' TERM; touch {started}; sleep 60 & wait"
                  - {{name: after, command: "true", depends_on: [long]}}
        """)
        proc = subprocess.Popen([*FORGE, "run", "w"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_for(started.exists)
        result = forge("workflow", "cancel", "last", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1
        run_id = result.stdout.split()[1]
        assert result.stdout == f"run {run_id} cancelled\n"
        assert f"run {run_id} cancelled" in out
        assert stopped.exists()
        record = json.loads(forge("workflow", "show", run_id, "--json", cwd=tmp_path,
                                  env=env).stdout)
        assert {t["name"]: t["state"] for t in record["tasks"]} == {
            "long": "cancelled", "after": "cancelled"}

    def test_cancel_records_a_run_whose_engine_is_gone_and_resume_goes_on(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """After a kill -9, cancel records the run cancelled itself (no engine would); a
        later resume is asking it to go on, and it finishes."""
        proc, gate = start_waiting_run(tmp_path, env)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        result = forge("workflow", "cancel", "last", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["state"] == "cancelled"
        assert [(t["state"], [a["state"] for a in t["attempts"]]) for t in record["tasks"]] in (
            [("cancelled", ["cancelled"])], [("cancelled", [])])  # started, maybe uncommitted
        gate.touch()
        resumed = forge("workflow", "resume", record["run_id"], "--json", cwd=tmp_path, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["state"] == "succeeded"

    def test_retry_runs_a_failed_runs_failed_tasks_again(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """forge workflow retry last: the failed task and its dependent run again in the same
        run (exit 0 once they succeed); on a succeeded run it says there is nothing to retry."""
        flag = tmp_path / "flag"
        write(tmp_path / "forge.yml", f"""
            workflows:
              w:
                tasks:
                  - {{name: first, command: "true"}}
                  - {{name: check, command: "test -e {flag}", depends_on: [first]}}
                  - {{name: last, command: "true", depends_on: [check]}}
        """)
        failed = forge("run", "w", "--json", cwd=tmp_path, env=env)
        assert failed.returncode == 1
        flag.touch()
        result = forge("workflow", "retry", "last", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["run_id"] == json.loads(failed.stdout)["run_id"]
        assert {t["name"]: len(t["attempts"]) for t in record["tasks"]} == {
            "first": 1, "check": 2, "last": 1}
        again = forge("workflow", "retry", "last", cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr
        assert "succeeded: nothing failed to retry" in again.stderr

    def test_resuming_a_finished_run_changes_nothing(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A succeeded run is not driven again: same finish time, no new events, exit 0."""
        write(tmp_path / "forge.yml", "workflows:\n  w:\n    tasks:\n      - {name: a, command: 'true'}\n")
        done = json.loads(forge("run", "w", "--json", cwd=tmp_path, env=env).stdout)
        shown = forge("workflow", "show", done["run_id"], "--json", cwd=tmp_path, env=env)
        result = forge("workflow", "resume", "last", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert "already succeeded: nothing to resume" in result.stderr
        record = json.loads(result.stdout)
        assert (record["state"], record["finished_at"]) == ("succeeded", done["finished_at"])
        again = forge("workflow", "show", done["run_id"], "--json", cwd=tmp_path, env=env)
        assert again.stdout == shown.stdout
        with closing(sqlite3.connect(tmp_path / "home" / "state.db")) as db:
            kinds = [k for (k,) in db.execute("SELECT kind FROM events WHERE run_id = ?",
                                              (done["run_id"],))]
        assert kinds.count("run.finished") == 1
        assert "run.resumed" not in kinds

    @pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    def test_ctrl_c_or_sigterm_stops_tasks_gracefully_and_records_them_cancelled(
        self, tmp_path: Path, env: dict[str, str], signum: int, code: int
    ) -> None:
        """SIGINT (Ctrl-C) exits 130 and SIGTERM 143, after each running task got SIGTERM
        (its handler ran) and was recorded cancelled with the run."""
        started, stopped = tmp_path / "started", tmp_path / "stopped"
        write(tmp_path / "forge.yml", f"""
            workflows:
              w:
                tasks:
                  - name: long
                    shell: true
                    grace: 20
                    command: "trap 'touch {stopped}; exit 3' TERM; touch {started}; sleep 60 & wait"
        """)
        proc = subprocess.Popen([*FORGE, "run", "w"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(started.exists)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        assert "Traceback" not in err
        assert stopped.exists(), "the task was killed without its SIGTERM"
        show = json.loads(forge("workflow", "show", "last", "--json", cwd=tmp_path, env=env).stdout)
        assert show["state"] == "cancelled"
        assert show["tasks"][0]["state"] == "cancelled"

    def test_a_second_ctrl_c_stops_waiting_and_leaves_the_run_resumable(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A task that ignores SIGTERM holds the first Ctrl-C for its grace; a second one exits
        at once, the watchdog kills the task, and `forge workflow resume` finishes the run."""
        started, probe = tmp_path / "started", FifoProbe(tmp_path / "probe")
        write(tmp_path / "forge.yml", f"""
            workflows:
              w:
                tasks:
                  - name: stubborn
                    shell: true
                    grace: 300
                    command: >-
                      [ -e {started} ] || {{ trap '' TERM; exec 3>{probe.path};
                      touch {started}; sleep 300; }}
        """)
        errors = tmp_path / "stderr"
        try:
            with errors.open("w") as err_file:
                proc = subprocess.Popen([*FORGE, "run", "w"], cwd=tmp_path, env=env,
                                        stdout=subprocess.DEVNULL, stderr=err_file)
            wait_for(started.exists)
            proc.send_signal(signal.SIGINT)
            wait_for(lambda: "stopping" in errors.read_text())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130, errors.read_text()
            assert "forge workflow resume" in errors.read_text()
            assert anyio.run(probe.wait_closed), "the task outlived Forge's exit"
        finally:
            probe.close()
        show = json.loads(forge("workflow", "show", "last", "--json", cwd=tmp_path, env=env).stdout)
        assert show["state"] == "running"  # as a kill leaves it
        resumed = forge("workflow", "resume", "last", "--json", cwd=tmp_path, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["state"] == "succeeded"


class TestInspection:
    def test_show_of_a_live_run_counts_the_running_attempt_up_to_now(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """While a task runs, show gives the time it has run so far (not 0), and the run
        is not said to have lost its engine."""
        proc, gate = start_waiting_run(tmp_path, env)
        try:
            time.sleep(0.2)
            shown = forge("workflow", "show", "last", cwd=tmp_path, env=env).stdout.splitlines()
        finally:
            gate.touch()
            proc.wait(timeout=30)
        assert "running  started" in shown[0]
        assert "engine is gone" not in "\n".join(shown)
        name, state, attempts, took = shown[-1].split()[:4]
        assert (name, state, attempts) == ("wait", "running", "1")
        assert float(took.rstrip("s")) >= 0.2

    def test_history_show_and_logs_agree_with_what_ran(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """show lists every task with attempts and exit codes; logs prints an attempt."""
        write(tmp_path / "forge.yml", """
            workflows:
              w:
                tasks:
                  - {name: say, command: echo hello-from-say}
                  - {name: flaky, command: "false", retries: 1, retry_delay: 0, depends_on: [say]}
        """)
        forge("run", "w", cwd=tmp_path, env=env)
        show = forge("workflow", "show", "last", cwd=tmp_path, env=env).stdout
        assert "flaky" in show
        assert "failed" in show
        data = json.loads(forge("workflow", "show", "last", "--json", cwd=tmp_path, env=env).stdout)
        flaky = next(t for t in data["tasks"] if t["name"] == "flaky")
        assert [a["exit_code"] for a in flaky["attempts"]] == [1, 1]
        logs = forge("logs", "last", "say", cwd=tmp_path, env=env)
        assert logs.stdout.strip() == "hello-from-say"
        silent = forge("logs", "last", "flaky", cwd=tmp_path, env=env)  # wrote nothing
        assert (silent.returncode, silent.stdout.strip()) == (0, "(no output) exit code 1")
        missing = forge("logs", "last", "nope", cwd=tmp_path, env=env)
        assert_clean_error(missing)

    def test_plugins_list_shows_the_core_backends_as_usable(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """plugins list --json has the process runtime and the three core executors."""
        infos = json.loads(forge("plugins", "list", "--json", cwd=tmp_path, env=env).stdout)
        usable = {(i["group"], i["name"]) for i in infos if i["usable"]}
        assert {("runtime", "process"), ("executor", "local"), ("executor", "thread"),
                ("executor", "process"), ("queue", "sqlite")} <= usable

    def test_retention_and_prune_keep_the_newest_runs(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """retention: 2 keeps two runs; system prune --keep 1 keeps one and its logs."""
        write(tmp_path / "forge.yml", """
            workflows:
              w:
                retention: 2
                tasks:
                  - {name: a, command: echo x}
        """)
        for _ in range(3):
            forge("run", "w", cwd=tmp_path, env=env)
        runs = json.loads(forge("workflow", "history", "--json", cwd=tmp_path, env=env).stdout)
        assert len(runs) == 2
        forge("system", "prune", "--keep", "1", cwd=tmp_path, env=env)
        runs = json.loads(forge("workflow", "history", "--json", cwd=tmp_path, env=env).stdout)
        assert len(runs) == 1
        logs = sorted(p.name for p in (tmp_path / "home" / "logs").iterdir())
        assert logs == [runs[0]["run_id"]]
        usage = json.loads(forge("system", "usage", "--json", cwd=tmp_path, env=env).stdout)
        assert usage["rows"]["runs"] == 1

    def test_system_gc_removes_logs_of_runs_that_no_longer_exist(
        self, tmp_path: Path, env: dict[str, str]
    ) -> None:
        """A log folder whose run is gone from the store is removed; a live one stays."""
        write(tmp_path / "forge.yml", "workflows:\n  w:\n    tasks:\n      - {name: a, command: echo x}\n")
        forge("run", "w", cwd=tmp_path, env=env)
        orphan = tmp_path / "home" / "logs" / "20200101T000000-deadbeef"
        orphan.mkdir(parents=True)
        result = forge("system", "gc", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert "logs/20200101T000000-deadbeef" in json.loads(result.stdout)["removed"]
        assert not orphan.exists()
        assert len(list((tmp_path / "home" / "logs").iterdir())) == 1
