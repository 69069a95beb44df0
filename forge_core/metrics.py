"""Prometheus metrics for the daemon: a private registry fed by the event bus (runs and tasks
by state, task durations, queue wait, retries, SLA misses) and by the scheduler (lag),
rendered in the text exposition format for ``/metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from .events import Event

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600)
_TASK_END = {"task.succeeded", "task.failed", "task.skipped", "task.upstream_failed",
             "task.cancelled"}


class Metrics:
    """Every Forge metric in one :class:`CollectorRegistry` (not the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("forge_runs_total", "Runs finished, by workflow and state.",
                            ["workflow", "state"], registry=r)
        self.runs_started = Counter("forge_runs_started_total", "Runs started, by workflow.",
                                    ["workflow"], registry=r)
        self.runs_active = Gauge("forge_runs_active", "Runs being driven now, by workflow.",
                                 ["workflow"], registry=r)
        self.tasks = Counter("forge_tasks_total", "Task instances finished, by state.",
                             ["workflow", "state"], registry=r)
        self.duration = Histogram("forge_task_duration_seconds",
                                  "Task attempt duration (started to finished).",
                                  ["workflow", "task"], buckets=_BUCKETS, registry=r)
        self.queue_wait = Histogram("forge_task_queue_wait_seconds",
                                    "Time from task queued to task started.", ["workflow"],
                                    buckets=_BUCKETS, registry=r)
        self.retries = Counter("forge_task_retries_total", "Task retries scheduled.",
                               ["workflow", "task"], registry=r)
        self.sla_missed = Counter("forge_sla_missed_total", "Task SLA misses.",
                                  ["workflow", "task"], registry=r)
        self.sla_at_risk = Counter("forge_sla_at_risk_total", "SLA-at-risk warnings.",
                                   ["workflow", "task"], registry=r)
        self.hooks_failed = Counter("forge_hooks_failed_total", "Hooks that failed.",
                                    ["workflow"], registry=r)
        self.scheduler_lag = Histogram("forge_scheduler_lag_seconds",
                                       "Delay between a fire time and the run's start.",
                                       ["workflow"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2,
                                                              5, 10, 30, 60), registry=r)
        self.scheduler_last_lag = Gauge("forge_scheduler_last_lag_seconds",
                                        "Lag of the most recent scheduled run.", ["workflow"],
                                        registry=r)
        self.schedules_skipped = Counter("forge_schedules_skipped_total",
                                         "Fire times dropped by the overlap policy.",
                                         ["workflow"], registry=r)
        self.paused = Gauge("forge_workflow_paused", "1 while a workflow is paused.",
                            ["workflow"], registry=r)
        self._queued_at: dict[tuple[str, str], float] = {}
        self._started_at: dict[tuple[str, str], float] = {}

    def observe_lag(self, workflow: str, seconds: float) -> None:
        self.scheduler_lag.labels(workflow).observe(max(0.0, seconds))
        self.scheduler_last_lag.labels(workflow).set(max(0.0, seconds))

    def on_event(self, event: Event) -> None:
        """An :class:`~forge_core.events.EventBus` subscriber."""
        wf, kind, key = event.workflow, event.kind, (event.run_id, event.task or "")
        if kind in ("run.started", "run.resumed"):
            self.runs_started.labels(wf).inc()
            self.runs_active.labels(wf).inc()
        elif kind == "run.finished":
            self.runs.labels(wf, str(event.data.get("state", "unknown"))).inc()
            self.runs_active.labels(wf).dec()
        elif kind == "task.queued":
            self._queued_at[key] = event.at
        elif kind == "task.started":
            self._started_at[key] = event.at
            queued = self._queued_at.pop(key, None)
            if queued is not None:
                self.queue_wait.labels(wf).observe(max(0.0, event.at - queued))
        elif kind == "task.retrying":
            self.retries.labels(wf, event.task or "").inc()
            self._end_attempt(wf, key, event.at)
        elif kind in _TASK_END:
            self.tasks.labels(wf, kind.removeprefix("task.")).inc()
            self._end_attempt(wf, key, event.at)
        elif kind == "sla.missed":
            self.sla_missed.labels(wf, event.task or "").inc()
        elif kind == "sla.at_risk":
            self.sla_at_risk.labels(wf, event.task or "").inc()
        elif kind == "hook.failed":
            self.hooks_failed.labels(wf).inc()

    def _end_attempt(self, workflow: str, key: tuple[str, str], at: float) -> None:
        started = self._started_at.pop(key, None)
        if started is not None:
            self.duration.labels(workflow, key[1]).observe(max(0.0, at - started))

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
