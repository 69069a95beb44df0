"""Trigger rules: given how a task's direct upstream tasks ended, should it run now, wait,
or be skipped / marked upstream_failed? Pure functions, Airflow's semantics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..spec import TriggerRule

__all__ = ["Decision", "decide"]

Decision = Literal["wait", "run", "skipped", "upstream_failed"]

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
