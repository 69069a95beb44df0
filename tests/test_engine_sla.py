"""SLA at risk, announced by the engine itself (so by `forge run`, resume and the daemon alike):
driven by task durations recorded in a real state store's history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from forge_core.dag._sla import SlaWatch
from forge_core.events import Event, EventBus
from forge_core.runner import resume_run, run_workflow
from forge_core.spec import TaskSpec, WorkflowSpec
from forge_core.state import StateStore

pytestmark = pytest.mark.anyio


def etl(*, load_sla: float, report_sla: float = 10_000, gate: Path | None = None) -> WorkflowSpec:
    """extract → load (SLA) → report (a generous SLA); ``gate`` makes extract wait for a file."""
    extract = ("true",) if gate is None else (
        "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done")
    return WorkflowSpec(name="etl", tasks=(
        TaskSpec(name="extract", command=extract),
        TaskSpec(name="load", command=("true",), depends_on=("extract",), sla=load_sla),
        TaskSpec(name="report", command=("true",), depends_on=("load",), sla=report_sla),
    ))


def record_history(store: StateStore, durations: dict[str, float], runs: int = 3) -> None:
    """Earlier succeeded runs of ``etl`` whose attempts took ``durations`` seconds."""
    for _ in range(runs):
        run_id = store.create_run("etl", list(durations))
        for task, seconds in durations.items():
            store.start_attempt(run_id, task, 1, None)
            store.finish_attempt(run_id, task, 1, "succeeded", exit_code=0,
                                 finished_at=time.time() + seconds)
            store.set_task(run_id, task, "succeeded")
        store.set_run_state(run_id, "succeeded", started_at=time.time(), finished_at=time.time())


async def drive(spec: WorkflowSpec, store: StateStore, home: Path, events: list[Event]) -> Any:
    bus = EventBus()
    bus.subscribe(events.append)
    return await run_workflow(spec, store=store, home=home, bus=bus)


class TestSlaAtRisk:
    async def test_a_run_warns_once_when_history_says_the_sla_will_be_missed(
        self, tmp_path: Path
    ) -> None:
        """extract typically takes 100 s, so load (SLA 60 s) is at risk from the start: one
        sla.at_risk for load, stored and announced; report's generous SLA stays quiet."""
        store = StateStore(tmp_path / "state.db")
        record_history(store, {"extract": 100.0, "load": 5.0, "report": 1.0})
        events: list[Event] = []
        record = await drive(etl(load_sla=60), store, tmp_path, events)
        assert record.state == "succeeded"
        warned = [e for e in events if e.kind == "sla.at_risk"]
        assert [(e.task, e.data["sla"]) for e in warned] == [("load", 60)]
        assert warned[0].data["expected"] >= 105
        stored = [e for e in store.events(record.run_id) if e.kind == "sla.at_risk"]
        assert [e.task for e in stored] == ["load"]
        assert not any(e.kind == "sla.missed" for e in events)

    async def test_no_history_means_no_warning(self, tmp_path: Path) -> None:
        """A workflow that never ran before has no typical durations: nothing is at risk."""
        store = StateStore(tmp_path / "state.db")
        events: list[Event] = []
        await drive(etl(load_sla=60), store, tmp_path, events)
        assert not any(e.kind.startswith("sla.") for e in events)

    async def test_a_resumed_run_does_not_warn_again(self, tmp_path: Path) -> None:
        """Warned, cancelled mid-run, then resumed: the warning is not repeated."""
        store = StateStore(tmp_path / "state.db")
        record_history(store, {"extract": 100.0, "load": 5.0, "report": 1.0})
        gate = tmp_path / "gate"
        spec = etl(load_sla=60, gate=gate)
        first: list[Event] = []
        with anyio.move_on_after(30):
            bus = EventBus()
            bus.subscribe(first.append)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run_workflow(spec, store=store, home=tmp_path, bus=bus))
                while not any(e.kind == "sla.at_risk" for e in first):
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        assert [e.task for e in first if e.kind == "sla.at_risk"] == ["load"]
        gate.touch()
        again: list[Event] = []
        bus = EventBus()
        bus.subscribe(again.append)
        run_id = store.list_runs("etl", limit=1)[0].run_id
        record = await resume_run(spec, run_id, store=store, home=tmp_path, bus=bus)
        assert record.state == "succeeded"
        assert not any(e.kind == "sla.at_risk" for e in again)
        assert [e.task for e in store.events(run_id) if e.kind == "sla.at_risk"] == ["load"]


class TestSlaWatch:
    def test_risk_comes_before_the_miss_and_each_is_said_once(self) -> None:
        """With 6 s of typical work ahead of a 10 s SLA: quiet until 4 s, at risk after, then
        missed at 10 s without a second warning; nothing is left to watch after that."""
        spec = WorkflowSpec(name="w", tasks=(
            TaskSpec(name="a", command=("true",)),
            TaskSpec(name="b", command=("true",), depends_on=("a",), sla=10),
        ))
        watch = SlaWatch(spec=spec, started_at=1000.0, typical={"a": 4.0, "b": 2.0})
        states = {"a": "running", "b": "pending"}
        early = watch.check(1003.0, states)
        assert (dict(early.at_risk), early.missed, early.next_at) == ({}, (), 1004.0)
        risky = watch.check(1004.5, states)
        assert (dict(risky.at_risk), risky.missed, risky.next_at) == ({"b": 6.0}, (), 1010.0)
        late = watch.check(1010.0, states)
        assert (dict(late.at_risk), late.missed, late.next_at) == ({}, ("b",), None)

    def test_finished_upstream_work_no_longer_counts(self) -> None:
        """Once a is done only b's own typical time is ahead of it."""
        spec = WorkflowSpec(name="w", tasks=(
            TaskSpec(name="a", command=("true",)),
            TaskSpec(name="b", command=("true",), depends_on=("a",), sla=10),
        ))
        watch = SlaWatch(spec=spec, started_at=1000.0, typical={"a": 4.0, "b": 2.0})
        found = watch.check(1005.0, {"a": "succeeded", "b": "running"})
        assert (dict(found.at_risk), found.next_at) == ({}, 1008.0)
