"""Graph and Gantt pictures: text formats, the SVG layout, and HTML that runs in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from forge_core.render import gantt_html, graph_dot, graph_html, graph_mermaid, graph_svg, layout
from forge_core.secrets import Redactor
from forge_core.spec import TaskSpec, WorkflowSpec
from forge_core.state import AttemptRecord, RunRecord, TaskRecord

T0 = 1_700_000_000.0
SPEC = WorkflowSpec(name="etl", tasks=(
    TaskSpec(name="extract", command="echo e"),
    TaskSpec(name='odd "name"', command="echo o"),
    TaskSpec(name="transform", command="echo t", depends_on=("extract", 'odd "name"')),
    TaskSpec(name="load", command="echo l", depends_on=("transform",)),
))


def attempt(
    task: str, n: int, state: str, start: float, end: float | None, **kw: object
) -> AttemptRecord:
    return AttemptRecord(run_id="r1", task=task, number=n, state=state, started_at=T0 + start,
                         finished_at=None if end is None else T0 + end, **kw)  # type: ignore[arg-type]


RUN = RunRecord(run_id="r1", workflow="etl", state="failed", created_at=T0, started_at=T0,
                finished_at=T0 + 30, tasks=(
    TaskRecord(run_id="r1", name="extract", state="succeeded",
               attempts=(attempt("extract", 1, "succeeded", 0, 5),)),
    TaskRecord(run_id="r1", name="transform", state="succeeded", attempts=(
        attempt("transform", 1, "failed", 5, 8, exit_code=1, error="pw=hunter2-x </script>"),
        attempt("transform", 2, "succeeded", 10, 20))),
    TaskRecord(run_id="r1", name="load", state="failed",
               attempts=(attempt("load", 1, "failed", 20, 30, exit_code=2),)),
    TaskRecord(run_id="r1", name="report", state="upstream_failed"),
))


def dump_dom(page: Path, tmp_path: Path) -> str:
    """The DOM of ``page`` after its scripts ran, from headless Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=True,
    )
    return out.stdout


class TestGraphText:
    def test_mermaid_lists_nodes_and_edges(self) -> None:
        """Mermaid output has one node per task and one arrow per dependency, quotes escaped."""
        text = graph_mermaid(SPEC)
        assert text.startswith("flowchart LR\n")
        assert 't1["odd #quot;name#quot;"]' in text
        assert text.count("-->") == 3

    def test_dot_quotes_names(self) -> None:
        """DOT output quotes every id and escapes embedded quotes."""
        text = graph_dot(SPEC)
        assert '"odd \\"name\\"" -> "transform";' in text
        assert '"transform" -> "load";' in text


class TestGraphPicture:
    def test_layout_puts_tasks_in_columns_by_depth(self) -> None:
        """Roots share the first column and each dependent sits right of its parents."""
        lay = layout(SPEC)
        xs = {n: b.x for n, b in lay.boxes.items()}
        assert xs["extract"] == xs['odd "name"'] < xs["transform"] < xs["load"]

    def test_svg_is_well_formed_and_coloured_by_state(self) -> None:
        """The SVG parses as XML, has a box per task and an edge per dependency."""
        root = ET.fromstring(graph_svg(SPEC, {"load": "failed"}))
        ns = "{http://www.w3.org/2000/svg}"
        assert len(root.findall(f"{ns}g")) == 4
        assert len(root.findall(f"{ns}path")) == 3
        assert any(r.get("class") == "state-failed" for r in root.iter(f"{ns}rect"))

    def test_html_runs_in_chromium(self, tmp_path: Path) -> None:
        """The graph page loads in headless Chromium with its script filling the task count."""
        page = tmp_path / "graph.html"
        page.write_text(graph_html(SPEC))
        dom = dump_dom(page, tmp_path)
        assert '<span id="count">4 tasks</span>' in dom
        assert dom.count('class="node"') == 4


class TestGantt:
    def test_embedded_json_cannot_close_the_script(self) -> None:
        """A ``</script>`` inside an error message stays inside the JSON."""
        page = gantt_html(RUN)
        data = re.search(r'id="forge-data">(.*?)</script>', page, re.S)
        assert data is not None
        assert json.loads(data.group(1))["tasks"][1]["attempts"][0]["error"].endswith("</script>")

    def test_redactor_masks_errors(self) -> None:
        """With a redactor, secrets in attempt errors are masked in the page."""
        page = gantt_html(RUN, redactor=Redactor(["hunter2-x"]))
        assert "hunter2-x" not in page
        assert "pw=***" in page

    def test_bars_are_drawn_in_chromium(self, tmp_path: Path) -> None:
        """Headless Chromium runs the page and draws one bar per attempt, by state."""
        page = tmp_path / "gantt.html"
        page.write_text(gantt_html(RUN))
        dom = dump_dom(page, tmp_path)
        bars = re.findall(r'<div class="bar state-(\w+)" data-task="(\w+)" data-attempt="(\d)"',
                          dom)
        assert sorted(bars) == sorted([("succeeded", "extract", "1"), ("failed", "transform", "1"),
                                       ("succeeded", "transform", "2"), ("failed", "load", "1")])
        assert ">#2</div>" in dom
