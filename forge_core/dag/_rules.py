"""Trigger rules (given how a task's direct upstream tasks ended, should it run now, wait,
or be skipped / marked upstream_failed? Airflow's semantics) and the delay before a retry.
Pure functions."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from ..spec import TaskSpec, TriggerRule

__all__ = ["EARLY_RULES", "Decision", "decide", "retry_delay"]

Decision = Literal["wait", "run", "skipped", "upstream_failed"]

EARLY_RULES = frozenset({TriggerRule.ONE_SUCCESS, TriggerRule.ONE_FAILED})
"""Rules that can decide before every upstream task has finished."""

_FAILED = frozenset({"failed", "upstream_failed"})
_DONE = frozenset({"succeeded", "failed", "upstream_failed", "skipped", "cancelled"})


def decide(rule: TriggerRule, upstream: Sequence[str]) -> Decision:
    """Decide from the upstream task states (any state; unfinished ones mean "not yet")."""
    if not upstream:
        return "run"
    done = [s for s in upstream if s in _DONE]
    succeeded = sum(s == "succeeded" for s in done)
    failed = sum(s in _FAILED for s in done)
    skipped = sum(s == "skipped" for s in done)
    all_done = len(done) == len(upstream)
    if rule is TriggerRule.ONE_SUCCESS:
        if succeeded:
            return "run"
        if not all_done:
            return "wait"
        return "upstream_failed" if failed == len(upstream) else "skipped"
    if rule is TriggerRule.ONE_FAILED:
        if failed:
            return "run"
        return "skipped" if all_done else "wait"
    if not all_done:
        return "wait"
    if rule is TriggerRule.ALL_DONE:
        return "run"
    if rule is TriggerRule.ALL_SUCCESS:
        if succeeded == len(upstream):
            return "run"
        return "upstream_failed" if failed else "skipped"
    if rule is TriggerRule.ALL_FAILED:
        return "run" if failed == len(upstream) else "skipped"
    if rule is TriggerRule.NONE_FAILED:
        return "upstream_failed" if failed else "run"
    # NONE_SKIPPED
    return "skipped" if skipped else "run"


def retry_delay(task: TaskSpec, failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before the retry that follows the ``failures``-th failure:
    exponential backoff capped at ``max_retry_delay``, with "equal jitter" (half fixed,
    half random) so retries of many tasks do not stampede."""
    base = task.retry_delay * (task.retry_backoff ** max(0, failures - 1))
    delay = min(base, task.max_retry_delay)
    if task.retry_jitter and delay > 0:
        delay = delay / 2 + (rng or random).uniform(0, delay / 2)
    return delay
