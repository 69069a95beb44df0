"""The DAG as text (Mermaid, DOT) and as a picture: a layered left-to-right layout computed
here (column = longest path from a root, rows ordered by their parents' rows), drawn as SVG
boxes and arrows, and wrapped in a self-contained HTML page."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..spec import TaskSpec, WorkflowSpec
from ._page import BASE_CSS, esc, legend, script_json, state_css

__all__ = ["Layout", "graph_dot", "graph_html", "graph_mermaid", "graph_svg", "layout"]

_CHAR_W, _BOX_H, _COL_GAP, _ROW_GAP, _PAD = 7.5, 36, 70, 22, 20


@attrs.frozen(kw_only=True)
class Box:
    name: str
    x: float
    y: float
    w: float
    h: float


@attrs.frozen(kw_only=True)
class Layout:
    """Node boxes and edges (upstream, downstream) in SVG coordinates."""

    boxes: Mapping[str, Box]
    edges: tuple[tuple[str, str], ...]
    width: float
    height: float


def _edges(spec: WorkflowSpec) -> list[tuple[str, str]]:
    names = {t.name for t in spec.tasks}
    return [(dep, t.name) for t in spec.tasks for dep in t.depends_on if dep in names]


def _depths(spec: WorkflowSpec) -> dict[str, int]:
    """Longest path from a root; tasks on a cycle (unvalidated specs) go last."""
    parents = {t.name: [d for d in t.depends_on if d != t.name] for t in spec.tasks}
    depth: dict[str, int] = {}
    remaining = [t.name for t in spec.tasks]
    while remaining:
        ready = [n for n in remaining if all(p in depth or p not in parents for p in parents[n])]
        if not ready:
            last = max(depth.values(), default=-1) + 1
            depth.update({n: last for n in remaining})
            break
        for n in ready:
            depth[n] = 1 + max((depth[p] for p in parents[n] if p in depth), default=-1)
        remaining = [n for n in remaining if n not in depth]
    return depth


def layout(spec: WorkflowSpec) -> Layout:
    """Place every task: one column per depth, rows ordered by the mean row of parents."""
    depth = _depths(spec)
    columns: dict[int, list[str]] = {}
    for t in spec.tasks:
        columns.setdefault(depth[t.name], []).append(t.name)
    row: dict[str, float] = {}
    for d in sorted(columns):
        order = list(columns[d])

        def key(n: str, order: list[str] = order) -> float:
            ps = [row[p] for p in spec.task(n).depends_on if p in row]
            return sum(ps) / len(ps) if ps else float(order.index(n))

        columns[d].sort(key=key)
        row.update({n: float(i) for i, n in enumerate(columns[d])})
    widths = {d: max(_box_w(n) for n in names) for d, names in columns.items()}
    tallest = max((len(c) for c in columns.values()), default=0)
    height = _PAD * 2 + tallest * (_BOX_H + _ROW_GAP) - (_ROW_GAP if tallest else 0)
    boxes: dict[str, Box] = {}
    x = float(_PAD)
    for d in sorted(columns):
        names = columns[d]
        span = len(names) * (_BOX_H + _ROW_GAP) - _ROW_GAP
        top = (height - span) / 2
        for i, n in enumerate(names):
            boxes[n] = Box(name=n, x=x, y=top + i * (_BOX_H + _ROW_GAP), w=widths[d], h=_BOX_H)
        x += widths[d] + _COL_GAP
    width = x - _COL_GAP + _PAD if columns else _PAD * 2
    return Layout(boxes=boxes, edges=tuple(_edges(spec)), width=width, height=max(height, 40))


def _box_w(name: str) -> float:
    return max(80.0, len(name) * _CHAR_W + 24)


def graph_mermaid(spec: WorkflowSpec) -> str:
    """A Mermaid ``flowchart`` (renders in GitHub and GitLab markdown)."""
    ids = {t.name: f"t{i}" for i, t in enumerate(spec.tasks)}
    lines = ["flowchart LR"]
    for t in spec.tasks:
        label = t.name.replace('"', "#quot;")
        lines.append(f'    {ids[t.name]}["{label}"]')
    lines += [f"    {ids[a]} --> {ids[b]}" for a, b in _edges(spec)]
    return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_dot(spec: WorkflowSpec) -> str:
    """Graphviz DOT (``dot -Tpng``)."""
    lines = [f"digraph {_dot_id(spec.name)} {{", "    rankdir=LR;",
             '    node [shape=box, style="rounded", fontname="sans-serif"];']
    lines += [f"    {_dot_id(t.name)};" for t in spec.tasks]
    lines += [f"    {_dot_id(a)} -> {_dot_id(b)};" for a, b in _edges(spec)]
    return "\n".join([*lines, "}"]) + "\n"


def graph_svg(spec: WorkflowSpec, states: Mapping[str, str] | None = None) -> str:
    """A standalone SVG of the DAG; ``states`` (task → state) colours the boxes."""
    lay = layout(spec)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{lay.width:.0f}"'
        f' height="{lay.height:.0f}" viewBox="0 0 {lay.width:.0f} {lay.height:.0f}"'
        ' font-family="sans-serif" font-size="13">',
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\""
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#6b7280"/>'
        "</marker></defs>",
        f"<style>.node rect{{fill:#eef2f7;stroke:#64748b}} {state_css('.node rect')}"
        " .node text{fill:#111827} .edge{fill:none;stroke:#6b7280;stroke-width:1.4}</style>",
    ]
    for a, b in lay.edges:
        s, t = lay.boxes[a], lay.boxes[b]
        x1, y1, x2, y2 = s.x + s.w, s.y + s.h / 2, t.x, t.y + t.h / 2
        mid = (x1 + x2) / 2
        parts.append(
            f'<path class="edge" data-from="{esc(a)}" data-to="{esc(b)}" marker-end="url(#arrow)"'
            f' d="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"/>'
        )
    for box in lay.boxes.values():
        state = (states or {}).get(box.name)
        cls = f' class="state-{esc(state)}"' if state else ""
        parts.append(
            f'<g class="node" data-task="{esc(box.name)}"><title>{esc(box.name)}</title>'
            f'<rect{cls} x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h}"'
            f' rx="6"/><text x="{box.x + box.w / 2:.1f}" y="{box.y + box.h / 2 + 4.5:.1f}"'
            f' text-anchor="middle">{esc(box.name)}</text></g>'
        )
    return "\n".join([*parts, "</svg>"]) + "\n"


def _task_info(t: TaskSpec) -> dict[str, object]:
    command = t.command if isinstance(t.command, str) or t.command is None else " ".join(t.command)
    return {"name": t.name, "command": command or t.python or "(python callable)",
            "depends_on": list(t.depends_on), "retries": t.retries, "timeout": t.timeout,
            "trigger_rule": t.trigger_rule.value, "description": t.description}


_GRAPH_JS = """
const info = JSON.parse(document.getElementById('forge-data').textContent);
const byName = Object.fromEntries(info.tasks.map(t => [t.name, t]));
const panel = document.getElementById('detail');
function related(name, dir) {
  const out = new Set([name]); let grew = true;
  while (grew) { grew = false;
    for (const e of document.querySelectorAll('.edge')) {
      const a = dir === 'up' ? e.dataset.to : e.dataset.from;
      const b = dir === 'up' ? e.dataset.from : e.dataset.to;
      if (out.has(a) && !out.has(b)) { out.add(b); grew = true; } } }
  return out;
}
for (const node of document.querySelectorAll('.node')) {
  node.addEventListener('mouseenter', () => {
    const name = node.dataset.task, t = byName[name];
    const keep = new Set([...related(name, 'up'), ...related(name, 'down')]);
    for (const n of document.querySelectorAll('.node'))
      n.classList.toggle('dim', !keep.has(n.dataset.task));
    panel.textContent = '';
    for (const [k, v] of Object.entries(t)) {
      if (v === null || v === '' || (Array.isArray(v) && !v.length)) continue;
      const row = document.createElement('div');
      row.innerHTML = '<b></b> <span></span>';
      row.children[0].textContent = k;
      row.children[1].textContent = Array.isArray(v) ? v.join(', ') : v;
      panel.appendChild(row);
    }
  });
  node.addEventListener('mouseleave', () => {
    for (const n of document.querySelectorAll('.node')) n.classList.remove('dim');
  });
}
document.getElementById('count').textContent = info.tasks.length + ' tasks';
"""


def graph_html(spec: WorkflowSpec, states: Mapping[str, str] | None = None) -> str:
    """One HTML file (inline SVG, CSS and JS; no network): hover a task to see its details
    and highlight everything upstream and downstream of it."""
    data = {"workflow": spec.name, "tasks": [_task_info(t) for t in spec.tasks]}
    shown = sorted(set((states or {}).values()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(spec.name)} — Forge graph</title>
<style>{BASE_CSS}{state_css()}
.node{{cursor:default}} .node.dim{{opacity:.25}}
#detail{{margin-top:12px;min-height:3em;color:#374151}}
#detail b{{display:inline-block;width:110px}}
</style></head><body>
<h1>{esc(spec.name)}</h1><div class="meta"><span id="count"></span>
{esc(spec.description)}</div>
{legend(shown) if shown else ""}
{graph_svg(spec, states)}
<div id="detail">Hover a task for its details.</div>
<script type="application/json" id="forge-data">{script_json(data)}</script>
<script>{_GRAPH_JS}</script>
</body></html>
"""
