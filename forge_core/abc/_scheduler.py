"""The Scheduler interface: when workflow runs start.

A backend turns a trigger expression (cron, ``@hourly`` aliases, intervals) into fire
times; the shared methods compute catch-up and backfill windows from that one hook.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import ClassVar

import attrs

from ._common import Availability

__all__ = ["Scheduler", "Trigger"]


@attrs.frozen(kw_only=True)
class Trigger:
    """A schedule expression in a time zone (IANA name)."""

    expression: str
    timezone: str = "UTC"


class Scheduler(abc.ABC):
    name: ClassVar[str] = ""

    @classmethod
    def available(cls) -> Availability:
        return Availability.yes()

    @abc.abstractmethod
    def validate(self, trigger: Trigger) -> None:
        """Raise :class:`~forge_core.exceptions.ConfigError` for an expression or time zone
        this backend cannot read."""

    @abc.abstractmethod
    def next_after(self, trigger: Trigger, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (aware datetimes), or ``None``."""

    def between(self, trigger: Trigger, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire times in ``[start, end]``, oldest first (backfill)."""
        t = self.next_after(trigger, start - timedelta(microseconds=1))
        while t is not None and t <= end:
            yield t
            t = self.next_after(trigger, t)

    def due(
        self, trigger: Trigger, last: datetime | None, now: datetime, catchup: timedelta | None
    ) -> list[datetime]:
        """Fire times missed since ``last`` up to ``now``: the newest always, and with a
        ``catchup`` window the older ones within it of ``now`` too (a window never runs less
        than none: ``catchup: 0`` is no catch-up, not no runs)."""
        start = last if last is not None else now
        missed = list(self.between(trigger, start + timedelta(microseconds=1), now))
        if catchup is None or last is None:
            return missed[-1:]
        return [t for t in missed[:-1] if t >= now - catchup] + missed[-1:]
