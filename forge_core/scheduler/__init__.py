"""When workflow runs start: the core ``cron`` scheduler backend and the pure policy that
turns fire times, overlap rules and run history into decisions for the daemon."""

from __future__ import annotations

from .cron import CronScheduler, parse_interval
from .policy import Plan, WorkflowState, plan_due

__all__ = ["CronScheduler", "Plan", "WorkflowState", "parse_interval", "plan_due"]
