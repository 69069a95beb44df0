"""``forge container`` and ``forge image`` as a person uses them: real processes, exit codes,
one-line errors and no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.linux, pytest.mark.root]


def cli(noun: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    code = f"from forge_runtime_linux.cli.{noun} import app; app(prog_name='forge {noun}')"
    env = {**os.environ, "FORGE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60
    )


class TestImageCli:
    """Import, list, inspect, delete; errors are one line."""

    def test_import_list_inspect_delete(self, tmp_path: Path, busybox_tar: Path) -> None:
        """An imported tarball is listed, inspected by name and deleted."""
        home = tmp_path / "home"
        imported = cli("image", "import", str(busybox_tar), "--name", "bb:1", home=home)
        assert imported.returncode == 0, imported.stderr
        listed = json.loads(cli("image", "list", "--json", home=home).stdout)
        assert [i["names"] for i in listed] == [["bb:1"]]
        assert json.loads(cli("image", "inspect", "bb:1", home=home).stdout)["id"] == imported.stdout.strip()
        assert cli("image", "delete", "bb:1", home=home).returncode == 0
        assert json.loads(cli("image", "list", "--json", home=home).stdout) == []

    def test_errors_are_one_line_with_exit_codes(self, tmp_path: Path) -> None:
        """A missing image exits 1, a pull (no registry) exits 2, neither prints a traceback."""
        missing = cli("image", "inspect", "nope", home=tmp_path)
        pull = cli("image", "pull", "debian", home=tmp_path)
        assert (missing.returncode, pull.returncode) == (1, 2)
        for result in (missing, pull):
            assert result.stderr.startswith("error: ")
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
        assert "no registry" in pull.stderr


class TestContainerCli:
    """run (foreground and detached), list, logs, exec, stats, stop, delete, prune."""

    def test_run_exits_with_the_containers_code(self, forge_home: Path, busybox_image: str) -> None:
        """`run` prints the command's output and exits with its code; --rm leaves no container."""
        result = cli(
            "container",
            "run",
            "--rm",
            "--hostname",
            "h1",
            "-e",
            "A=b",
            busybox_image,
            "sh",
            "-c",
            "echo $A $(hostname); exit 3",
            home=forge_home,
        )
        assert (result.returncode, result.stdout) == (3, "b h1\n")
        assert json.loads(cli("container", "list", "--json", home=forge_home).stdout) == []

    def test_detached_lifecycle(self, forge_home: Path, busybox_image: str) -> None:
        """A detached container outlives the CLI; logs, exec, stats, stop and delete work on it."""
        started = cli(
            "container",
            "run",
            "-d",
            "--name",
            "svc",
            "--memory",
            "64m",
            busybox_image,
            "sh",
            "-c",
            "echo up; sleep 60",
            home=forge_home,
        )
        assert started.returncode == 0, started.stderr
        try:
            listed = json.loads(cli("container", "list", "--json", home=forge_home).stdout)
            assert [(c["name"], c["status"]) for c in listed] == [("svc", "running")]
            assert (
                cli("container", "exec", "svc", "cat", "/etc/hostname", home=forge_home).stdout.strip()
                == started.stdout.strip()
            )
            stats = json.loads(
                cli("container", "stats", "svc", "--json", home=forge_home).stdout
            )  # sh execs sleep
            assert stats[0]["pids"] == 1
            assert stats[0]["memory_bytes"] > 0
            refused = cli("container", "delete", "svc", home=forge_home)
            assert refused.returncode == 2, refused.stderr
            assert "running" in refused.stderr
            assert cli("container", "stop", "-t", "0.5", "svc", home=forge_home).returncode == 0
            assert cli("container", "logs", "svc", home=forge_home).stdout == "up\n"
        finally:
            cli("container", "delete", "-f", "svc", home=forge_home)
        assert json.loads(cli("container", "list", "--json", home=forge_home).stdout) == []

    def test_kill_sends_a_named_signal(self, forge_home: Path, busybox_image: str) -> None:
        """`kill -s TERM` ends a sleeping container by SIGTERM; an unknown signal name exits 2."""
        started = cli(
            "container", "run", "-d", "--name", "term", busybox_image, "sleep", "60", home=forge_home
        )
        try:
            assert cli("container", "kill", "-s", "NOPE", "term", home=forge_home).returncode == 2
            assert cli("container", "kill", "-s", "TERM", "term", home=forge_home).returncode == 0
            status = ""
            for _ in range(200):  # a guard for the asynchronous exit, not a timing
                status = json.loads(cli("container", "inspect", "term", home=forge_home).stdout)["status"]
                if status != "running":
                    break
            assert status == "exited: killed by SIGTERM"
        finally:
            cli("container", "delete", "-f", started.stdout.strip(), home=forge_home)

    def test_bad_flags_exit_2(self, forge_home: Path, busybox_image: str) -> None:
        """A malformed --publish or --memory is a one-line usage error with exit code 2."""
        for flags in (["-p", "nonsense"], ["--memory", "lots"], ["--network", "bridge"]):
            result = cli("container", "run", *flags, busybox_image, "true", home=forge_home)
            assert result.returncode == 2
            assert result.stderr.startswith("error: ")
            assert "Traceback" not in result.stderr
