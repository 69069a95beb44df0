"""A run's Gantt chart as one self-contained HTML file: a row per task, a bar per attempt
over time, coloured by state, with the attempt number on the bar and details on hover.

The bars are drawn by the page's script from the embedded JSON, so a browser that shows
them has run the page (the tests check this in headless Chromium).
"""

from __future__ import annotations

import time
from typing import Any

from ..secrets import Redactor
from ..state import RunRecord, TaskRecord
from ._page import BASE_CSS, STATE_COLOURS, esc, legend, script_json, state_css

__all__ = ["gantt_data", "gantt_html"]


def _task_data(task: TaskRecord, end: float) -> dict[str, Any]:
    attempts = [
        {"number": a.number, "state": a.state, "start": a.started_at,
         "end": a.finished_at if a.finished_at is not None else end,
         "open": a.finished_at is None, "exit_code": a.exit_code, "error": a.error}
        for a in task.attempts if a.started_at is not None
    ]
    return {"name": task.name, "state": task.state, "attempts": attempts,
            "sla_missed": task.sla_missed}


def gantt_data(run: RunRecord, *, now: float | None = None) -> dict[str, Any]:
    """What the chart draws, as plain JSON-able data."""
    end = run.finished_at or (now if now is not None else time.time())
    tasks = [_task_data(t, end) for t in run.tasks]
    starts = [a["start"] for t in tasks for a in t["attempts"]]
    ends = [a["end"] for t in tasks for a in t["attempts"]]
    t0 = min([run.started_at or run.created_at, *starts])
    t1 = max([t0 + 0.001, *ends, run.finished_at or t0])
    return {"run_id": run.run_id, "workflow": run.workflow, "state": run.state,
            "logical_date": run.logical_date, "t0": t0, "t1": t1, "tasks": tasks}


_GANTT_JS = """
const run = JSON.parse(document.getElementById('forge-data').textContent);
const span = run.t1 - run.t0;
const pct = t => (100 * (t - run.t0) / span).toFixed(3) + '%';
const fmt = s => s < 60 ? s.toFixed(2) + 's' : Math.floor(s / 60) + 'm' + Math.round(s % 60) + 's';
const chart = document.getElementById('chart');
const tip = document.getElementById('tip');
const axis = document.createElement('div');
axis.className = 'row axis';
axis.innerHTML = '<div class="label"></div><div class="track"></div>';
for (let i = 0; i <= 4; i++) {
  const tick = document.createElement('span');
  tick.className = 'tick'; tick.style.left = (25 * i) + '%';
  tick.textContent = '+' + fmt(span * i / 4);
  axis.children[1].appendChild(tick);
}
chart.appendChild(axis);
for (const task of run.tasks) {
  const row = document.createElement('div');
  row.className = 'row';
  row.innerHTML = '<div class="label"></div><div class="track"></div>';
  row.children[0].textContent = task.name;
  row.children[0].title = task.state + (task.sla_missed ? ' (SLA missed)' : '');
  for (const a of task.attempts) {
    const bar = document.createElement('div');
    bar.className = 'bar state-' + a.state + (a.open ? ' open' : '');
    bar.dataset.task = task.name;
    bar.dataset.attempt = a.number;
    bar.style.left = pct(a.start);
    bar.style.width = 'max(3px, calc(' + pct(a.end) + ' - ' + pct(a.start) + '))';
    bar.textContent = '#' + a.number;
    const lines = [task.name + ' — attempt ' + a.number, 'state: ' + a.state,
      'started: +' + fmt(a.start - run.t0),
      'duration: ' + fmt(a.end - a.start) + (a.open ? '+' : '')];
    if (a.exit_code !== null) lines.push('exit code: ' + a.exit_code);
    if (a.error) lines.push('error: ' + a.error);
    bar.title = lines.join('\\n');
    bar.addEventListener('mousemove', e => {
      tip.textContent = bar.title; tip.style.display = 'block';
      tip.style.left = (e.pageX + 12) + 'px'; tip.style.top = (e.pageY + 12) + 'px';
    });
    bar.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
    row.children[1].appendChild(bar);
  }
  chart.appendChild(row);
}
document.getElementById('summary').textContent =
  run.tasks.length + ' tasks, ' + fmt(span) + ' wall time';
"""

_GANTT_CSS = """
#chart{border-top:1px solid #e5e7eb}
.row{display:flex;align-items:center;border-bottom:1px solid #f1f5f9;height:28px}
.label{width:200px;flex:none;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
  padding-right:8px}
.track{position:relative;flex:1;height:100%}
.bar{position:absolute;top:5px;height:18px;border-radius:3px;color:#fff;font-size:11px;
  line-height:18px;padding-left:3px;overflow:hidden;box-sizing:border-box;cursor:default}
.bar.open{background-image:repeating-linear-gradient(45deg,transparent 0 6px,
  rgba(255,255,255,.3) 6px 12px)}
.axis{color:#6b7280;font-size:11px}
.tick{position:absolute;top:6px;transform:translateX(-50%)}
.tick:first-child{transform:none}
.tick:last-child{transform:translateX(-100%)}
#tip{position:absolute;display:none;white-space:pre;background:#111827;color:#f9fafb;
  padding:6px 8px;border-radius:4px;font-size:12px;pointer-events:none}
"""


def gantt_html(run: RunRecord, *, redactor: Redactor | None = None,
               now: float | None = None) -> str:
    """The chart of ``run`` (with its tasks and attempts) as one HTML document; error texts
    pass through ``redactor`` when given."""
    data = gantt_data(run, now=now)
    if redactor is not None:
        data = redactor.redact_obj(data)
    states = [s for s in STATE_COLOURS if any(
        a["state"] == s for t in data["tasks"] for a in t["attempts"])]
    title = f"{run.workflow} run {run.run_id}"
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(data["t0"]))
    logical = f" · logical date {esc(run.logical_date)}" if run.logical_date else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} — Forge Gantt</title>
<style>{BASE_CSS}{state_css()}{_GANTT_CSS}</style></head><body>
<h1>{esc(title)}</h1>
<div class="meta">state <b>{esc(run.state)}</b> · started {esc(when)}{logical} ·
<span id="summary"></span></div>
{legend(states)}
<div id="chart"></div><div id="tip"></div>
<noscript>This chart is drawn by JavaScript; the data is in the page source.</noscript>
<script type="application/json" id="forge-data">{script_json(data)}</script>
<script>{_GANTT_JS}</script>
</body></html>
"""
