"""Workflow specs: frozen records that YAML, TOML and the Python API all produce.

A spec says what should happen; it holds no state. The config loader
(:mod:`forge_core.config`) builds these through one cattrs converter, and the DAG
engine (:mod:`forge_core.dag`) runs them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "HookSpec",
    "ProjectSpec",
    "ResourcesSpec",
    "SecretSpec",
    "Settings",
    "TaskSpec",
    "TriggerRule",
    "WorkflowSpec",
]


class TriggerRule(enum.StrEnum):
    """When a task may run, given how its upstream tasks ended (Airflow's names)."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    NONE_SKIPPED = "none_skipped"


@attrs.frozen(kw_only=True)
class ResourcesSpec:
    """Limits for a task's process or container; memory in bytes, cpu_time in seconds."""

    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None
    cpu_time: float | None = None


@attrs.frozen(kw_only=True)
class HookSpec:
    """Something to do when a task fails, succeeds, retries or misses its SLA: run a command
    (argv, or a shell line with ``shell: true``) and/or POST a JSON payload to a webhook."""

    command: str | tuple[str, ...] | None = None
    shell: bool = False
    webhook: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    timeout: float = 30.0


@attrs.frozen(kw_only=True)
class SecretSpec:
    """A secret taken from an environment variable or a file; tasks get it as ``env``."""

    env: str | None = None
    file: str | None = None


@attrs.frozen(kw_only=True)
class TaskSpec:
    """One node of a workflow: a command (argv or, with ``shell``, a shell line) or a Python
    callable. Durations are seconds."""

    name: str
    command: str | tuple[str, ...] | None = None
    python: str | None = None
    """``"module:function"`` or ``"path/file.py:function"``. Its parameters are filled by name:
    a workflow param of that name, or the outputs (a dict) of an upstream task of that name."""
    func: Callable[..., Any] | None = attrs.field(default=None, eq=False, repr=False)
    description: str = ""
    depends_on: tuple[str, ...] = ()
    shell: bool = False
    env: Mapping[str, str] = attrs.field(factory=dict)
    workdir: str | None = None
    timeout: float | None = None
    grace: float = 10.0
    retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    """Multiplier applied to the delay after each retry (1 keeps it constant)."""
    max_retry_delay: float = 3600.0
    retry_jitter: bool = True
    sla: float | None = None
    """Seconds after the run starts by which the task should have succeeded."""
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    on_failure: str | None = None
    on_success: str | None = None
    on_retry: str | None = None
    on_sla_miss: str | None = None
    skip_exit_code: int | None = None
    """An exit code that marks the task skipped instead of failed."""
    executor: str | None = None
    """Overrides the workflow's executor for this task."""
    kind: str | None = None
    """Task kind for the ``queue`` executor (default: ``command`` or ``python``)."""
    image: str | None = None
    volumes: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    resources: ResourcesSpec = attrs.field(factory=ResourcesSpec)


@attrs.frozen(kw_only=True)
class WorkflowSpec:
    """A named DAG of tasks and how and when it runs."""

    name: str
    tasks: tuple[TaskSpec, ...]
    description: str = ""
    schedule: str | None = None
    """Cron expression, ``@hourly``-style alias, or ``every 15m``."""
    timezone: str = "UTC"
    catchup: float | None = None
    """Seconds of missed schedule to catch up after downtime (``None``: only the latest)."""
    max_active_runs: int = 1
    overlap: Literal["skip", "buffer", "allow", "cancel"] = "skip"
    pause_after_failures: int | None = None
    concurrency: int = 4
    executor: str = "thread"
    runtime: str = "process"
    env: Mapping[str, str] = attrs.field(factory=dict)
    params: Mapping[str, Any] = attrs.field(factory=dict)
    secrets: Mapping[str, SecretSpec] = attrs.field(factory=dict)
    hooks: Mapping[str, HookSpec] = attrs.field(factory=dict)
    retention: int = 100
    """Runs kept per workflow; older ones are pruned."""
    source: str | None = attrs.field(default=None, eq=False)
    """The file the workflow came from, for messages."""

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


@attrs.frozen(kw_only=True)
class Settings:
    """Project-wide settings from the ``forge:`` section of a config file."""

    home: str | None = None
    queue: str | None = None
    """Queue URL: ``sqlite:///path`` or ``redis://host:port/db``."""
    daemon_host: str = "127.0.0.1"
    daemon_port: int = 8765
    daemon_token: str | None = None


@attrs.frozen(kw_only=True)
class ProjectSpec:
    """Everything one config file defines."""

    workflows: Mapping[str, WorkflowSpec] = attrs.field(factory=dict)
    settings: Settings = attrs.field(factory=Settings)
    source: str | None = attrs.field(default=None, eq=False)
