"""Metrics: bus events become Prometheus series in a private registry."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from forge_core.events import Event, EventBus
from forge_core.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


class TestMetrics:
    def test_events_update_counters_and_histograms(self) -> None:
        """A run with a retried task shows in run, task, retry, wait and duration series."""
        metrics, bus = Metrics(), EventBus()
        bus.subscribe(metrics.on_event)

        def ev(kind: str, at: float, task: str | None = None, **data: object) -> None:
            bus.publish(Event(kind=kind, run_id="r1", workflow="etl", at=at, task=task, data=data))

        ev("run.started", 0)
        ev("task.queued", 0, "load")
        ev("task.started", 2, "load")
        ev("task.retrying", 3, "load")
        ev("task.started", 4, "load")
        ev("task.succeeded", 9, "load")
        ev("sla.missed", 9, "load")
        ev("run.finished", 9, state="succeeded")
        assert sample(metrics, "forge_runs_total", workflow="etl", state="succeeded") == 1
        assert sample(metrics, "forge_runs_active", workflow="etl") == 0
        assert sample(metrics, "forge_tasks_total", state="succeeded") == 1
        assert sample(metrics, "forge_task_retries_total", task="load") == 1
        assert sample(metrics, "forge_sla_missed_total", task="load") == 1
        assert sample(metrics, "forge_task_queue_wait_seconds_sum", workflow="etl") == 2
        assert sample(metrics, "forge_task_duration_seconds_count", task="load") == 2
        assert sample(metrics, "forge_task_duration_seconds_sum", task="load") == 6

    def test_registry_is_private(self) -> None:
        """Two Metrics objects do not share series (no global registry)."""
        a, b = Metrics(), Metrics()
        a.observe_lag("etl", 0.5)
        assert sample(a, "forge_scheduler_lag_seconds_count", workflow="etl") == 1
        assert b"forge_scheduler_lag_seconds_count{" not in b.render()
