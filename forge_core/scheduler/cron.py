"""The ``cron`` scheduler backend: cron expressions (through croniter), ``@hourly``-style
aliases and fixed intervals (``every 15m``), each in an IANA time zone, DST-correct.

DST rules follow Vixie cron: a fire time inside the skipped spring-forward hour runs at the
first instant after the jump; a fixed-hour job inside the repeated fall-back hour runs once,
while a job whose hour field is ``*`` keeps firing on wall-clock minutes in both passes.
Intervals are elapsed time aligned to the Unix epoch, so time zones do not move them.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..abc import Scheduler, Trigger
from ..exceptions import ConfigError

__all__ = ["ALIASES", "CronScheduler", "parse_interval"]

ALIASES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"^every\s+((?:\d+\s*[smhd]\s*)+)$", re.IGNORECASE)
_PART = re.compile(r"(\d+)\s*([smhd])", re.IGNORECASE)


def parse_interval(expression: str) -> timedelta | None:
    """``every 15m`` / ``every 1h30m`` as a timedelta; ``None`` when not an interval."""
    match = _INTERVAL.match(expression.strip())
    if match is None:
        return None
    seconds = sum(int(n) * _UNITS[u.lower()] for n, u in _PART.findall(match.group(1)))
    return timedelta(seconds=seconds)


def _zone(trigger: Trigger) -> ZoneInfo:
    try:
        return ZoneInfo(trigger.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {trigger.timezone!r}; use an IANA name like 'Europe/Paris' or 'UTC'"
        ) from None


def _cron(expression: str) -> str:
    text = " ".join(expression.split())
    return ALIASES.get(text.lower(), text)


class CronScheduler(Scheduler):
    """Cron expressions, aliases and fixed intervals in a per-workflow time zone."""

    name = "cron"

    def validate(self, trigger: Trigger) -> None:
        _zone(trigger)
        expression = trigger.expression.strip()
        interval = parse_interval(expression)
        if interval is not None:
            if interval <= timedelta(0):
                raise ConfigError(f"schedule {expression!r}: an interval must be longer than 0s")
            return
        if expression.lower().startswith("every"):
            raise ConfigError(
                f"schedule {expression!r} is not an interval; write e.g. 'every 15m' or 'every 2h'"
                " (units s, m, h, d)"
            )
        if not croniter.is_valid(_cron(expression)):
            raise ConfigError(
                f"schedule {expression!r} is not a cron expression ('*/5 * * * *'), an alias"
                f" ({', '.join(ALIASES)}) or an interval ('every 15m')"
            )

    def next_after(self, trigger: Trigger, after: datetime) -> datetime | None:
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        self.validate(trigger)
        zone = _zone(trigger)
        interval = parse_interval(trigger.expression)
        if interval is not None:
            step = interval.total_seconds()
            ts = (math.floor(after.timestamp() / step) + 1) * step
            return _fixed(datetime.fromtimestamp(ts, UTC), zone)
        expression = _cron(trigger.expression)
        fixed_hour = expression.split()[1] != "*"
        it = croniter(expression, after.astimezone(zone))
        while True:
            candidate: datetime = it.get_next(datetime)
            if candidate <= after:
                continue
            if fixed_hour and _repeated_wall_time(candidate, zone):
                continue
            return _fixed(candidate, zone)


def _fixed(moment: datetime, zone: ZoneInfo) -> datetime:
    """``moment`` as local time with a fixed UTC offset: the offset shows in ISO strings, and
    comparisons and subtraction stay exact through DST changes (same-``ZoneInfo`` arithmetic
    in Python ignores the offset)."""
    local = moment.astimezone(zone)
    offset = local.utcoffset() or timedelta(0)
    return local.astimezone(timezone(offset))


def _repeated_wall_time(moment: datetime, zone: ZoneInfo) -> bool:
    """True when ``moment`` is the second pass through an ambiguous (fall-back) wall time."""
    naive = moment.astimezone(zone).replace(tzinfo=None)
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return False
    return moment.astimezone(UTC) == second.astimezone(UTC)
