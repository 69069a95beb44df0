"""The Python workflow API: the same specs as YAML, the same checks, located errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import FORGE

from forge_core.config import load_any, load_project, load_python
from forge_core.exceptions import ConfigError, CycleError
from forge_core.flow import Workflow
from forge_core.spec import TriggerRule

FLOW = '''\
from forge_core.flow import Workflow

wf = Workflow("etl", schedule="0 2 * * *", concurrency=2, params={"date": "2024-01-01"})


@wf.task(retries=3, retry_delay=5, timeout=60)
def extract(date):
    return {"rows": 10}


@wf.task(depends_on=[extract], trigger_rule="all_done")
def transform(extract):
    return {"rows": extract["rows"] * 2}


wf.command("load", ["python", "-c", "print('${{ tasks.transform.outputs.rows }}')"],
           depends_on=["transform"], timeout="5m")
'''

YAML = '''\
workflows:
  etl:
    schedule: "0 2 * * *"
    concurrency: 2
    params: {{date: "2024-01-01"}}
    tasks:
      - name: extract
        python: "{file}:extract"
        retries: 3
        retry_delay: 5
        timeout: 60
      - name: transform
        python: "{file}:transform"
        depends_on: [extract]
        trigger_rule: all_done
      - name: load
        command: [python, -c, "print('${{{{ tasks.transform.outputs.rows }}}}')"]
        depends_on: transform
        timeout: 5m
'''


def module(tmp_path: Path, text: str, name: str = "flow.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


class TestWorkflow:
    def test_python_api_gives_the_same_spec_as_yaml(self, tmp_path: Path) -> None:
        """A flow module and the equivalent YAML produce equal WorkflowSpecs."""
        flow = module(tmp_path, FLOW)
        yml = tmp_path / "forge.yml"
        yml.write_text(YAML.format(file=flow.resolve()))
        from_python = load_python(flow).workflows["etl"]
        from_yaml = load_project(yml).workflows["etl"]
        assert from_python == from_yaml
        assert from_python.tasks[1].trigger_rule is TriggerRule.ALL_DONE

    def test_python_tasks_carry_their_function_and_import_path(self, tmp_path: Path) -> None:
        """Each Python task has func and an importable 'file:qualname'."""
        flow = module(tmp_path, FLOW)
        spec = load_any(flow).workflows["etl"]
        extract = spec.task("extract")
        assert extract.python == f"{flow.resolve()}:extract"
        assert extract.func is not None
        assert extract.func("2024-01-01") == {"rows": 10}
        assert spec.source == str(flow.resolve())

    def test_decorated_functions_stay_plain_functions(self) -> None:
        """@wf.task returns the function itself, callable as before."""
        wf = Workflow("w")

        @wf.task
        def first() -> int:
            return 1

        @wf.task(depends_on=first, name="second_task")
        def second(first: int = 0) -> int:
            return first + 1

        assert first() == 1
        assert second(first=1) == 2
        spec = wf.spec()
        assert [t.name for t in spec.tasks] == ["first", "second_task"]
        assert spec.task("second_task").depends_on == ("first",)

    def test_defaults_apply_as_in_yaml(self) -> None:
        """Workflow(defaults=...) fills task fields the task does not set."""
        wf = Workflow("w", defaults={"retries": 2, "timeout": "1m"})
        wf.command("a", "echo a")
        wf.command("b", ["echo", "b"], depends_on="a", retries=0)
        a, b = wf.spec().tasks
        assert (a.retries, a.timeout, b.retries, b.timeout) == (2, 60.0, 0, 60.0)

    def test_bad_option_names_the_file_line_and_field(self) -> None:
        """A wrong option type is a ConfigError at the line the task was added."""
        wf = Workflow("w")
        wf.command("a", "echo", timeout="soon")
        line = sys._getframe().f_lineno - 1
        with pytest.raises(ConfigError) as info:
            wf.spec()
        (problem,) = info.value.problems
        assert (problem.file, problem.line) == (__file__, line)
        assert problem.field == "workflows.w.tasks[0].timeout"
        assert problem.message.startswith("expected a duration")

    def test_unknown_parameter_is_reported(self) -> None:
        """A task parameter that is neither a param nor an upstream task is an error."""
        wf = Workflow("w", params={"date": "x"})

        @wf.task
        def extract(date: str, limit: int) -> None:
            return None

        with pytest.raises(ConfigError, match=r"parameter 'limit' of .*extract\(\) is neither"):
            wf.spec()

    def test_cycles_and_unknown_dependencies_are_checked(self) -> None:
        """The Python API runs the same graph checks as files."""
        wf = Workflow("w")
        wf.command("a", "x", depends_on="b")
        wf.command("b", "x", depends_on="a")
        with pytest.raises(CycleError) as info:
            wf.spec()
        assert info.value.cycle == ["a", "b", "a"]


    def test_a_script_runs_its_workflow_from_code_and_forge_sees_the_run(
        self, tmp_path: Path
    ) -> None:
        """wf.run() in a script's main block runs the workflow in the script's process on
        the embedded defaults, returns the finished record with the outputs, and the run is
        in FORGE_HOME's history; a bad param is refused before anything runs."""
        script = module(tmp_path, """
            import json, sys
            from forge_core.exceptions import ConfigError
            from forge_core.flow import Workflow

            wf = Workflow("fromcode", params={"n": 2})

            @wf.task
            def double(n):
                return {"v": n * 2}

            wf.command("show", ["echo", "${{ tasks.double.outputs.v }}"], depends_on=[double])

            if __name__ == "__main__":
                try:
                    wf.run({"nope": 1})
                except ConfigError as exc:
                    print("refused:", exc, file=sys.stderr)
                record = wf.run({"n": 5})
                print(json.dumps([record.state, {t.name: t.outputs for t in record.tasks}]))
        """, name="script.py")
        env = {**os.environ, "FORGE_HOME": str(tmp_path / "home")}
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env=env, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "refused: workflow 'fromcode' has no param 'nope'" in done.stderr
        assert json.loads(done.stdout) == ["succeeded", {"double": {"v": 10}, "show": {}}]
        history = subprocess.run([*FORGE, "workflow", "history", "--json"], capture_output=True,
                                 text=True, env=env, timeout=60, check=True)
        assert [r["workflow"] for r in json.loads(history.stdout)] == ["fromcode"]


class TestLoadPython:
    def test_every_module_level_workflow_is_collected(self, tmp_path: Path) -> None:
        """Two Workflow objects in one file become two specs."""
        path = module(tmp_path, """\
            from forge_core.flow import Workflow
            one = Workflow("one")
            one.command("a", "echo 1")
            two = Workflow("two")
            two.command("b", "echo 2")
            """)
        assert sorted(load_python(path).workflows) == ["one", "two"]

    def test_a_file_without_workflows_says_so(self, tmp_path: Path) -> None:
        """A module with no Workflow is a ConfigError naming the fix."""
        path = module(tmp_path, "x = 1\n")
        with pytest.raises(ConfigError, match=r"no forge_core\.flow\.Workflow"):
            load_python(path)

    def test_import_errors_name_the_line(self, tmp_path: Path) -> None:
        """An exception while importing is a ConfigError at the failing line, no traceback."""
        path = module(tmp_path, "import os\n\nraise RuntimeError('boom')\n")
        with pytest.raises(ConfigError) as info:
            load_python(path)
        (problem,) = info.value.problems
        assert (problem.line, problem.message) == (3, "importing the file failed: "
                                                      "RuntimeError: boom")

    def test_syntax_errors_name_the_line(self, tmp_path: Path) -> None:
        """Invalid Python is a ConfigError at its line."""
        path = module(tmp_path, "x = 1\ndef (:\n")
        with pytest.raises(ConfigError) as info:
            load_python(path)
        assert info.value.problems[0].line == 2

    def test_sibling_modules_can_be_imported(self, tmp_path: Path) -> None:
        """The file's folder is importable while the file loads, as for a script."""
        module(tmp_path, "STEP = 'echo helper'\n", "helpers_for_forge_test.py")
        path = module(tmp_path, """\
            from forge_core.flow import Workflow
            from helpers_for_forge_test import STEP
            wf = Workflow("w")
            wf.command("a", STEP)
            """)
        assert load_python(path).workflows["w"].tasks[0].command == "echo helper"
