"""The config pipeline: files to specs, and every kind of bad input to a located ConfigError."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import attrs
import pytest
import yaml

from forge_core.config import (
    find_config,
    load_any,
    load_project,
    parse_duration,
    parse_size,
    structure_options,
    validate_workflow,
)
from forge_core.config._source import read_document
from forge_core.exceptions import ConfigError, CycleError
from forge_core.spec import TaskSpec, TriggerRule, WorkflowSpec

SEED = """\
workflows:
  daily_etl:
    schedule: "0 2 * * *"
    description: "Daily ETL pipeline"
    tasks:
      - name: extract
        command: python extract.py
        depends_on: []
        timeout: 1800
        retries: 3
        retry_delay: 300
      - name: transform
        command: python transform.py
        depends_on: [extract]
      - name: load
        command: python load.py
        depends_on: [transform]
        sla: 7200
        on_failure: email_alert
"""


def write(tmp_path: Path, text: str, name: str = "forge.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_project(path, environ=environ or {})
    return [str(p) for p in info.value.problems]


def wf(body: str) -> str:
    return "workflows:\n  etl:\n" + textwrap.indent(textwrap.dedent(body), "    ")


class TestLoadProject:
    def test_seed_loads_as_written(self, tmp_path: Path) -> None:
        """The issue's seed YAML becomes the expected specs."""
        spec = load_project(write(tmp_path, SEED)).workflows["daily_etl"]
        assert spec.schedule == "0 2 * * *"
        assert spec.source == str(tmp_path / "forge.yml")
        extract, transform, load = spec.tasks
        assert (extract.command, extract.timeout, extract.retries, extract.retry_delay) == (
            "python extract.py", 1800.0, 3, 300.0)
        assert transform.depends_on == ("extract",)
        assert (load.sla, load.on_failure) == (7200.0, "email_alert")

    def test_durations_sizes_and_flexible_forms(self, tmp_path: Path) -> None:
        """Durations, sizes, a str depends_on, a list command and tasks as a mapping all load."""
        path = write(tmp_path, wf("""\
            concurrency: "3"
            tasks:
              a:
                command: [python, -c, "print(1)"]
                timeout: 1h30m
                retry_delay: 500ms
                resources: {memory: 512m, cpu_time: 2m}
              b:
                command: echo hi
                depends_on: a
                shell: true
                trigger_rule: all_done
                env: {PORT: 8080, DEBUG: true}
            """))
        spec = load_project(path).workflows["etl"]
        a, b = spec.tasks
        assert spec.concurrency == 3
        assert a.command == ("python", "-c", "print(1)")
        assert (a.timeout, a.retry_delay) == (5400.0, 0.5)
        assert (a.resources.memory, a.resources.cpu_time) == (512 * 2**20, 120.0)
        assert b.depends_on == ("a",)
        assert b.trigger_rule is TriggerRule.ALL_DONE
        assert dict(b.env) == {"PORT": "8080", "DEBUG": "true"}

    def test_defaults_and_top_level_hooks_are_merged(self, tmp_path: Path) -> None:
        """Workflow defaults fill each task (task wins, env merged); top-level hooks join."""
        path = write(tmp_path, """\
            hooks:
              alert: {command: "echo failed"}
            workflows:
              etl:
                hooks:
                  page: {webhook: "http://127.0.0.1:9/hook"}
                defaults: {retries: 2, timeout: 5m, env: {A: "1", B: "1"}}
                tasks:
                  - {name: a, command: x, env: {B: "2"}}
                  - {name: b, command: x, retries: 0, depends_on: a}
            """)
        spec = load_project(path).workflows["etl"]
        a, b = spec.tasks
        assert (a.retries, a.timeout, dict(a.env)) == (2, 300.0, {"A": "1", "B": "2"})
        assert (b.retries, b.timeout) == (0, 300.0)
        assert set(spec.hooks) == {"alert", "page"}
        assert spec.hooks["alert"].command == "echo failed"

    def test_environment_substitution(self, tmp_path: Path) -> None:
        """${VAR} and ${VAR:-default} come from the environment; $${ and ${{ stay literal."""
        path = write(tmp_path, wf("""\
            params: {date: "2024-01-01"}
            env: {DB: "${DB_URL}", MODE: "${MODE:-fast}", LIT: "$${HOME}"}
            tasks:
              - name: a
                command: "echo ${{ params.date }} ${GREETING:-hi}"
                retries: ${RETRIES:-1}
            """))
        spec = load_project(path, environ={"DB_URL": "sqlite:///x"}).workflows["etl"]
        assert dict(spec.env) == {"DB": "sqlite:///x", "MODE": "fast", "LIT": "${HOME}"}
        assert spec.tasks[0].command == "echo ${{ params.date }} hi"
        assert spec.tasks[0].retries == 1

    def test_toml_loads_the_same_specs(self, tmp_path: Path) -> None:
        """A TOML file gives the same specs as the YAML seed."""
        toml = write(tmp_path, """\
            [workflows.daily_etl]
            schedule = "0 2 * * *"
            description = "Daily ETL pipeline"
            [[workflows.daily_etl.tasks]]
            name = "extract"
            command = "python extract.py"
            timeout = 1800
            retries = 3
            retry_delay = 300
            [[workflows.daily_etl.tasks]]
            name = "transform"
            command = "python transform.py"
            depends_on = ["extract"]
            [[workflows.daily_etl.tasks]]
            name = "load"
            command = "python load.py"
            depends_on = ["transform"]
            sla = 7200
            on_failure = "email_alert"
            """, "forge.toml")
        yml = write(tmp_path, SEED)
        assert load_project(toml).workflows == load_project(yml).workflows

    def test_examples_load(self) -> None:
        """Every example workflow in examples/ loads and validates."""
        root = Path(__file__).parent.parent / "examples"
        for path in [*root.glob("*/forge.yml"), *root.glob("*.py")]:
            assert load_any(path).workflows


class TestFindConfig:
    def test_found_from_a_subdirectory(self, tmp_path: Path) -> None:
        """forge.yml is found in a parent of the starting folder."""
        write(tmp_path, SEED)
        (tmp_path / "a" / "b").mkdir(parents=True)
        assert find_config(tmp_path / "a" / "b") == tmp_path / "forge.yml"

    def test_missing_config_says_what_to_do(self, tmp_path: Path) -> None:
        """No config anywhere up the tree is a ConfigError naming --config."""
        with pytest.raises(ConfigError, match="--config"):
            find_config(tmp_path)


class TestConfigErrors:
    def test_unknown_field_suggests_the_close_match(self, tmp_path: Path) -> None:
        """A misspelt field names file, line and path and suggests the right word."""
        path = write(tmp_path, wf("""\
            tasks:
              - name: a
                command: x
                retrys: 3
            """))
        assert problems(path) == [
            f"{path}:6: workflows.etl.tasks[0].retrys: unknown field 'retrys'; "
            "did you mean 'retries'?"]

    def test_wrong_types_say_what_was_expected(self, tmp_path: Path) -> None:
        """Each wrong type is its own line with the expected shape."""
        path = write(tmp_path, wf("""\
            concurrency: lots
            tasks:
              - name: a
                command: {x: 1}
                timeout: soon
                shell: maybe
                trigger_rule: al_done
            """))
        got = problems(path)
        assert got[0] == (f"{path}:3: workflows.etl.concurrency: expected a whole number, "
                          "got the string 'lots'")
        assert got[1].startswith(f"{path}:6: workflows.etl.tasks[0].command: expected a command")
        assert got[2].startswith(f"{path}:7: workflows.etl.tasks[0].timeout: expected a duration")
        assert got[3].startswith(f"{path}:8: workflows.etl.tasks[0].shell: expected true or false")
        assert got[4].endswith("did you mean 'all_done'?")
        assert got[4].startswith(f"{path}:9: workflows.etl.tasks[0].trigger_rule:")

    def test_invalid_yaml_names_the_line(self, tmp_path: Path) -> None:
        """A YAML syntax error points at its line."""
        path = write(tmp_path, "workflows:\n  etl:\n    tasks: [a, b\n    x: 1\n")
        (only,) = problems(path)
        assert only.startswith(f"{path}:4: invalid YAML")

    def test_unset_variable_names_field_and_line(self, tmp_path: Path) -> None:
        """An unset ${VAR} without a default is an error at its line and field."""
        path = write(tmp_path, wf("""\
            tasks:
              - name: a
                command: "echo ${NOPE}"
            """))
        assert problems(path) == [
            f"{path}:5: workflows.etl.tasks[0].command: environment variable 'NOPE' is not set; "
            "set it, or give a default with ${NOPE:-value}"]

    def test_a_tasks_own_variable_in_load_time_syntax_says_how_to_escape_it(
        self, tmp_path: Path
    ) -> None:
        """${FORGE_...} in a command is read when the file loads, when no task runs yet: the
        error says to write $${...}, and that form reaches the task as ${...}."""
        command = "sh -c 'echo ${FORGE_PARAM_N}'"
        path = write(tmp_path, wf(f"""\
            tasks:
              - name: a
                command: "{command}"
            """))
        assert problems(path) == [
            f"{path}:5: workflows.etl.tasks[0].command: ${{FORGE_PARAM_N}} is read when the file "
            "loads, and FORGE_PARAM_N is set only for a task's process: write $${FORGE_PARAM_N} "
            "to leave it to the task"]
        path.write_text(path.read_text().replace("${", "$${"))
        (task,) = load_project(path, environ={}).workflows["etl"].tasks
        assert task.command == "sh -c 'echo ${FORGE_PARAM_N}'"

    def test_bad_default_is_reported_once_at_its_line(self, tmp_path: Path) -> None:
        """A bad value in defaults is reported at the defaults line, not once per task."""
        path = write(tmp_path, wf("""\
            defaults:
              timout: 5m
            tasks:
              - {name: a, command: x}
              - {name: b, command: x}
            """))
        assert problems(path) == [
            f"{path}:4: workflows.etl.defaults.timout: unknown field 'timout'; "
            "did you mean 'timeout'?"]

    def test_duplicate_and_unknown_tasks(self, tmp_path: Path) -> None:
        """Duplicate names and unknown dependencies (with a suggestion) are both reported."""
        path = write(tmp_path, wf("""\
            tasks:
              - {name: extract, command: x}
              - {name: extract, command: y}
              - {name: load, command: z, depends_on: [extrct]}
            """))
        assert problems(path) == [
            f"{path}:5: workflows.etl.tasks[1].name: duplicate task name 'extract'; "
            "the first is tasks[0]",
            f"{path}:6: workflows.etl.tasks[2].depends_on: task 'load' depends on unknown "
            "task 'extrct'; did you mean 'extract'?"]

    def test_cycle_is_printed(self, tmp_path: Path) -> None:
        """A cycle raises CycleError whose message and attribute show the loop."""
        path = write(tmp_path, wf("""\
            tasks:
              - {name: a, command: x, depends_on: [c]}
              - {name: b, command: x, depends_on: [a]}
              - {name: c, command: x, depends_on: [b]}
            """))
        with pytest.raises(CycleError) as info:
            load_project(path)
        assert info.value.cycle == ["a", "b", "c", "a"]
        assert str(info.value) == (
            f"{path}:4: workflows.etl.tasks[0].depends_on: dependency cycle: a -> b -> c -> a")

    def test_semantic_problems_are_all_listed(self, tmp_path: Path) -> None:
        """Self-dependency (once, not again as a cycle), command+python, no command, limits
        and bad templates all appear."""
        path = write(tmp_path, wf("""\
            concurrency: 0
            params: {date: "2024-01-01"}
            tasks:
              - {name: a, command: x, depends_on: a}
              - {name: b, command: x, python: "m:f"}
              - {name: c}
              - {name: d, command: x, retries: -1, timeout: 0}
              - {name: e, command: "echo ${{ tasks.d.outputs.x }} ${{ params.dat }}"}
            """))
        got = problems(path)
        assert got == [
            f"{path}:3: workflows.etl.concurrency: concurrency must be at least 1, got 0",
            f"{path}:6: workflows.etl.tasks[0].depends_on: task 'a' depends on itself",
            f"{path}:7: workflows.etl.tasks[1].python: task 'b' has both 'command' and "
            "'python'; keep one",
            f"{path}:8: workflows.etl.tasks[2]: task 'c' needs a 'command' or a 'python' callable",
            f"{path}:9: workflows.etl.tasks[3].retries: retries must not be negative, got -1",
            f"{path}:9: workflows.etl.tasks[3].timeout: timeout must be greater than 0, got 0.0",
        ]

    def test_template_references_need_upstream_tasks_and_declared_params(
            self, tmp_path: Path) -> None:
        """${{ tasks.X... }} needs X upstream; ${{ params.P }} needs P declared."""
        path = write(tmp_path, wf("""\
            params: {date: "2024-01-01"}
            tasks:
              - {name: a, command: x}
              - {name: b, command: x, depends_on: a}
              - name: c
                depends_on: b
                command: [echo, "${{ tasks.a.outputs.n }}", "${{ params.date }}"]
                env: {X: "${{ tasks.d.outputs.n }}", Y: "${{ params.dat }}", Z: "${{ nope.x }}"}
              - {name: d, command: x}
            """))
        got = problems(path)
        assert len(got) == 3
        assert got[0].startswith(f"{path}:10: workflows.etl.tasks[2].env.X: ${{{{ tasks.d.outputs.n"
                                 " }} needs task 'd' to run first")
        assert "param 'dat', which is not declared" in got[1]
        assert "unknown template namespace 'nope'" in got[2]

    def test_duplicate_yaml_keys_are_refused(self, tmp_path: Path) -> None:
        """A key given twice in one mapping is an error instead of a silent override."""
        path = write(tmp_path, wf("""\
            tasks:
              - name: a
                command: x
                command: y
            """))
        assert problems(path) == [f"{path}:6: workflows.etl.tasks[0].command: key 'command' "
                                  "is given twice (first on line 5); remove one"]

    def test_unknown_top_level_section(self, tmp_path: Path) -> None:
        """A misspelt top-level section is named with a suggestion."""
        path = write(tmp_path, "workflow:\n  etl: {}\n")
        assert problems(path) == [
            f"{path}:1: workflow: unknown field 'workflow'; did you mean 'workflows'?"]

    MALFORMED = [
        "", "[1, 2]", "just text", "workflows: 3", "workflows: [a, b]", "workflows:\n  etl: 5",
        "workflows:\n  etl:\n    tasks:", "workflows:\n  etl:\n    tasks: 7",
        "workflows:\n  etl:\n    tasks: [a, 1]", "workflows:\n  etl:\n    tasks:\n      - [x]",
        "workflows:\n  etl:\n    tasks:\n      a: 3",
        "workflows:\n  etl:\n    tasks: [{name: [1], command: {a: b}}]",
        "workflows:\n  etl:\n    tasks: [{name: a, command: x, env: [1]}]",
        "workflows:\n  etl:\n    tasks: [{name: a, command: x, resources: 5}]",
        "workflows:\n  etl:\n    tasks: [{name: a, command: x, depends_on: {a: 1}}]",
        "workflows:\n  etl:\n    defaults: 3\n    tasks: [{name: a, command: x}]",
        "workflows:\n  etl:\n    hooks: [1]\n    tasks: [{name: a, command: x}]",
        "workflows:\n  etl:\n    secrets: {s: 1}\n    tasks: [{name: a, command: x}]",
        "hooks: 1\nworkflows: {}", "forge: [1]", "forge: {daemon_port: x, extra: 1}",
        "workflows:\n  etl:\n    params: [1]\n    tasks: [{name: a, command: x}]",
        "workflows:\n  etl:\n    overlap: 5\n    tasks: [{name: a, command: x}]",
        "workflows:\n  etl:\n    tasks: [{name: a, command: x, timeout: .inf}]",
        "workflows:\n  etl:\n    tasks: [{name: a, command: [x, [y]]}]",
        "workflows:\n  etl:\n    tasks: [{name: a, command: x, env: {A: [1]}}]",
        "workflows: !!python/object:os.system {}", "a: &x [*x]", "{{{",
        "workflows:\n  etl:\n    tasks: [{name: a, command: x, retries: 1e400}]",
    ]

    @pytest.mark.parametrize("text", MALFORMED)
    def test_malformed_documents_raise_only_config_error(self, tmp_path: Path, text: str) -> None:
        """Whatever the shape of the document, the only exception is a located ConfigError."""
        path = tmp_path / "forge.yml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_project(path)
        assert all(p.file == str(path) for p in info.value.problems)

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="cannot read the file"):
            load_project(tmp_path / "nope.yml")


class TestValidateWorkflow:
    def test_a_spec_built_in_code_is_checked_too(self) -> None:
        """validate_workflow works on specs that never came from a file."""
        spec = WorkflowSpec(name="w", tasks=(TaskSpec(name="a", command="x", depends_on=("b",)),))
        with pytest.raises(ConfigError, match=re.escape(
                "workflows.w.tasks[0].depends_on: task 'a' depends on unknown task 'b'")):
            validate_workflow(spec)

    def test_an_evolved_spec_keeps_its_lines(self, tmp_path: Path) -> None:
        """A spec changed after loading still reports the task's line in its file."""
        path = write(tmp_path, wf("""\
            tasks:
              - {name: a, command: x}
            """))
        spec = load_project(path).workflows["etl"]
        bad = attrs.evolve(spec, tasks=(attrs.evolve(spec.tasks[0], retries=-2),))
        where = re.escape(f"{path}:4: workflows.etl.tasks[0].retries")
        with pytest.raises(ConfigError, match=where):
            validate_workflow(bad)


class TestYamlLoading:
    DOCUMENTS = [
        "a: 1\nb: [x, 'y', 2.5, null, ~, true, no, 0x1f, 1_000, .nan, 2024-01-01, 2024-01-01T10:00:00Z]",
        "a: &x {k: v, l: [1, 2]}\nb: *x\nc: &s text\nd: *s",
        "base: &b {retries: 2}\ntask:\n  <<: *b\n  command: x",
        "1: a\ntrue: b\n~: c\n2024-01-01: d",
        "x: !!str 12\ny: !!int '7'\nz: !!float 3\nw: !!binary aGk=\nv: !!set {a, b}",
        "a: |\n  line one\n  line two\nb: >\n  folded\n  text\nc: \"q\\tq\"\nd: 'it''s'",
        "- a\n- [b, {c: d}]\n- ''", "plain", "", "---\na: 1\n...\n", "a: &r [1, *r]",
    ]

    @pytest.mark.parametrize("text", DOCUMENTS)
    def test_documents_load_as_safe_load_reads_them(self, tmp_path: Path, text: str) -> None:
        """Whichever path a document takes, its data is exactly what yaml.safe_load returns."""
        path = write(tmp_path, text)
        assert repr(read_document(path).data) == repr(yaml.safe_load(text))

    def test_a_problem_deep_in_a_big_file_names_its_line(self, tmp_path: Path) -> None:
        """Lines are found on demand: the last of 2,000 tasks is reported at its own line."""
        tasks = "".join(f"  - {{name: t{i}, command: x}}\n" for i in range(1999))
        path = write(tmp_path, f"workflows:\n  big:\n    tasks:\n{textwrap.indent(tasks, '    ')}"
                               "      - {name: last, command: x, depends_on: [missing]}\n")
        assert problems(path) == [
            f"{path}:2003: workflows.big.tasks[1999].depends_on: task 'last' depends on unknown "
            "task 'missing'"]

    def test_merge_keys_and_their_problems_are_located(self, tmp_path: Path) -> None:
        """A file with << merges takes the node path and still names file, line and field."""
        path = write(tmp_path, "x-common: &common {retries: 2}\n" + wf("""\
            tasks:
              - {<<: *common, name: a, command: x}
              - {<<: *common, name: b, command: x, retrys: 1}
            """))
        assert problems(path) == [
            f"{path}:6: workflows.etl.tasks[1].retrys: unknown field 'retrys'; "
            "did you mean 'retries'?"]

    @pytest.mark.parametrize("head", ["", "x-base: &b {a: 1}\nx-use: {<<: *b}\n"])
    def test_absurd_nesting_is_refused_on_either_path(self, tmp_path: Path, head: str) -> None:
        """100,000 nested lists (libyaml's composer would crash the interpreter) are one
        located error, with or without a merge key sending the file down the node path."""
        path = write(tmp_path, f"{head}workflows:\n  etl:\n    tasks: {'[' * 100_000}{']' * 100_000}\n")
        (only,) = problems(path)
        assert only == f"{path}:{head.count(chr(10)) + 3}: invalid YAML: nested more than 500 levels deep"

    def test_lines_come_from_the_text_that_was_loaded(self, tmp_path: Path) -> None:
        """A file rewritten after loading does not move the lines of what was loaded."""
        path = write(tmp_path, wf("""\
            tasks:
              - {name: a, command: x}
            """))
        spec = load_project(path).workflows["etl"]
        path.write_text("\n" * 50)
        bad = attrs.evolve(spec, tasks=(attrs.evolve(spec.tasks[0], retries=-2),))
        with pytest.raises(ConfigError, match=re.escape(f"{path}:4: workflows.etl.tasks[0]")):
            validate_workflow(bad)


@attrs.frozen(kw_only=True)
class _PluginConfig:
    url: str
    timeout: float = attrs.field(default=5.0, metadata={"forge": "duration"})
    retries: int = 3


class TestStructureOptions:
    def test_options_become_the_plugin_config(self) -> None:
        """Plugin options use the same converter, including duration metadata."""
        cfg = structure_options(_PluginConfig, {"url": "redis://x", "timeout": "2m"}, "queue.redis")
        assert cfg == _PluginConfig(url="redis://x", timeout=120.0)

    def test_bad_options_name_the_plugin_field(self) -> None:
        """Unknown and wrong options are one located line each."""
        with pytest.raises(ConfigError) as info:
            structure_options(_PluginConfig, {"retrys": 1, "timeout": "x"}, "queue.redis")
        got = [str(p) for p in info.value.problems]
        assert "queue.redis.url: required field 'url' is missing" in got
        assert ("queue.redis.retrys: unknown field 'retrys'; did you mean 'retries'?"
                in got)
        assert any(g.startswith("queue.redis.timeout: expected a duration") for g in got)


class TestUnits:
    @pytest.mark.parametrize(("text", "seconds"), [
        (30, 30.0), ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0),
        ("500ms", 0.5), ("1.5h", 5400.0), ("2d", 172800.0)])
    def test_durations(self, text: object, seconds: float) -> None:
        """Durations accept numbers and unit strings."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize(("text", "size"), [
        (1024, 1024), ("512m", 512 * 2**20), ("1g", 2**30), ("100MiB", 100 * 2**20),
        ("1.5GB", int(1.5 * 2**30)), ("64k", 65536)])
    def test_sizes(self, text: object, size: int) -> None:
        """Sizes accept bytes and k/m/g/t suffixes (powers of 1024)."""
        assert parse_size(text) == size
