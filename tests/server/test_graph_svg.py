"""The compatibility graph's SVG: labels of parallel arcs stay apart (fast, no server)."""

from __future__ import annotations

import itertools
import re

import pytest

from fct_registry.resolver.graph import CompatibilityGraph, TransformEdge, VersionNode
from fct_registry.server.page import FamilyView, graph_svg

SIDE = "fam-side-info/1"


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
    """(text, left, top, right, bottom) of every arc label (``<kind> <version>: <top-1>``);
    12 px text: ~7 px a character, 13 px high, centred on x, baseline at y."""
    boxes = []
    for attrs, text in re.findall(r"<text([^>]*)>([^<]*)</text>", svg):
        if not re.fullmatch(r"\S+ \d+: \d+\.\d", text):
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
