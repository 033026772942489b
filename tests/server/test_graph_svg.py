"""The compatibility graph's SVG: labels of parallel arcs stay apart (no server)."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path

import pytest

from fct_registry.resolver.graph import CompatibilityGraph, TransformEdge, VersionNode
from fct_registry.resolver.plot import measured_pairs
from fct_registry.server.page import FamilyView, graph_svg, render_family
from tests.support.browser import chromium

SIDE = "fam-side-info/1"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _view(edges: list[tuple[int, int, str | None]], chains: list[tuple[int, int]]) -> FamilyView:
    singles = [
        TransformEdge(
            i + 1, s, t, side, 60.0 + i, (i + 1,), kind="fct" if side else "fct-no-side-info"
        )
        for i, (s, t, side) in enumerate(edges)
    ]
    recorded = [
        TransformEdge(100 + i, s, t, SIDE, 50.0 + i, (1, 2)) for i, (s, t) in enumerate(chains)
    ]
    nodes = {v: VersionNode(v, SIDE) for v in (1, 2, 3, 4)}
    graph = CompatibilityGraph("fam", nodes, singles, recorded)
    return FamilyView("fam", graph, sorted(nodes), {v: {"top1": 50.0 + v} for v in nodes}, None)


def _label_boxes(svg: str) -> list[tuple[str, float, float, float, float]]:
    """(text, left, top, right, bottom) of every arc label (``#<version>: <top-1>``, older
    pages ``<kind> <version>: <top-1>``);
    12 px text: ~7 px a character, 13 px high, centred on x, baseline at y."""
    boxes = []
    for attrs, text in re.findall(r"<text([^>]*)>([^<]*)</text>", svg):
        if not re.fullmatch(r"(chain |\S+ )?#?\d+: \d+\.\d", text):
            continue
        x = float(re.search(r'\bx="([-\d.]+)"', attrs).group(1))
        y = float(re.search(r'\by="([-\d.]+)"', attrs).group(1))
        half = 3.5 * len(text)
        boxes.append((text, x - half, y - 11, x + half, y + 2))
    return boxes


@pytest.mark.parametrize(
    ("edges", "chains"),
    [
        # the case: 1->3 by two transformations and a chain, beside 1->2 and 2->3
        ([(1, 2, SIDE), (2, 3, SIDE), (1, 3, SIDE), (1, 3, None)], [(1, 3)]),
        ([(1, 2, SIDE), (1, 2, None), (1, 2, SIDE)], [(1, 3), (1, 3)]),
        ([(1, 4, SIDE)] * 6 + [(1, 2, SIDE), (2, 4, None)], [(1, 4)] * 3),  # many in parallel
    ],
)
def test_labels_of_parallel_arcs_do_not_overlap(edges, chains):
    svg = graph_svg(_view(edges, chains))
    boxes = _label_boxes(svg)
    assert len(boxes) == len(edges) + len(chains)
    for a, b in itertools.combinations(boxes, 2):  # every pair, checked one by one
        apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
        assert apart, f"labels overlap: {a[0]!r} and {b[0]!r}"
    for _, left, top, right, bottom in boxes:  # inside the picture
        assert left >= 0 and right <= 640 and top >= 0 and bottom <= 340


def test_parallel_arcs_render_readably_in_chromium(tmp_path):
    """The issue's case drawn by a browser: 1->3 by two transformations and a recorded chain,
    beside parallel 1->2 arcs (screenshot copied into docs/ with FCT_UPDATE_DOCS=1)."""
    edges = [(1, 2, SIDE), (1, 2, None), (2, 3, SIDE), (1, 3, SIDE), (1, 3, None), (3, 4, SIDE)]
    view = _view(edges, [(1, 3)])
    view.production = 3
    view.cells = measured_pairs(view.graph, {v: s["top1"] for v, s in view.own.items()})
    page = tmp_path / "page.html"
    page.write_text(render_family(view))
    png = tmp_path / "parallel.png"
    out = chromium("--window-size=1400,560", f"--screenshot={png}", page.as_uri())
    assert out.returncode == 0 and png.stat().st_size > 20_000, out.stderr[-2000:]
    if os.environ.get("FCT_UPDATE_DOCS") == "1":
        shutil.copyfile(png, DOCS / "compatibility-graph-parallel.png")
