"""The ``forge.cli_fast`` path of ``forge container run``: taken by the real ``forge`` command
without typer or click, parsing exactly as the Typer command does, declining the rest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from forge_runtime_linux.cli import _run, fast
from forge_runtime_linux.cli.container import app
from typer.testing import CliRunner

pytestmark = [pytest.mark.linux, pytest.mark.root]

FORGE = str(Path(sys.executable).with_name("forge"))


def forge(*args: str, home: Path, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), FORGE, *args]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, "FORGE_HOME": str(home)},
        timeout=60,
        check=False,
    )


class TestFastRun:
    """`forge container run` as a person types it."""

    def test_run_takes_the_fast_path_without_typer(self, forge_home: Path, busybox_image: str) -> None:
        """The command's output and exit code come back, and neither typer nor click was imported."""
        if not os.path.exists(FORGE):
            pytest.skip("the forge console script is not installed next to this interpreter")
        result = forge(
            "container",
            "run",
            "--rm",
            "-e",
            "A=b",
            busybox_image,
            "sh",
            "-c",
            "echo $A; exit 3",
            home=forge_home,
            importtime=True,
        )
        assert (result.returncode, result.stdout) == (3, "b\n")
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert "forge_runtime_linux.cli._run" in imported
        assert not {"typer", "click", "anyio", "attrs"} & imported

    def test_userns_host_and_bad_values(self, forge_home: Path, busybox_image: str) -> None:
        """--userns host shows the identity map inside; a bad --userns is a one-line usage error."""
        host = forge(
            "container",
            "run",
            "--rm",
            "--userns",
            "host",
            busybox_image,
            "cat",
            "/proc/self/uid_map",
            home=forge_home,
        )
        assert host.stdout.split() == ["0", "0", "4294967295"]
        bad = forge("container", "run", "--userns=bogus", busybox_image, "true", home=forge_home)
        assert (bad.returncode, bad.stderr) == (2, "error: --userns must be private or host\n")

    def test_timeout_stops_the_container(self, forge_home: Path, busybox_image: str) -> None:
        """--timeout ends a command that outlives it with SIGTERM, saying so, and --rm leaves nothing."""
        (forge_home / "containers").mkdir(mode=0o711, exist_ok=True)
        before = set(os.listdir(forge_home / "containers"))
        result = forge(
            "container", "run", "--rm", "--timeout", "0.5", busybox_image, "sleep", "30", home=forge_home
        )
        assert result.returncode == 128 + 15
        assert result.stderr == "error: timed out after 0.5s\n"
        assert set(os.listdir(forge_home / "containers")) == before


class TestParsing:
    """parse_run reads argv as the Typer command would, or declines."""

    @pytest.mark.parametrize(
        "argv",
        [
            ["img"],
            [
                "--rm",
                "-d",
                "--name",
                "n1",
                "-e",
                "A=1",
                "--env=B=2",
                "-eC=3",
                "-p",
                "8080:80",
                "-p",
                "53:53/udp",
                "--memory",
                "64m",
                "--cpus",
                "0.5",
                "--pids-limit",
                "20",
                "--no-init",
                "--userns",
                "host",
                "img",
                "sh",
                "-c",
                "echo --rm",
            ],
            [
                "-v",
                "/tmp:/data:ro",
                "--tmpfs",
                "/scratch",
                "-w",
                "/tmp",
                "-u",
                "nobody",
                "--network",
                "none",
                "--timeout",
                "5",
                "--",
                "img",
                "--name",
                "x",
            ],
        ],
    )
    def test_same_options_as_the_typer_command(
        self, argv: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """For each argv the fast parser hands execute() what the Typer command hands it."""
        seen: list[tuple[str, list[str], dict[str, Any]]] = []
        monkeypatch.setattr(
            _run, "execute", lambda image, command, opts: seen.append((image, command, opts)) or 0
        )
        result = CliRunner().invoke(app, ["run", *argv])
        assert result.exit_code == 0, result.output
        image, command, opts = seen[0]
        assert fast.parse_run(argv) == (image, list(command), {k: _plain(v) for k, v in opts.items()})

    @pytest.mark.parametrize(
        "argv",
        [
            ["list"],
            [],
            ["run"],
            ["run", "--help"],
            ["run", "-h", "img"],
            ["run", "--bogus", "img"],
            ["run", "--cpus", "lots", "img"],
            ["run", "-dt", "img"],
            ["run", "--rm=yes", "img"],
            ["run", "--name"],
        ],
    )
    def test_declines_what_it_does_not_handle(self, argv: list[str]) -> None:
        """Other sub-commands, help, unknown flags and malformed values go to the Typer app."""
        assert fast.main(argv) is None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
