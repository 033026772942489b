"""The family compatibility page: graph, heatmap of every measured pair, production, gate history.

Routes (a Flask blueprint added to MLflow's server by :func:`fct_registry.server.create_app`):

* ``/fct/`` — the registered families;
* ``/fct/family/<family>`` — the page (HTML, inline SVG: nothing loaded from elsewhere);
* ``/fct/api/family/<family>`` — the same data as JSON.

Everything is read from the registry on each request (:func:`family_view`), through the same
loader as ``fct resolve`` (``fct_registry.resolver.load_graph``), so the page never disagrees
with the resolver. The gate history is the gate runs of the family's experiment
(:func:`fct_registry.gate.history.gate_history`: newest first, at most
:data:`~fct_registry.gate.history.HISTORY_LIMIT`), each linked to its MLflow run. Version pages
link here (``fct/family/<family>``); every version named here links back to its MLflow page.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, abort, current_app
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from fct_registry.evaluation.compatibility import gap_closed
from fct_registry.gate.history import HISTORY_LIMIT, history_filter, record_from_run
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.description import gate_summary, origin
from fct_registry.registry.pages import all_versions
from fct_registry.resolver.graph import CompatibilityGraph, ResolverError, TransformEdge
from fct_registry.resolver.load import known_families, load_graph
from fct_registry.resolver.plot import Pair, edge_dict, measured_pairs

blueprint = Blueprint("fct", __name__, url_prefix="/fct")
# app.config key: a callable narrowing the index's family list to what the requesting user may
# read (set by the authenticated app, :mod:`fct_registry.server.auth`).
FAMILY_FILTER = "FCT_FAMILY_FILTER"


# --- data ----------------------------------------------------------------------------------------


@dataclass
class FamilyView:
    family: str
    graph: CompatibilityGraph
    versions: list[int]
    own: dict[int, dict[str, float]]  # self retrieval of each version
    production: int | None
    # The gate history (GateRecord.as_dict), newest first; when the family has no gate runs
    # yet, the latest verdicts kept in version tags by older gates (``legacy_gates``).
    gates: list[dict[str, Any]] = field(default_factory=list)
    cells: dict[tuple[int, int], Pair] = field(default_factory=dict)  # (query, gallery)
    experiment_id: str | None = None  # fct-<family>, where the gate runs are
    legacy_gates: bool = False
    # (query, gallery): new queries against the old gallery as stored, no transformation:
    # the gate's ``raw`` case (``score.raw.*`` of its runs; newest per pair), when measured.
    as_stored: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    origins: dict[int, str] = field(default_factory=dict)  # where each version came from

    def _edge(self, e: TransformEdge) -> dict[str, Any]:
        return _edge_dict(e) | {"gap_closed_top1": self.gap_closed(e)}

    def gap_closed(self, e: TransformEdge) -> float | None:
        """Percent of the old/old -> new/new top-1 gap the edge recovers (the evaluation's
        definition, from the same registry numbers the page shows); None if not defined."""
        old, new = self.own.get(e.source, {}).get("top1"), self.own.get(e.target, {}).get("top1")
        if old is None or new is None:
            return None
        value = gap_closed(e.top1, old, new)
        return value if math.isfinite(value) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "production": self.production,
            "versions": self.versions,
            "own": {str(v): s for v, s in self.own.items()},
            "edges": [self._edge(e) for e in self.graph.edges],
            "chains": [self._edge(e) for e in self.graph.chains],
            "as_stored": [
                {"query": q, "gallery": g, **m} for (q, g), m in sorted(self.as_stored.items())
            ],
            "heatmap": [
                {"query": q, "gallery": g, "top1": c.top1, "how": c.how}
                for (q, g), c in sorted(self.cells.items())
            ],
            "gates": self.gates,
            "gate_history": not self.legacy_gates,
            "experiment_id": self.experiment_id,
            "notes": self.graph.notes,
        }


def _edge_dict(e: TransformEdge) -> dict[str, Any]:
    """The page's JSON of an edge: the graph JSON's, without the side-info reference."""
    return {k: v for k, v in edge_dict(e).items() if k != "side_info"}


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def family_view(client: Any, family: str, history_limit: int = HISTORY_LIMIT) -> FamilyView:
    """Everything the page shows, read from the registry now."""
    graph = load_graph(client, family)
    records = all_versions(client, family)
    own = {}
    origins: dict[int, str] = {}
    latest = []
    for mv in records:
        scores = {
            k: _float(mv.tags.get(t)) for k, t in (("top1", fct_tags.TOP1), ("mAP", fct_tags.MAP))
        }
        own[int(mv.version)] = {k: v for k, v in scores.items() if v is not None}
        origins[int(mv.version)] = origin(mv.tags)
        gate = gate_summary(mv.tags)
        if gate is not None:
            latest.append({"version": int(mv.version), **gate})
    latest.sort(key=lambda g: (str(g.get("at") or ""), g["version"]), reverse=True)
    experiment = client.get_experiment_by_name(fct_tags.experiment_name(family))
    # gate.history.gate_history's query, kept here to read each run's raw scores too.
    runs = (
        client.search_runs(
            [experiment.experiment_id],
            filter_string=history_filter(),
            max_results=history_limit,
            order_by=["attributes.start_time DESC"],
        )
        if experiment is not None
        else []
    )
    history = [record_from_run(run).as_dict() for run in runs]
    view = FamilyView(
        family=family,
        graph=graph,
        versions=sorted(graph.nodes),
        own=own,
        origins=origins,
        production=graph.aliases.get(fct_tags.PRODUCTION_ALIAS),
        gates=history or latest,
        experiment_id=experiment.experiment_id if experiment is not None else None,
        legacy_gates=not history and bool(latest),
        as_stored=as_stored_scores(runs),
    )
    view.cells = measured_pairs(graph, {v: s["top1"] for v, s in own.items() if "top1" in s})
    return view


def as_stored_scores(runs: list[Any]) -> dict[tuple[int, int], dict[str, Any]]:
    """``{(candidate, baseline): {"top1", "top5", "mAP", "run_id"}}`` from gate runs (newest
    first): candidate queries against the baseline's gallery with no transformation."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for run in runs:
        record = record_from_run(run)
        metrics = run.data.metrics
        if record.baseline is None or "score.raw.top1" not in metrics:
            continue
        key = (record.candidate, record.baseline)
        if key not in out:
            scores = {m: metrics.get(f"score.raw.{m}") for m in ("top1", "top5", "mAP")}
            out[key] = {**scores, "run_id": record.run_id}
    return out


# --- rendering -----------------------------------------------------------------------------------

# Every page is a Jinja2 template in templates/, autoescaped: a value reaches the HTML escaped
# unless it is Markup (a part this module rendered from its own template).
_TEMPLATES = Environment(
    loader=PackageLoader("fct_registry.server", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=StrictUndefined,
)


def _render(template: str, **context: Any) -> Markup:
    return Markup(_TEMPLATES.get_template(template).render(**context))


def _version_href(name: str, version: int) -> str:
    return f"../../#/models/{name}/versions/{version}"


def _colour(top1: float) -> str:
    """White (0) to MLflow blue (100), readable with dark text up to ~70."""
    t = max(0.0, min(1.0, top1 / 100.0))
    r, g, b = (int(255 + (c - 255) * t) for c in (34, 114, 180))
    return f"rgb({r},{g},{b})"


LABEL_HEIGHT = 16  # px between two labels' baselines (font-size 12)


@dataclass(frozen=True)
class ArcLayout:
    """Where one edge's arc and label go in :func:`graph_svg`."""

    edge: TransformEdge
    below: bool  # recorded chains are drawn below the line of versions
    lift: float  # apex height above (below) the line, px
    label_x: float
    label_y: float
    text: str


def _label_box(x: float, y: float, text: str) -> tuple[float, float, float, float]:
    """Approximate box of a 12 px label centred on ``x`` with its baseline at ``y``."""
    half = 3.6 * len(text)
    return (x - half, y - 12, x + half, y + 3)


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


# Where along an arc its label may go (Bezier parameter): the apex first, then outwards.
_LABEL_SPOTS = (0.5, 0.38, 0.62, 0.3, 0.7, 0.22, 0.78, 0.15, 0.85)


def arc_layout(
    view: FamilyView, x: Mapping[int, float], mid: float, r: float, width: float = 640
) -> list[ArcLayout]:
    """Arcs and label positions. Parallel arcs (same two versions, same side of the line) get
    distinct heights, :data:`LABEL_HEIGHT` apart where they fit; each label then takes the first
    spot along its own arc, apex first, that no earlier label or version circle covers."""
    out: list[ArcLayout] = []
    room = mid - r - 40  # keep arcs and labels inside the picture
    taken = [(x[v] - r, mid - r, x[v] + r, mid + r + 16) for v in x]  # circles + own top-1
    if view.production in x:  # the "production" over its circle
        taken.append((x[view.production] - 36, mid - r - 20, x[view.production] + 36, mid - r))
    for group, below in ((view.graph.edges, False), (view.graph.chains, True)):
        drawn = [e for e in group if e.source in x and e.target in x]
        count = Counter((e.source, e.target) for e in drawn)
        seen: Counter[tuple[int, int]] = Counter()
        for e in drawn:
            n, k = count[(e.source, e.target)], seen[(e.source, e.target)]
            seen[(e.source, e.target)] += 1
            x0, x1 = x[e.source] + r * 0.8, x[e.target] - r * 0.8
            top = min(30 + 0.15 * abs(x1 - x0) + LABEL_HEIGHT * (n - 1), room)
            lift = top - k * (min(28.0, (top - 24) / (n - 1)) if n > 1 else 0.0)
            y0 = mid + (r * 0.6 if below else -r * 0.6)
            sign = 1 if below else -1
            # Short: the colour tells the kind (legend below), the table the rest.
            text = f"{'chain ' if below else ''}#{e.model_version}: {e.top1:.1f}"
            spots = []
            for t in _LABEL_SPOTS:  # points of the quadratic Bezier (control: twice the apex)
                lx = (1 - t) ** 2 * x0 + 2 * t * (1 - t) * (x0 + x1) / 2 + t**2 * x1
                ly = y0 + sign * 4 * lift * t * (1 - t) + (14 if below else -4)
                half = 3.6 * len(text)
                spots.append((min(max(lx, half + 2), width - half - 2), ly))
            lx, ly = next(
                (p for p in spots if not any(_overlaps(_label_box(*p, text), b) for b in taken)),
                spots[0],
            )
            taken.append(_label_box(lx, ly, text))
            out.append(ArcLayout(e, below, lift, lx, ly, text))
    return out


def graph_svg(view: FamilyView, width: int = 640) -> str:
    """Versions left to right; transformations as arcs above, recorded chains below, each
    labelled with its measured top-1 and linked to its version page."""
    versions = view.versions
    if not versions:
        return "<p class='muted'>No versions registered.</p>"
    height, mid, r = 340, 170, 22
    step = (width - 2 * 50) / max(1, len(versions) - 1)
    x = {v: 50 + i * step if len(versions) > 1 else width / 2 for i, v in enumerate(versions)}
    arcs = []
    for a in arc_layout(view, x, mid, r, width):
        e = a.edge
        x0, x1 = x[e.source] + r * 0.8, x[e.target] - r * 0.8
        y0 = mid + (r * 0.6 if a.below else -r * 0.6)
        arcs.append(
            {
                "version": e.model_version,
                "below": a.below,
                "x0": x0,
                "x1": x1,
                "y0": y0,
                "cx": (x0 + x1) / 2,
                "cy": y0 + 2 * a.lift * (1 if a.below else -1),
                "colour": _arc_colour(a),
                "label_x": a.label_x,
                "label_y": a.label_y,
                "text": a.text,
            }
        )
    return _render(
        "graph.svg",
        family=view.family,
        t_name=view.graph.transformations_model,
        width=width,
        height=height,
        mid=mid,
        r=r,
        xs=x,
        arcs=arcs,
        versions=versions,
        own={v: view.own.get(v, {}).get("top1") for v in versions},
        production=view.production,
    )


def _arc_colour(a: ArcLayout) -> str:
    return "#8e44ad" if a.below else ("#2272b4" if a.edge.side_info else "#e67e22")


def heatmap_html(view: FamilyView) -> str:
    """Rows: query version (new); columns: gallery version (old, or upgraded from it)."""
    if not view.versions:
        return "<p class='muted'>No versions registered.</p>"
    return _render(
        "heatmap.html",
        versions=view.versions,
        cells=view.cells,
        as_stored=view.as_stored,
        t_name=view.graph.transformations_model,
    )


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.1f}"


def edges_html(view: FamilyView) -> str:
    """One compact row per transformation or chain: what it upgrades, the retrieval numbers of
    new queries on the upgraded old gallery, the gap it closes and, beside them, the same
    queries on the old gallery as stored (what searching without upgrading gives)."""
    edges = [*view.graph.edges, *view.graph.chains]
    if not edges:
        return "<p class='muted'>No transformations registered.</p>"
    rows = [
        {
            "edge": e,
            "gap": view.gap_closed(e),
            "stored": view.as_stored.get((e.target, e.source), {}).get("top1"),
        }
        for e in edges
    ]
    return _render("edges.html", rows=rows, t_name=view.graph.transformations_model)


def _run_href(experiment_id: str, run_id: str) -> str:
    return f"../../#/experiments/{experiment_id}/runs/{run_id}"


def gates_html(view: FamilyView) -> str:
    """The gate history; for a family gated before runs were kept, the latest verdict per
    version from ``fct.gate.*`` tags."""
    return _render(
        "gates.html",
        gates=view.gates,
        legacy=view.legacy_gates,
        family=view.family,
        production=view.production,
        experiment=fct_tags.experiment_name(view.family),
        experiment_id=view.experiment_id,
        history_limit=HISTORY_LIMIT,
        role_tag=f"{fct_tags.ROLE}={fct_tags.ROLE_GATE}",
    )


def origins_html(view: FamilyView) -> str:
    return _render("origins.html", family=view.family, versions=view.versions, origins=view.origins)


def render_family(view: FamilyView) -> str:
    return _render(
        "family.html",
        family=view.family,
        production=view.production,
        graph=Markup(graph_svg(view)),
        heatmap=Markup(heatmap_html(view)),
        edges=Markup(edges_html(view)),
        origins=origins_html(view),
        gates=gates_html(view),
        notes=view.graph.notes,
    )


_TEMPLATES.globals.update(version_href=_version_href, run_href=_run_href, pct=_pct, colour=_colour)
_TEMPLATES.filters["px"] = lambda value: f"{value:.0f}"  # SVG coordinates: whole pixels


# --- routes --------------------------------------------------------------------------------------


def _client() -> Any:
    """A client on the server's own stores (the environment ``mlflow server`` gives workers)."""
    from mlflow import MlflowClient
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR

    tracking = os.environ.get(BACKEND_STORE_URI_ENV_VAR) or os.environ.get("MLFLOW_TRACKING_URI")
    registry = os.environ.get(REGISTRY_STORE_URI_ENV_VAR) or tracking
    return MlflowClient(tracking_uri=tracking, registry_uri=registry)


def _view_or_404(family: str) -> FamilyView:
    try:
        return family_view(_client(), family)
    except ResolverError as exc:
        abort(Response(escape(str(exc)), status=404, mimetype="text/plain"))
        raise  # unreachable: abort raises


@blueprint.route("/")
def index() -> Response:
    families = known_families(_client())
    readable = current_app.config.get(FAMILY_FILTER)
    if readable is not None:
        families = readable(families)
    return Response(_render("index.html", families=families), mimetype="text/html")


@blueprint.route("/family/<family>")
def family_page(family: str) -> Response:
    return Response(render_family(_view_or_404(family)), mimetype="text/html")


@blueprint.route("/api/family/<family>")
def family_json(family: str) -> Response:
    return Response(json.dumps(_view_or_404(family).as_dict()), mimetype="application/json")
