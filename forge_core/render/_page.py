"""What both HTML pictures share: escaping, embedded JSON that cannot close its script tag,
and the colours of task states."""

from __future__ import annotations

import html
import json
from typing import Any

STATE_COLOURS: dict[str, str] = {
    "succeeded": "#2e9d5b",
    "failed": "#d64545",
    "upstream_failed": "#e08a3c",
    "running": "#3b82f6",
    "queued": "#8b9bb4",
    "pending": "#c2c8d0",
    "up_for_retry": "#e6b422",
    "skipped": "#b08fd6",
    "cancelled": "#6b7280",
    "interrupted": "#a16207",
}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def script_json(data: Any) -> str:
    """JSON safe to place inside ``<script type="application/json">``."""
    text = json.dumps(data, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def state_css(scope: str = "") -> str:
    return "\n".join(
        f"{scope}.state-{s}{{fill:{c};background:{c}}}" for s, c in STATE_COLOURS.items()
    )


BASE_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2937}
h1{font-size:18px;margin:0 0 4px}
.meta{color:#6b7280;margin-bottom:16px}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
"""


def legend(states: list[str]) -> str:
    items = "".join(
        f'<span><i class="state-{esc(s)}"></i>{esc(s)}</span>' for s in states
    )
    return f'<div class="legend">{items}</div>'
