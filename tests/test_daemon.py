"""The daemon's scheduler loop, driven by a controllable clock instead of sleeping."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from forge_core.config import load_project
from forge_core.daemon import Daemon, DaemonOptions
from forge_core.exceptions import ConfigError
from forge_core.spec import ProjectSpec, TaskSpec, WorkflowSpec
from forge_core.state import StateStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def flow(name: str = "etl", command: str = "true", **kw: Any) -> WorkflowSpec:
    return WorkflowSpec(name=name, schedule="@hourly", executor="local", tasks=(
        TaskSpec(name="work", command=command, shell=True),), **kw)


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    """Start a daemon (no HTTP, no signal handling) over the given workflows."""
    async with anyio.create_task_group() as tg:
        store = StateStore(tmp_path / "home" / "state.db")

        async def start(*flows: WorkflowSpec) -> tuple[Daemon, FakeClock]:
            clock = FakeClock()
            daemon = Daemon(project=ProjectSpec(workflows={f.name: f for f in flows}),
                            home=tmp_path / "home", store=store, clock=clock,
                            options=DaemonOptions(http=False, tick=3600, reclaim_every=3600))
            await tg.start(lambda task_status: daemon.serve(task_status=task_status,
                                                            handle_signals=False))
            return daemon, clock

        yield start
        tg.cancel_scope.cancel()
    store.close()


async def settle(daemon: Daemon) -> None:
    with anyio.fail_after(30):
        while daemon.driving:
            await anyio.sleep(0.02)


class TestDaemonScheduling:
    async def test_first_sight_waits_for_the_next_fire_time(self, make: Any) -> None:
        """A newly seen workflow does not run at once; it runs at its next fire time."""
        daemon, clock = await make(flow())
        assert daemon.store.list_runs("etl") == []
        clock.now += timedelta(hours=1)
        await daemon.tick()
        await settle(daemon)
        (run,) = daemon.store.list_runs("etl")
        assert (run.state, run.trigger, run.logical_date) == (
            "succeeded", "schedule", "2026-03-01T13:00:00+00:00")

    async def test_logical_date_reaches_the_task(self, make: Any, tmp_path: Path) -> None:
        """The task sees its run's logical date as FORGE_LOGICAL_DATE."""
        out = tmp_path / "date.txt"
        daemon, clock = await make(flow(command=f'echo "$FORGE_LOGICAL_DATE" > {out}'))
        clock.now += timedelta(hours=1)
        await daemon.tick()
        await settle(daemon)
        assert out.read_text().strip() == "2026-03-01T13:00:00+00:00"

    async def test_catchup_runs_every_missed_time_in_the_window(self, make: Any) -> None:
        """After five hours down with a 3-hour window, three runs catch up, oldest first."""
        daemon, clock = await make(flow(catchup=3 * 3600, max_active_runs=1))
        clock.now += timedelta(hours=5)
        for _ in range(3):
            await daemon.tick()
            await settle(daemon)
        dates = sorted(r.logical_date or "" for r in daemon.store.list_runs("etl"))
        assert dates == ["2026-03-01T15:00:00+00:00", "2026-03-01T16:00:00+00:00",
                         "2026-03-01T17:00:00+00:00"]

    async def test_skip_policy_drops_a_fire_time_during_a_run(self, make: Any,
                                                               tmp_path: Path) -> None:
        """With overlap skip, a fire time while the previous run still runs starts nothing."""
        gate = tmp_path / "gate"
        daemon, clock = await make(flow(command=f"while [ ! -e {gate} ]; do sleep 0.05; done"))
        clock.now += timedelta(hours=1)
        await daemon.tick()
        clock.now += timedelta(hours=1)
        await daemon.tick()
        gate.touch()
        await settle(daemon)
        assert len(daemon.store.list_runs("etl")) == 1
        assert b'forge_schedules_skipped_total{workflow="etl"} 1.0' in daemon.metrics.render()

    async def test_paused_workflow_does_not_run(self, make: Any) -> None:
        """A paused workflow's fire times start nothing until it is unpaused."""
        daemon, clock = await make(flow())
        daemon.pause("etl")
        clock.now += timedelta(hours=1)
        await daemon.tick()
        await settle(daemon)
        assert daemon.store.list_runs("etl") == []

    async def test_pauses_itself_after_consecutive_failures(self, make: Any) -> None:
        """With pause_after_failures=2, two failed runs pause the workflow."""
        daemon, clock = await make(flow(command="exit 3", pause_after_failures=2))
        for _ in range(3):
            clock.now += timedelta(hours=1)
            await daemon.tick()
            await settle(daemon)
        assert daemon.is_paused("etl")
        assert [r.state for r in daemon.store.list_runs("etl")] == ["failed", "failed"]

    def test_a_bad_schedule_stops_it_naming_file_line_and_field(self, tmp_path: Path) -> None:
        """A schedule the scheduler cannot read is a ConfigError before the daemon does
        anything, with the line and field, as ``forge workflow validate`` gives it."""
        path = tmp_path / "forge.yml"
        path.write_text("workflows:\n  etl:\n    schedule: every 0m\n"
                        "    tasks: [{name: a, command: 'true'}]\n")
        with pytest.raises(ConfigError) as info:
            Daemon(project=load_project(path), home=tmp_path, store=StateStore(tmp_path / "s.db"))
        assert str(info.value) == (f"{path}:3: workflows.etl.schedule: schedule 'every 0m': "
                                   "an interval must be longer than 0s")

    async def test_refuses_to_listen_beyond_loopback_without_a_token(self, tmp_path: Path) -> None:
        """Binding 0.0.0.0 with no bearer token is a ConfigError before anything listens."""
        daemon = Daemon(project=ProjectSpec(), home=tmp_path, store=StateStore(tmp_path / "s.db"),
                        options=DaemonOptions(host="0.0.0.0"))
        with pytest.raises(ConfigError, match="token"):
            await daemon.serve(handle_signals=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving_http(home: Path, store: StateStore) -> AsyncIterator[str]:
    """A daemon over the ``etl`` workflow serving HTTP with the token ``t0ken-abc``; yields
    its base URL and shuts it down after."""
    port = free_port()
    daemon = Daemon(project=ProjectSpec(workflows={"etl": flow()}), home=home, store=store,
                    options=DaemonOptions(port=port, token="t0ken-abc", tick=3600,
                                          reclaim_every=3600))
    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: daemon.serve(task_status=task_status,
                                                        handle_signals=False))
        yield f"http://127.0.0.1:{port}"
        await daemon.shutdown()


async def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await anyio.to_thread.run_sync(get)


class TestDaemonLifecycle:
    async def test_shutdown_interrupts_runs_past_the_grace_period(self, tmp_path: Path) -> None:
        """A run still going when the grace period ends is recorded interrupted."""
        store = StateStore(tmp_path / "state.db")
        clock = FakeClock()
        daemon = Daemon(project=ProjectSpec(workflows={"etl": flow(command="sleep 30")}),
                        home=tmp_path, store=store, clock=clock,
                        options=DaemonOptions(http=False, tick=3600, reclaim_every=3600,
                                              grace=0.2))
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: daemon.serve(task_status=task_status,
                                                            handle_signals=False))
            clock.now += timedelta(hours=1)
            await daemon.tick()
            with anyio.fail_after(30):
                while not store.list_runs("etl", states=("running",)):
                    await anyio.sleep(0.02)
            await daemon.shutdown()
        assert [r.state for r in store.list_runs("etl")] == ["interrupted"]

    async def test_a_fire_time_and_its_run_are_recorded_together(self, make: Any) -> None:
        """When a tick returns, the fire time it passed has its queued run in the store: a
        daemon killed before driving it has not lost it (the next test picks it up)."""
        daemon, clock = await make(flow())
        clock.now += timedelta(hours=1)
        await daemon.tick()  # no await inside: nothing has driven the run yet
        (run,) = daemon.store.list_runs("etl")
        assert (run.state, run.trigger, run.logical_date) == (
            "queued", "schedule", "2026-03-01T13:00:00+00:00")
        assert daemon.store.get_value("scheduler", "etl")["cursor"] == run.logical_date
        await settle(daemon)
        assert daemon.store.get_run(run.run_id).state == "succeeded"

    async def test_a_queued_run_its_daemon_never_drove_is_resumed(self, tmp_path: Path) -> None:
        """A run queued by a tick whose daemon died before driving it (no owner) is driven by
        the next daemon's reclaim, as a start, with its logical date."""
        from forge_core.runner import queue_run

        spec = flow()
        store = StateStore(tmp_path / "state.db")
        run_id = queue_run(spec, store, logical_date="2026-03-01T13:00:00+00:00",
                           trigger="schedule")
        await anyio.sleep(0.3)  # older than stale_after below: nobody is about to claim it
        daemon = Daemon(project=ProjectSpec(workflows={"etl": spec}), home=tmp_path,
                        store=store, clock=FakeClock(),
                        options=DaemonOptions(http=False, tick=3600, reclaim_every=3600,
                                              stale_after=0.2))
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: daemon.serve(task_status=task_status,
                                                            handle_signals=False))
            await settle(daemon)
            tg.cancel_scope.cancel()
        run = store.get_run(run_id)
        assert (run.state, run.logical_date) == ("succeeded", "2026-03-01T13:00:00+00:00")
        assert "run.started" in [e.kind for e in store.events(run_id)]

    async def test_api_log_of_an_attempt_that_wrote_nothing_is_empty(
        self, tmp_path: Path
    ) -> None:
        """An attempt that wrote nothing has no log file: its log is empty text, not a 404;
        one that wrote has its text."""
        store = StateStore(tmp_path / "state.db")
        run_id = store.create_run("etl", ["quiet", "said"])
        store.start_attempt(run_id, "quiet", 1, str(tmp_path / "quiet.1.log"))
        store.start_attempt(run_id, "said", 1, str(tmp_path / "said.1.log"))
        (tmp_path / "said.1.log").write_text("hello\n")
        async with serving_http(tmp_path, store) as base:
            quiet = await fetch(f"{base}/api/runs/{run_id}/tasks/quiet/logs", "t0ken-abc")
            said = await fetch(f"{base}/api/runs/{run_id}/tasks/said/logs", "t0ken-abc")
        assert quiet == (200, "")
        assert said == (200, "hello\n")

    async def test_api_over_http_with_a_token(self, tmp_path: Path) -> None:
        """With a token, the API answers JSON to a bearer and 401 without; probes stay open."""
        store = StateStore(tmp_path / "state.db")
        run_id = store.create_run("etl", ["work"])
        async with serving_http(tmp_path, store) as base:
            probes = [await fetch(f"{base}/healthz"), await fetch(f"{base}/readyz")]
            denied = await fetch(f"{base}/api/runs")
            workflows = await fetch(f"{base}/api/workflows", "t0ken-abc")
            one = await fetch(f"{base}/api/runs/{run_id}", "t0ken-abc")
            missing = await fetch(f"{base}/api/runs/nope", "t0ken-abc")
        assert probes == [(200, "ok\n"), (200, "ready\n")]
        assert denied[0] == 401
        assert json.loads(workflows[1])[0]["schedule"] == "@hourly"
        assert json.loads(one[1])["tasks"][0]["name"] == "work"
        assert missing[0] == 404
