"""How a running workflow looks: a live table for a person at a terminal, one plain line
per event otherwise. Both are event-bus subscribers."""

from __future__ import annotations

import sys
import time
from typing import Any

import attrs

from ..events import Event

__all__ = ["LiveView", "PlainView"]

_STYLE = {
    "pending": "dim", "queued": "cyan", "running": "bold yellow", "up_for_retry": "yellow",
    "succeeded": "green", "failed": "bold red", "skipped": "magenta",
    "upstream_failed": "red", "cancelled": "dim red",
}

_STATE_OF = {
    "task.queued": "queued", "task.started": "running", "task.retrying": "up_for_retry",
    "task.succeeded": "succeeded", "task.failed": "failed", "task.skipped": "skipped",
    "task.upstream_failed": "upstream_failed", "task.cancelled": "cancelled",
}


def _line(event: Event) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    data = event.data
    detail = ""
    if "attempt" in data:
        detail += f" attempt={data['attempt']}"
    if data.get("error"):
        detail += f" error={data['error']!r}"
    if "delay" in data:
        detail += f" retry_in={data['delay']}s"
    if "state" in data:
        detail += f" state={data['state']}"
    if "duration" in data:
        detail += f" duration={float(data['duration']):.2f}s"
    if "sla" in data:
        detail += f" sla={data['sla']}s elapsed={data.get('elapsed')}s"
        if "expected" in data:
            detail += f" expected_end={data['expected']}s"
    if event.kind == "hook.failed":
        detail += f" hook={data.get('hook')!r} detail={data.get('detail')!r}"
    who = f" {event.task}" if event.task else ""
    return f"{stamp} {event.kind}{who}{detail}"


@attrs.define
class PlainView:
    """One line per event on stderr, for logs and pipes."""

    def __call__(self, event: Event) -> None:
        print(_line(event), file=sys.stderr, flush=True)


@attrs.define
class LiveView:
    """A rich table of task states redrawn as events arrive."""

    tasks: list[str]
    title: str
    _states: dict[str, str] = attrs.field(init=False)
    _attempts: dict[str, int] = attrs.field(init=False, factory=dict)
    _started: dict[str, float] = attrs.field(init=False, factory=dict)
    _ended: dict[str, float] = attrs.field(init=False, factory=dict)
    _live: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._states = dict.fromkeys(self.tasks, "pending")

    def __enter__(self) -> LiveView:
        from rich.live import Live

        # drawn at each refresh (8 a second), not at each event: a 1,000-task table is
        # built 8 times a second, not 3,000 times a run
        self._live = Live(get_renderable=self._render, refresh_per_second=8, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)  # its last refresh draws the final states

    def close(self) -> None:
        """Stop drawing and give the terminal back (before an exit that skips ``__exit__``)."""
        if self._live is not None:
            self._live.stop()

    def __call__(self, event: Event) -> None:
        if event.task and event.kind in _STATE_OF:
            self._states[event.task] = _STATE_OF[event.kind]
            if event.kind == "task.started":
                self._attempts[event.task] = int(event.data.get("attempt", 1))
                self._started.setdefault(event.task, event.at)
            elif _STATE_OF[event.kind] not in ("queued", "running", "up_for_retry"):
                self._ended[event.task] = event.at

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title, title_justify="left", expand=False)
        for col in ("task", "state", "attempt", "time"):
            table.add_column(col)
        now = time.time()
        for name in self.tasks:
            state = self._states[name]
            begun = self._started.get(name)
            took = f"{self._ended.get(name, now) - begun:.1f}s" if begun else ""
            table.add_row(name, f"[{_STYLE[state]}]{state}[/]",
                          str(self._attempts.get(name, "")), took)
        return table
