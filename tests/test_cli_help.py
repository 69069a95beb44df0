"""``forge --help`` and each noun's help: every noun listed, heavy modules imported only for
the noun that needs them, and the list's help lines true to the sub-apps."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from forge_core.cli import CORE_NOUNS
from forge_core.cli._app import HELP, NOUNS, app, sub_app

HEAVY = ["forge_core.cli.queue_cmds", "forge_core.cli.daemon_cmds", "rich", "importlib.metadata"]


def imported_by(*args: str) -> tuple[str, dict[str, bool]]:
    """Run ``forge ARGS`` in a fresh interpreter: its output and which HEAVY modules it loaded."""
    code = ("import json, sys\nfrom forge_core.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=60, check=True)
    out, _, last = result.stdout.rstrip().rpartition("\n")
    return out, json.loads(last)


class TestHelp:
    def test_help_lists_every_noun_without_importing_their_modules(self) -> None:
        """forge --help names every core noun and the installed plugin nouns, importing none
        of the queue or daemon commands, rich or importlib.metadata."""
        out, loaded = imported_by("--help")
        listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line}
        assert listed >= CORE_NOUNS
        assert not any(loaded.values()), loaded

    def test_a_noun_imports_only_its_own_module(self) -> None:
        """forge task --help loads the queue commands but not the daemon's."""
        out, loaded = imported_by("task", "--help")
        assert "Submit and inspect work items" in out
        assert loaded["forge_core.cli.queue_cmds"]
        assert not loaded["forge_core.cli.daemon_cmds"]

    def test_help_lines_match_the_sub_apps(self) -> None:
        """Each help line kept for the list is the sub-app's own help."""
        for noun, line in HELP.items():
            assert sub_app(noun).info.help == line, noun

    @pytest.mark.parametrize("noun", list(NOUNS))
    def test_every_noun_has_help(self, noun: str) -> None:
        """forge NOUN --help exits 0 and shows the noun's help and its commands."""
        result = CliRunner().invoke(app, [noun, "--help"])
        assert result.exit_code == 0, result.output
        assert f"Usage: forge {noun}" in result.output
        assert str(sub_app(noun).info.help).split()[0] in result.output

    def test_workflow_carries_the_scheduling_commands(self) -> None:
        """forge workflow --help lists the daemon module's graph, backfill and pause too."""
        result = CliRunner().invoke(app, ["workflow", "--help"])
        assert result.exit_code == 0, result.output
        assert {"validate", "graph", "backfill", "pause"} <= set(result.output.split())

    def test_a_misspelt_noun_is_a_usage_error_with_a_suggestion(self) -> None:
        """An unknown first word exits 2 and suggests the nearest noun."""
        result = CliRunner().invoke(app, ["worklfow"])
        assert result.exit_code == 2
        assert "Did you mean 'workflow'?" in result.output

    def test_version_prints_the_installed_version_and_exits(self) -> None:
        """forge --version prints forge-core's version (the installed distribution's) and
        runs nothing else, importing nothing heavy."""
        from importlib.metadata import version

        out, loaded = imported_by("--version")
        assert out.startswith(f"forge-core {version('forge-core')} (Python ")
        assert not any(loaded.values()), loaded
