"""The compatibility page is rendered from autoescaped Jinja2 templates shipped in the package:
text from the registry (family names, notes, side-info names) reaches the HTML escaped, in
attribute values (links) as well as in text (no server)."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

from fct_registry.resolver.graph import CompatibilityGraph, TransformEdge, VersionNode
from fct_registry.server.page import FamilyView, edges_html, gates_html, graph_svg, render_family

HOSTILE = "x'\"><script>alert(1)</script>"


def _view() -> FamilyView:
    nodes = {v: VersionNode(v, HOSTILE) for v in (1, 2)}
    edges = [TransformEdge(1, 1, 2, HOSTILE, 61.0, (1,), kind="fct")]
    graph = CompatibilityGraph(HOSTILE, nodes, edges, [])
    graph.notes.append(HOSTILE)
    view = FamilyView(HOSTILE, graph, [1, 2], {1: {"top1": 50.0}, 2: {"top1": 70.0}}, 2)
    view.gates = [
        {
            "verdict": "pass", "version": 2, "baseline": 1, "promoted": True,
            "promotion": HOSTILE, "status": "FINISHED", "at": "2026-01-01T10:00:00Z",
            "experiment_id": "1", "run_id": "abcdef0123456789",
            "checks": [{"name": HOSTILE, "status": "pass", "measured": 71.0, "bound": 70.0}],
        }
    ]  # fmt: skip
    return view


def test_registry_text_is_escaped_everywhere_on_the_page() -> None:
    view = _view()
    for html in (render_family(view), graph_svg(view), edges_html(view), gates_html(view)):
        assert "<script>" not in html
        assert "&lt;script&gt;" in html
        # every attribute value ends at its own quote: a name cannot close it early
        for value in re.findall(r"""href=(?:'([^']*)'|"([^"]*)")""", html):
            assert "<" not in "".join(value) and ">" not in "".join(value)
    page = render_family(view)
    assert page.count("&lt;script&gt;") >= 5  # title, header, links' text, note, gate row


def test_the_templates_ship_with_the_package() -> None:
    templates = resources.files("fct_registry.server") / "templates"
    names = {p.name for p in templates.iterdir()}
    assert {"family.html", "index.html", "graph.svg", "page.css"} <= names
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["fct_registry.server"]
    suffixes = {"." + p.rsplit(".", 1)[1] for p in patterns}
    assert {Path(n).suffix for n in names} <= suffixes
