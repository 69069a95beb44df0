"""The ``forge.cli_fast`` path against real installed metadata: test distributions written
to a directory on ``PYTHONPATH`` with their ``entry_points.txt``, run through ``forge``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points as metadata_entry_points
from pathlib import Path

import pytest

from forge_core import plugins
from forge_core.cli._fast import entry_points

FORGE = [sys.executable, "-c", "from forge_core.cli import main; main()"]

FAST = """
    import sys

    def main(argv):
        print(f"fast saw {argv} typer={'typer' in sys.modules}", flush=True)
        if argv[:1] == ["boom"]:
            raise RuntimeError("a bug in the fast path")
        if argv[:1] == ["decline"]:
            return None
        return int(argv[0]) if argv and argv[0].isdigit() else 0
"""
APP = """
    import typer

    app = typer.Typer(help="A noun from a test plugin.")

    @app.command()
    def decline() -> None:
        typer.echo("typer ran decline")

    @app.command()
    def boom() -> None:
        typer.echo("typer ran boom")
"""


def make_dist(site: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """Write an installed distribution ``name`` (dist-info and modules) into ``site``."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, code in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(code))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    make_dist(path, "fp-fast", """
        [forge.cli_fast]
        fpnoun = fp_fast:main
        workflow = fp_fast:main
        [forge.cli]
        fpnoun = fp_fast_app:app
        """, {"fp_fast": FAST, "fp_fast_app": APP})
    return path


def forge(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "FORGE_HOME": str(site.parent / "home")}
    return subprocess.run([*FORGE, *args], env=env, cwd=site.parent, capture_output=True,
                          text=True, timeout=60, check=False)


class TestFastPath:
    def test_the_fast_entry_handles_its_noun_before_typer_is_imported(self, site: Path) -> None:
        """forge NOUN ARGS runs the fast callable with ARGS; its return is the exit code."""
        result = forge(site, "fpnoun", "7", "--flag")
        assert result.stdout == "fast saw ['7', '--flag'] typer=False\n"
        assert result.returncode == 7

    def test_a_declined_call_falls_back_to_the_typer_app(self, site: Path) -> None:
        """A None return hands the same arguments to the plugin's Typer sub-app."""
        result = forge(site, "fpnoun", "decline")
        assert result.stdout == "fast saw ['decline'] typer=False\ntyper ran decline\n"
        assert result.returncode == 0

    def test_a_fast_entry_that_raises_falls_back_quietly(self, site: Path) -> None:
        """An exception in the fast callable is no traceback; the Typer app runs instead."""
        result = forge(site, "fpnoun", "boom")
        assert result.stdout.endswith("typer ran boom\n")
        assert (result.returncode, result.stderr) == (0, "")

    def test_a_fast_entry_that_cannot_import_falls_back_quietly(self, site: Path) -> None:
        """A fast module failing to import leaves the noun working through Typer."""
        make_dist(site, "fp-broken", """
            [forge.cli_fast]
            fpbroken = fp_broken:main
            [forge.cli]
            fpbroken = fp_fast_app:app
            """, {"fp_broken": "raise ImportError('libfast.so.1 not found')\n"})
        result = forge(site, "fpbroken", "decline")
        assert (result.returncode, result.stdout, result.stderr) == (0, "typer ran decline\n", "")

    def test_a_noun_claimed_twice_takes_the_full_cli(self, site: Path) -> None:
        """Two distributions claiming one fast noun: neither runs, the Typer app does."""
        make_dist(site, "fp-twin", "[forge.cli_fast]\nfpnoun = fp_fast:main\n", {})
        result = forge(site, "fpnoun", "decline")
        assert (result.returncode, result.stdout) == (0, "typer ran decline\n")

    def test_core_nouns_and_leading_options_never_take_the_fast_path(self, site: Path) -> None:
        """A fast entry named like a core noun is ignored, and so is any call starting with
        an option."""
        core = forge(site, "workflow", "--help")
        assert core.returncode == 0
        assert "fast saw" not in core.stdout
        assert "Run, validate and inspect workflows." in core.stdout
        option = forge(site, "--verbose", "fpnoun", "decline")
        assert (option.returncode, option.stdout) == (0, "typer ran decline\n")

    def test_plugins_list_shows_the_fast_entries(self, site: Path) -> None:
        """forge plugins list --json has the forge.cli_fast group with its distribution."""
        result = forge(site, "plugins", "list", "--json")
        assert result.returncode == 0, result.stderr
        infos = {(i["group"], i["name"]): i for i in json.loads(result.stdout)}
        fast = infos[("cli_fast", "fpnoun")]
        assert (fast["distribution"], fast["usable"]) == ("fp-fast", True)
        assert infos[("cli", "fpnoun")]["usable"]


class TestPluginNouns:
    def test_a_broken_cli_plugin_breaks_neither_help_nor_other_nouns(self, site: Path) -> None:
        """A forge.cli sub-app that fails to import is one warning line; the rest works."""
        make_dist(site, "fp-bad-app", "[forge.cli]\nfpbad = fp_bad_app:app\n",
                  {"fp_bad_app": "raise ImportError('libui.so.2 not found')\n"})
        result = forge(site, "--help")
        assert result.returncode == 0
        assert {"workflow", "fpnoun"} <= {line.split()[0] for line in
                                          result.stdout.split("Commands:")[1].splitlines() if line}
        assert "forge.cli plugin 'fpbad' from fp_bad_app failed to load" in result.stderr
        assert "libui.so.2" in result.stderr
        assert "Traceback" not in result.stderr
        assert forge(site, "fpnoun", "decline").stdout.endswith("typer ran decline\n")


@pytest.fixture
def on_path(site: Path) -> Iterator[Path]:
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))


class TestEntryPoints:
    def test_they_match_importlib_metadata_for_every_group(self, on_path: Path) -> None:
        """Reading entry_points.txt directly finds what importlib.metadata finds."""
        make_dist(on_path, "fp-odd.name", """
            # a comment
            [forge.cli_fast]
            odd = fp_fast:main [extra]
            [other.group]
            not_ours = x:y
            """, {})

        def norm(dist: str) -> str:
            return dist.replace("-", "_").replace(".", "_").lower()

        for namespace, _iface in plugins.GROUPS.values():
            ours = sorted((ep.name, ep.value, norm(ep.distribution))
                          for ep in entry_points(namespace))
            theirs = sorted((ep.name, ep.value, norm(ep.dist.metadata["Name"] if ep.dist else ""))
                            for ep in metadata_entry_points(group=namespace))
            assert ours == theirs, namespace
        assert ("odd", "fp_fast:main [extra]") in {(e.name, e.value)
                                                   for e in entry_points("forge.cli_fast")}
