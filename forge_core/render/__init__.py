"""Pictures of workflows and runs: the DAG as Mermaid, DOT, SVG or a self-contained HTML page,
and a run's Gantt chart as one HTML file that opens with no network."""

from __future__ import annotations

from ._gantt import gantt_html
from ._graph import graph_dot, graph_html, graph_mermaid, graph_svg, layout

__all__ = ["gantt_html", "graph_dot", "graph_html", "graph_mermaid", "graph_svg", "layout"]
