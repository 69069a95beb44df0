"""The cron scheduler backend and the overlap policy, as pure functions of datetimes."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import entry_points
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from forge_core.abc import Trigger
from forge_core.exceptions import ConfigError
from forge_core.scheduler import CronScheduler, WorkflowState, parse_interval, plan_due
from forge_core.spec import TaskSpec, WorkflowSpec
from forge_core.state import StateStore
from forge_core.state._history import (
    consecutive_failures,
    latest_by_logical_date,
    p95_durations,
    sla_at_risk,
)

UTC = UTC
NY = ZoneInfo("America/New_York")


def at(*args: int, tz: timezone | ZoneInfo = UTC) -> datetime:
    return datetime(*args, tzinfo=tz)


class TestCronScheduler:
    scheduler = CronScheduler()

    def nxt(self, expression: str, after: datetime, tz: str = "UTC") -> datetime | None:
        return self.scheduler.next_after(Trigger(expression=expression, timezone=tz), after)

    def test_loads_through_the_entry_point(self) -> None:
        """The core registers the backend as ``cron`` in ``forge.scheduler``."""
        (ep,) = entry_points(group="forge.scheduler", name="cron")
        assert ep.load() is CronScheduler

    def test_cron_expression_fires_strictly_after(self) -> None:
        """A fire time equal to ``after`` is not returned again."""
        assert self.nxt("*/15 * * * *", at(2026, 1, 1, 10, 15)) == at(2026, 1, 1, 10, 30)
        assert self.nxt("*/15 * * * *", at(2026, 1, 1, 10, 14, 59)) == at(2026, 1, 1, 10, 15)

    @pytest.mark.parametrize(
        ("alias", "expected"),
        [
            ("@hourly", at(2026, 5, 17, 11)),
            ("@daily", at(2026, 5, 18)),
            ("@midnight", at(2026, 5, 18)),
            ("@weekly", at(2026, 5, 24)),
            ("@monthly", at(2026, 6, 1)),
            ("@yearly", at(2027, 1, 1)),
        ],
    )
    def test_aliases(self, alias: str, expected: datetime) -> None:
        """Each ``@`` alias fires at its documented instant."""
        assert self.nxt(alias, at(2026, 5, 17, 10, 30)) == expected

    def test_intervals_align_to_the_epoch(self) -> None:
        """``every 15m`` fires on quarter hours whatever time it is asked from."""
        assert self.nxt("every 15m", at(2026, 1, 1, 10, 7)) == at(2026, 1, 1, 10, 15)
        assert self.nxt("every 2h", at(2026, 1, 1, 10, 0)) == at(2026, 1, 1, 12, 0)
        assert parse_interval("every 1h30m") == timedelta(minutes=90)
        assert parse_interval("0 * * * *") is None

    def test_time_zone_moves_cron_fire_times(self) -> None:
        """``@daily`` in Europe/Paris fires at Paris midnight, 23:00 UTC in winter."""
        got = self.nxt("@daily", at(2026, 1, 1, 10), "Europe/Paris")
        assert got == at(2026, 1, 1, 23)
        assert got is not None
        assert got.utcoffset() == timedelta(hours=1)

    def test_spring_forward_runs_right_after_the_jump(self) -> None:
        """A 02:30 job on the day 02:xx does not exist runs at 03:00 local, once."""
        got = list(self.scheduler.between(
            Trigger(expression="30 2 * * *", timezone="America/New_York"),
            at(2026, 3, 7, 12, tz=NY), at(2026, 3, 9, 12, tz=NY)))
        assert got == [at(2026, 3, 8, 3, 0, tz=NY), at(2026, 3, 9, 2, 30, tz=NY)]

    def test_fall_back_runs_a_fixed_hour_job_once(self) -> None:
        """A 01:30 job runs once on the day 01:30 happens twice."""
        got = list(self.scheduler.between(
            Trigger(expression="30 1 * * *", timezone="America/New_York"),
            at(2026, 10, 31, 12, tz=NY), at(2026, 11, 2, 12, tz=NY)))
        assert [g.astimezone(UTC) for g in got] == [at(2026, 11, 1, 5, 30), at(2026, 11, 2, 6, 30)]

    def test_fall_back_keeps_wildcard_hour_jobs_on_elapsed_time(self) -> None:
        """A half-hourly job fires every 30 real minutes through the repeated hour."""
        got = list(self.scheduler.between(
            Trigger(expression="*/30 * * * *", timezone="America/New_York"),
            at(2026, 11, 1, 4, 30), at(2026, 11, 1, 7, 0)))
        gaps = {b - a for a, b in itertools.pairwise(got)}
        assert len(got) == 6
        assert gaps == {timedelta(minutes=30)}

    @pytest.mark.parametrize(
        ("expression", "tz", "needle"),
        [
            ("61 * * * *", "UTC", "not a cron expression"),
            ("every fortnight", "UTC", "not an interval"),
            ("every 0m", "UTC", "longer than 0s"),
            ("@hourly", "Mars/Olympus", "unknown time zone"),
        ],
    )
    def test_validate_names_the_problem(self, expression: str, tz: str, needle: str) -> None:
        """Bad expressions and zones raise a ConfigError saying what is wrong."""
        with pytest.raises(ConfigError, match=needle):
            self.scheduler.validate(Trigger(expression=expression, timezone=tz))

    def test_due_with_catchup_window(self) -> None:
        """After downtime, only fire times within the catch-up window are due."""
        trig = Trigger(expression="@hourly")
        due = self.scheduler.due(trig, at(2026, 1, 1, 0), at(2026, 1, 1, 5, 30), timedelta(hours=2))
        assert due == [at(2026, 1, 1, 4), at(2026, 1, 1, 5)]
        assert self.scheduler.due(trig, at(2026, 1, 1, 0), at(2026, 1, 1, 5, 30), None) == [
            at(2026, 1, 1, 5)]

    @pytest.mark.parametrize("window", [timedelta(0), timedelta(minutes=10)])
    def test_a_catchup_window_never_runs_less_than_none(self, window: timedelta) -> None:
        """catchup: 0 (or a window shorter than the gap) still runs the newest fire time: on
        time, half a second after it, and after downtime."""
        trig = Trigger(expression="@hourly")
        just_after = at(2026, 1, 1, 5) + timedelta(milliseconds=500)
        assert self.scheduler.due(trig, at(2026, 1, 1, 4), just_after, window) == [
            at(2026, 1, 1, 5)]
        assert self.scheduler.due(trig, at(2026, 1, 1, 0), at(2026, 1, 1, 5, 30), window) == [
            at(2026, 1, 1, 5)]


class TestPlanDue:
    def test_idle_workflow_starts_oldest_within_max_active(self) -> None:
        """Catch-up dates all wait; the oldest ones start up to max_active_runs."""
        plan = plan_due(["a", "b", "c"], WorkflowState(), overlap="skip", max_active_runs=2)
        assert (plan.start, plan.backlog, plan.skipped) == (("a", "b"), ("c",), ())

    def test_skip_drops_a_date_arriving_while_busy(self) -> None:
        """With ``skip`` a fire time during an active run is dropped."""
        plan = plan_due(["b"], WorkflowState(active=("r1",)), overlap="skip", max_active_runs=1)
        assert (plan.start, plan.backlog, plan.skipped) == ((), (), ("b",))

    def test_buffer_keeps_exactly_one(self) -> None:
        """With ``buffer`` the first overlapping date waits and later ones are dropped."""
        plan = plan_due(["b", "c"], WorkflowState(active=("r1",)), overlap="buffer",
                        max_active_runs=1)
        assert (plan.start, plan.backlog, plan.skipped) == ((), ("b",), ("c",))

    def test_allow_starts_up_to_the_limit(self) -> None:
        """With ``allow`` overlapping dates start while under max_active_runs, the rest wait."""
        plan = plan_due(["b", "c"], WorkflowState(active=("r1",)), overlap="allow",
                        max_active_runs=2)
        assert (plan.start, plan.backlog) == (("b",), ("c",))

    def test_cancel_cancels_active_runs_and_waits(self) -> None:
        """With ``cancel`` the active runs are cancelled and the new date waits for them."""
        plan = plan_due(["b"], WorkflowState(active=("r1",)), overlap="cancel", max_active_runs=1)
        assert (plan.cancel, plan.start, plan.backlog) == (("r1",), (), ("b",))

    def test_backlog_starts_when_the_active_run_ends(self) -> None:
        """A buffered date starts on the first tick with a free slot."""
        plan = plan_due([], WorkflowState(backlog=("b",)), overlap="buffer", max_active_runs=1)
        assert (plan.start, plan.backlog) == (("b",), ())


class TestHistory:
    def test_consecutive_failures_and_p95(self, tmp_path: Path) -> None:
        """Failures count back to the last non-failed run; p95 is the nearest-rank value."""
        store = StateStore(tmp_path / "state.db")
        for i, state in enumerate(["failed", "succeeded", "failed", "failed"]):
            run = store.create_run("etl", ["t"], run_id=f"r{i}")
            store.start_attempt(run, "t", 1, None)
            store.finish_attempt(run, "t", 1, "succeeded", finished_at=time.time() + i + 1)
            store.set_run_state(run, state)
            time.sleep(0.001)
        assert consecutive_failures(store, "etl") == 2
        assert p95_durations(store, "etl")["t"] == pytest.approx(4, abs=0.5)
        assert latest_by_logical_date(store, "etl") == {}

    def test_sla_at_risk_counts_the_chain_still_ahead(self) -> None:
        """A task is at risk when elapsed time plus the p95 of its unfinished chain passes its
        SLA; finished tasks and tasks without an SLA never are."""
        spec = WorkflowSpec(name="etl", tasks=(
            TaskSpec(name="a", command="true"),
            TaskSpec(name="b", command="true", depends_on=("a",)),
            TaskSpec(name="c", command="true", depends_on=("b",), sla=100),
        ))
        typical = {"a": 30.0, "b": 30.0, "c": 30.0}
        assert sla_at_risk(spec, 0, set(), typical) == []
        assert sla_at_risk(spec, 20, set(), typical) == ["c"]
        assert sla_at_risk(spec, 20, {"a"}, typical) == []
        assert sla_at_risk(spec, 200, {"a", "b", "c"}, typical) == []
