"""A picture of the compatibility graph: versions on a line, transformations as labelled arcs.

Laid out by hand (no graphviz): version ``v`` sits at ``x = v``, every transformation is a
quadratic arc above the line (below for backward edges) whose height grows with its span, so
arcs between the same pair of versions stack instead of overlapping. Each arc is labelled with
its measured top-1 and coloured by the side-info extractor it reads; recorded chains are dashed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry.registry import tags as fct_tags
from fct_registry.registry.experiment import family_experiment
from fct_registry.registry.store import default_artifact_location
from fct_registry.resolver.graph import CompatibilityGraph, TransformEdge

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fct_registry.resolver.search import Route

MAX_LABELLED_EDGES = 200  # beyond this the labels only hide the arcs
GRAPH_PNG = "compatibility_graph.png"
GRAPH_JSON = "compatibility_graph.json"
HEATMAP_PNG = "compatibility_heatmap.png"


@dataclass(frozen=True)
class Pair:
    """One measured (query version, gallery version) pair: top-1 %, and what measured it."""

    top1: float
    how: str  # "own gallery", "transformation N", "chain N"
    model_version: int | None = None  # the transformation/chain version, for links


def measured_pairs(
    graph: CompatibilityGraph, own: Mapping[int, float]
) -> dict[tuple[int, int], Pair]:
    """Every measured ``(query, gallery)`` pair: a version on its own gallery (``own``: its
    top-1), and new-version queries on an old gallery upgraded by the best transformation or
    recorded chain between them. Unmeasured pairs are absent (never a made-up number)."""
    pairs = {(v, v): Pair(top1, "own gallery") for v, top1 in own.items() if v in graph.nodes}
    for e in (*graph.edges, *graph.chains):
        best = pairs.get((e.target, e.source))
        if best is None or e.top1 > best.top1:
            what = "chain" if e.is_chain else "transformation"
            pairs[(e.target, e.source)] = Pair(e.top1, f"{what} {e.model_version}", e.model_version)
    return pairs


def plot_heatmap(graph: CompatibilityGraph, pairs: Mapping[tuple[int, int], Pair]) -> Figure:
    """Rows: query version; columns: gallery version; grey: not measured."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    versions = list(graph.nodes)
    index = {v: i for i, v in enumerate(versions)}
    grid = np.full((len(versions), len(versions)), np.nan)
    for (q, g), pair in pairs.items():
        if q in index and g in index:
            grid[index[q], index[g]] = pair.top1
    side = min(2.5 + 0.9 * len(versions), 30)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    ax.set_facecolor("0.9")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="Blues", vmin=0, vmax=100)
    if len(versions) <= 25:
        for (q, g), pair in pairs.items():
            if q in index and g in index:
                ink = "white" if pair.top1 > 60 else "black"
                ax.text(index[g], index[q], f"{pair.top1:.1f}", ha="center", va="center", color=ink)
    ax.set_xticks(range(len(versions)), [f"@{v}" for v in versions])
    ax.set_yticks(range(len(versions)), [f"@{v}" for v in versions])
    ax.set_xlabel("gallery version (old; upgraded by the best measured transformation or chain)")
    ax.set_ylabel("query version")
    ax.set_title(f"{graph.family}: top-1 % of every measured pair", fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def plot_graph(graph: CompatibilityGraph, highlight: Route | None = None) -> Figure:
    """The figure (not shown or saved); ``highlight`` draws a resolved route on top in bold."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the CLI and tests never open a window
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    versions = list(graph.nodes)
    span = (max(versions) - min(versions)) if versions else 1
    fig = Figure(figsize=(min(4 + 1.6 * len(versions), 40), 5.5))
    ax = fig.add_subplot()
    extractors = graph.extractors()
    palette = [f"C{i}" for i in range(10)]
    colour = {x: palette[i % len(palette)] for i, x in enumerate(extractors)}
    label = len(graph.edges) + len(graph.chains) <= MAX_LABELLED_EDGES
    stacked: Counter[tuple[int, int]] = Counter()
    chosen = set(highlight.hops) if highlight is not None else set()
    chosen_chain = highlight.recorded_chain if highlight is not None else None
    top, bottom = 0.5, 0.3  # peak heights above and below the line of versions
    for e in (*graph.edges, *graph.chains):
        pair = (min(e.source, e.target), max(e.source, e.target))
        stacked[pair] += 1
        bold = (e.is_chain and e == chosen_chain) or (
            not e.is_chain and chosen_chain is None and e.model_version in chosen
        )
        height = _arc(ax, e, stacked[pair], colour.get(e.side_info or "", "0.5"), bold, label)
        top, bottom = max(top, height), max(bottom, -height)
    ax.scatter(versions, [0] * len(versions), s=500, c="white", edgecolors="black", zorder=3)
    for v, node in graph.nodes.items():
        ax.annotate(str(v), (v, 0), ha="center", va="center", fontsize=10, zorder=4)
        if node.aliases:
            ax.annotate(
                "@" + ",".join(node.aliases),
                (v, 0),
                xytext=(0, -24),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=8,
            )
    handles = [Line2D([], [], color=colour[x], label=f"reads {x}") for x in extractors]
    if any(e.side_info is None for e in graph.edges):
        handles.append(Line2D([], [], color="0.5", label="no side-info"))
    if graph.chains:
        handles.append(Line2D([], [], color="black", ls="--", label="recorded chain (end to end)"))
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    pad = max(0.6, 0.05 * span)
    ax.set_xlim(min(versions, default=0) - pad, max(versions, default=1) + pad)
    ax.set_ylim(-1.1 * bottom - 0.35, 1.15 * top + 0.3)
    ax.set_yticks([])
    if len(versions) <= 40:
        ax.set_xticks(versions)
    ax.set_xlabel(f"{graph.family} version (arcs: transformations, labelled with measured top-1 %)")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    title = f"{graph.family}: {len(graph.nodes)} versions, {len(graph.edges)} transformations"
    if graph.chains:
        title += f", {len(graph.chains)} recorded chains"
    if highlight is not None:
        title += f"\nbold: {highlight.label()} ({highlight.top1:.2f}% top-1)"
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def _arc(ax: Any, e: TransformEdge, nth: int, colour: str, bold: bool, label: bool) -> float:
    """One edge as a quadratic Bezier arc with an arrowhead; returns its peak height."""
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    x0, x1 = float(e.source), float(e.target)
    span = abs(x1 - x0)
    # Forward edges arc above the line, backward below; chains below forward arcs' pairs.
    sign = 1.0 if (x1 > x0) != e.is_chain else -1.0
    control = sign * (0.5 * span + 0.45 * (nth - 1) + 0.3)
    peak = control / 2  # a quadratic Bezier reaches half its control point's height
    # Trim both ends so the arrowhead stops at the node's rim instead of under it.
    trim = min(0.3, 0.07 / max(span, 1e-9))
    points = _sub_bezier((x0, 0.0), ((x0 + x1) / 2, control), (x1, 0.0), trim, 1 - trim)
    path = MplPath(points, [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
    ax.add_patch(
        FancyArrowPatch(
            path=path,
            arrowstyle="-|>",
            mutation_scale=14,
            color="crimson" if bold else colour,
            lw=3.0 if bold else 1.3,
            ls="--" if e.is_chain else "-",
            zorder=2,
        )
    )
    if label:
        ax.annotate(
            f"{e.top1:.1f}",
            ((x0 + x1) / 2, peak),
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            zorder=4,
        )
    return peak


def _sub_bezier(
    p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], a: float, b: float
) -> list[tuple[float, float]]:
    """Control points of the part ``t in [a, b]`` of a quadratic Bezier curve (blossoming)."""

    def blossom(s: float, t: float) -> tuple[float, float]:
        w0, w1, w2 = (1 - s) * (1 - t), (1 - s) * t + s * (1 - t), s * t
        return (w0 * p0[0] + w1 * p1[0] + w2 * p2[0], w0 * p0[1] + w1 * p1[1] + w2 * p2[1])

    return [blossom(a, a), blossom(a, b), blossom(b, b)]


def edge_dict(e: TransformEdge) -> dict[str, Any]:
    """One transformation or chain as JSON-able data (the graph's JSON, the compatibility page)."""
    return {
        "model_version": e.model_version,
        "from": e.source,
        "to": e.target,
        "hops": list(e.hops),
        "side_info": e.side_info,
        "kind": e.kind,
        "top1": e.top1,
        "top5": e.top5,
        "mAP": e.mAP,
    }


def graph_dict(graph: CompatibilityGraph) -> dict[str, Any]:
    """The graph as JSON-able data, logged beside the picture."""
    return {
        "family": graph.family,
        "versions": [
            {"version": n.version, "side_info": n.side_info, "aliases": list(n.aliases)}
            for n in graph.nodes.values()
        ],
        "transformations": [edge_dict(e) for e in graph.edges],
        "chains": [edge_dict(c) for c in graph.chains],
        "notes": graph.notes,
    }


def save_graph_png(graph: CompatibilityGraph, path: Path, highlight: Route | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_graph(graph, highlight).savefig(path, dpi=120)
    return path


def own_top1(client: Any, family: str) -> dict[int, float]:
    """Each embedding version's top-1 on its own gallery (its ``fct.top1`` tag)."""
    out: dict[int, float] = {}
    for mv in client.search_model_versions(f"name = {fct_tags.quoted(family)}", max_results=1000):
        try:
            out[int(mv.version)] = float(mv.tags[fct_tags.TOP1])
        except (KeyError, ValueError):
            continue
    return out


def log_graph_to_mlflow(client: Any, graph: CompatibilityGraph, png: Path) -> str:
    """Log the picture, the heatmap of every measured pair and the graph's JSON to a run
    (``compatibility-graph``) of the family's experiment ``fct-<family>``, whose artifacts sit
    beside the store's others; returns the run id. Registered models hold no artifacts of their
    own, so the pictures live in a run."""
    import shutil
    import tempfile

    # Artifacts beside a SQLite store, like registration's.
    location = default_artifact_location(client._tracking_client.tracking_uri, graph.family)
    experiment = family_experiment(client, graph.family, location)
    run = client.create_run(experiment, run_name="compatibility-graph")
    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(png, Path(tmp) / GRAPH_PNG)
            pairs = measured_pairs(graph, own_top1(client, graph.family))
            plot_heatmap(graph, pairs).savefig(Path(tmp) / HEATMAP_PNG, dpi=120)
            (Path(tmp) / GRAPH_JSON).write_text(json.dumps(graph_dict(graph), indent=2))
            client.log_artifacts(run_id, tmp, artifact_path="resolver")
        client.log_param(run_id, "family", graph.family)
        client.log_metric(run_id, "versions", len(graph.nodes))
        client.log_metric(run_id, "transformations", len(graph.edges))
        client.log_metric(run_id, "chains", len(graph.chains))
        client.log_metric(run_id, "measured_pairs", len(pairs))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
