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

import html
import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, abort, current_app

from fct_registry.evaluation.compatibility import gap_closed
from fct_registry.gate.history import HISTORY_LIMIT, history_filter, record_from_run
from fct_registry.registry import tags as T
from fct_registry.registry.description import gate_summary, origin
from fct_registry.registry.pages import all_versions
from fct_registry.resolver.graph import CompatibilityGraph, ResolveError, TransformEdge
from fct_registry.resolver.load import known_families, load_graph
from fct_registry.resolver.plot import Pair, measured_pairs

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
    return {
        "model_version": e.model_version,
        "from": e.source,
        "to": e.target,
        "hops": list(e.hops),
        "kind": e.kind,
        "top1": e.top1,
        "top5": e.top5,
        "mAP": e.mAP,
    }


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
        scores = {k: _float(mv.tags.get(t)) for k, t in (("top1", T.TOP1), ("mAP", T.MAP))}
        own[int(mv.version)] = {k: v for k, v in scores.items() if v is not None}
        origins[int(mv.version)] = origin(mv.tags)
        gate = gate_summary(mv.tags)
        if gate is not None:
            latest.append({"version": int(mv.version), **gate})
    latest.sort(key=lambda g: (str(g.get("at") or ""), g["version"]), reverse=True)
    experiment = client.get_experiment_by_name(T.experiment_name(family))
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
        production=graph.aliases.get(T.PRODUCTION_ALIAS),
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

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#1f272d;background:#f7f8fa}
header{background:#fff;border-bottom:1px solid #e3e6ea;padding:12px 24px;display:flex;gap:24px;
 align-items:baseline}
header b{font-size:18px} header a{color:#2272b4;text-decoration:none}
main{padding:16px 24px;display:grid;grid-template-columns:minmax(520px,1fr) minmax(420px,1fr);
 gap:16px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:12px 16px}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 10px 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #d5dae0;padding:4px 8px;text-align:right}
th{background:#f1f3f5;font-weight:600}
td.l,th.l{text-align:left}
a{color:#2272b4}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.pass{background:#d9f2e3;color:#14632f}.fail{background:#fbdada;color:#9b1c1c}
.prod{background:#dbe9fb;color:#14437a}
.pass-text{color:#14632f}.fail-text{color:#9b1c1c}.skipped-text{color:#6b7780}
td.checks{font-size:12px;white-space:nowrap}.nw{white-space:nowrap}
.muted{color:#6b7780;font-size:12px}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


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
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="12" role="img" '
        f'aria-label="compatibility graph of {_e(view.family)}">',
        '<defs><marker id="arr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
        'fill="#555"/></marker></defs>',
    ]
    t_name = view.graph.transformations_model
    arcs = arc_layout(view, x, mid, r, width)
    for a in arcs:  # arcs first, then every label on top of them
        e = a.edge
        x0, x1 = x[e.source] + r * 0.8, x[e.target] - r * 0.8
        y0 = mid + (r * 0.6 if a.below else -r * 0.6)
        cx, cy = (x0 + x1) / 2, y0 + 2 * a.lift * (1 if a.below else -1)
        colour = _arc_colour(a)
        dash = ' stroke-dasharray="5,4"' if a.below else ""
        parts.append(
            f'<a href="{_version_href(t_name, e.model_version)}" target="_top">'
            f'<path d="M{x0:.0f},{y0:.0f} Q{cx:.0f},{cy:.0f} {x1:.0f},{y0:.0f}" '
            f'fill="none" stroke="{colour}" stroke-width="2"{dash} marker-end="url(#arr)"/></a>'
        )
    for a in arcs:
        parts.append(
            f'<a href="{_version_href(t_name, a.edge.model_version)}" target="_top">'
            f'<text class="edge-label" x="{a.label_x:.0f}" y="{a.label_y:.0f}" '
            f'text-anchor="middle" fill="{_arc_colour(a)}" stroke="#fff" stroke-width="4" '
            f'paint-order="stroke">{_e(a.text)}</text></a>'
        )
    for v in versions:
        prod = v == view.production
        fill, stroke = ("#dbe9fb", "#14437a") if prod else ("#fff", "#1f272d")
        parts.append(
            f'<a href="{_version_href(view.family, v)}" target="_top">'
            f'<circle cx="{x[v]:.0f}" cy="{mid}" r="{r}" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{3 if prod else 1.5}"/>'
            f'<text x="{x[v]:.0f}" y="{mid + 4}" text-anchor="middle" font-weight="600">'
            f"@{v}</text></a>"
        )
        top1 = view.own.get(v, {}).get("top1")
        if top1 is not None:
            parts.append(
                f'<text x="{x[v]:.0f}" y="{mid + r + 14}" text-anchor="middle" '
                f'fill="#6b7780">{top1:.1f}</text>'
            )
        if prod:
            parts.append(
                f'<text x="{x[v]:.0f}" y="{mid - r - 6}" text-anchor="middle" '
                f'fill="#14437a" font-weight="600">production</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _arc_colour(a: ArcLayout) -> str:
    return "#8e44ad" if a.below else ("#2272b4" if a.edge.side_info else "#e67e22")


def heatmap_html(view: FamilyView) -> str:
    """Rows: query version (new); columns: gallery version (old, or upgraded from it)."""
    vs = view.versions
    if not vs:
        return "<p class='muted'>No versions registered.</p>"
    head = "".join(f"<th>gallery @{v}</th>" for v in vs)
    rows = []
    t_name = view.graph.transformations_model
    for q in vs:
        cells = []
        for g in vs:
            cell = view.cells.get((q, g))
            if cell is None:
                cells.append('<td class="muted" title="not measured">—</td>')
                continue
            ink = "#fff" if cell.top1 > 70 else "#1f272d"
            text = f"{cell.top1:.1f}"
            if cell.model_version is not None:
                text = (
                    f'<a style="color:{ink}" href="{_version_href(t_name, cell.model_version)}"'
                    f' target="_top">{text}</a>'
                )
            stored = view.as_stored.get((q, g), {}).get("top1")
            plain = (
                ""
                if stored is None
                else f"<div style='font-size:10px'>as stored {stored:.1f}</div>"
            )
            cells.append(
                f'<td style="background:{_colour(cell.top1)};color:{ink}" '
                f'title="{_e(cell.how)}">{text}<div style="font-size:10px">{_e(cell.how)}'
                f"</div>{plain}</td>"
            )
        rows.append(f"<tr><th class='l'>query @{q}</th>{''.join(cells)}</tr>")
    return (
        f"<table><tr><th class='l'>top-1 %</th>{head}</tr>{''.join(rows)}</table>"
        "<p class='muted'>Diagonal: each version on its own gallery. Below it: new-version "
        "queries against the old gallery upgraded by the best measured transformation or "
        "chain. — : no measurement registered.</p>"
    )


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.1f}"


def edges_html(view: FamilyView) -> str:
    """One compact row per transformation or chain: what it upgrades, the retrieval numbers of
    new queries on the upgraded old gallery, the gap it closes and, beside them, the same
    queries on the old gallery as stored (what searching without upgrading gives)."""
    t_name = view.graph.transformations_model
    rows = []
    for e in [*view.graph.edges, *view.graph.chains]:
        what = f"chain ({' → '.join(map(str, e.hops))})" if e.is_chain else e.kind
        stored = view.as_stored.get((e.target, e.source), {})
        gap = view.gap_closed(e)
        rows.append(
            f"<tr><td class='l'><a href='{_version_href(t_name, e.model_version)}' "
            f"target='_top'>{e.model_version}</a></td>"
            f"<td class='l nw'>@{e.source} → @{e.target}</td><td class='l'>{_e(what)}</td>"
            f"<td class='l'>{_e(e.side_info or 'none')}</td>"
            f"<td><b>{_pct(e.top1)}</b></td><td>{_pct(e.top5)}</td><td>{_pct(e.mAP)}</td>"
            f"<td>{'—' if gap is None else f'{gap:.0f}%'}</td>"
            f"<td class='stored'>{_pct(stored.get('top1'))}</td></tr>"
        )
    if not rows:
        return "<p class='muted'>No transformations registered.</p>"
    return (
        "<table id='transformations-table'><tr><th class='l'>version</th>"
        "<th class='l'>upgrades</th><th class='l'>kind</th><th class='l'>side-info</th>"
        "<th>top-1</th><th>top-5</th><th>mAP</th><th title='of the old→new top-1 gap'>gap "
        "closed</th><th title='new queries on the old gallery, no transformation'>no "
        "transformation<br>top-1</th></tr>" + "".join(rows) + "</table>"
        f"<p class='muted'>Versions of <code>{_e(t_name)}</code>. Percent; new-version queries "
        "against the old gallery upgraded by the row's transformation or chain. Gap closed: "
        "share of the old→new top-1 gap recovered, 100% = as good as re-embedding. No "
        "transformation: the same queries on the old gallery as stored, measured by the release "
        "gate (<code>raw</code> case) when both versions embed to the same width; — : not "
        "measured.</p>"
    )


def _run_href(experiment_id: str, run_id: str) -> str:
    return f"../../#/experiments/{experiment_id}/runs/{run_id}"


def _check_html(check: dict[str, Any]) -> str:
    mark = {"pass": "✓", "fail": "✗"}.get(check["status"], "–")
    numbers = (
        f" {check['measured']:.2f} ≥ {check['bound']:.2f}"
        if check.get("measured") is not None and check.get("bound") is not None
        else ""
    )
    return (
        f"<div class='{_e(check['status'])}-text'>{mark} {_e(check['name'])}{numbers}"
        f"{'' if check['status'] in ('pass', 'fail') else ' (' + _e(check['status']) + ')'}</div>"
    )


def gates_html(view: FamilyView) -> str:
    if not view.gates:
        return (
            "<p class='muted'>No gate run recorded yet (<code>fct gate --record</code> or "
            "<code>--promote</code>, or the DVC <code>gate</code> stage, records one run per "
            f"evaluation in the experiment <code>{_e(T.experiment_name(view.family))}</code>)."
            "</p>"
        )
    if view.legacy_gates:
        return _legacy_gates_html(view)
    rows = []
    for g in view.gates:
        badge = "pass" if g["verdict"] == "pass" else "fail"
        promoted = (
            f"<span class='badge prod'>promoted</span> {_e(g['promotion'])}"
            if g["promoted"]
            else f"<span class='muted'>{_e(g['promotion'] or 'not promoted')}</span>"
        )
        unfinished = "" if g["status"] == "FINISHED" else f" ({_e(g['status'].lower())})"
        rows.append(
            f"<tr><td class='l nw'>{_e(g['at'].replace('T', ' ').replace('Z', ' UTC'))}</td>"
            f"<td class='l'><a href='{_version_href(view.family, g['version'])}' "
            f"target='_top'>{_e(view.family)}@{g['version']}</a></td>"
            f"<td>{'—' if g['baseline'] is None else '@' + _e(g['baseline'])}</td>"
            f"<td class='l'><span class='badge {badge}'>{_e(g['verdict'])}</span></td>"
            f"<td class='l checks'>{''.join(_check_html(c) for c in g['checks'])}</td>"
            f"<td class='l'>{promoted}</td>"
            f"<td class='l'><a href='{_run_href(g['experiment_id'], g['run_id'])}' "
            f"target='_top'>{_e(g['run_id'][:8])}</a>{unfinished}</td></tr>"
        )
    experiment = T.experiment_name(view.family)
    where = (
        f"<a href='../../#/experiments/{_e(view.experiment_id)}' target='_top'>{_e(experiment)}</a>"
        if view.experiment_id
        else _e(experiment)
    )
    return (
        "<table id='gate-history-table'><tr><th class='l'>when</th><th class='l'>candidate</th>"
        "<th>baseline</th><th class='l'>verdict</th><th class='l'>checks (measured ≥ bound)"
        "</th><th class='l'>alias</th><th class='l'>run</th></tr>" + "".join(rows) + "</table>"
        f"<p class='muted'>Newest first, the last {len(view.gates)} recorded "
        f"{'run' if len(view.gates) == 1 else 'runs'} (at most {HISTORY_LIMIT}): every "
        f"<code>fct gate --record/--promote</code> and DVC <code>gate</code> stage run of "
        f"experiment {where}, tagged <code>{T.ROLE}={T.ROLE_GATE}</code>.</p>"
    )


def _legacy_gates_html(view: FamilyView) -> str:
    """Latest verdict per version, from ``fct.gate.*`` tags written before gate runs existed."""
    rows = []
    for g in view.gates:
        badge = "pass" if g["verdict"] == "pass" else "fail"
        promoted = "production now" if g["version"] == view.production else ""
        rows.append(
            f"<tr><td class='l'><a href='{_version_href(view.family, g['version'])}' "
            f"target='_top'>{_e(view.family)}@{g['version']}</a></td>"
            f"<td class='l'><span class='badge {badge}'>{_e(g['verdict'])}</span></td>"
            f"<td>{'' if g['baseline'] is None else '@' + _e(g['baseline'])}</td>"
            f"<td>{_e(g.get('passed', ''))}</td><td>{_e(g.get('failed', ''))}</td>"
            f"<td class='l'>{promoted}</td><td class='l'>{_e(g.get('at') or '')}</td></tr>"
        )
    return (
        "<table><tr><th class='l'>candidate</th><th class='l'>verdict</th><th>baseline</th>"
        "<th>rules passed</th><th>failed</th><th class='l'>alias</th><th class='l'>when</th>"
        "</tr>" + "".join(rows) + "</table><p class='muted'>Latest verdict per version only "
        "(fct.gate.* tags): these verdicts were recorded before the gate kept a history.</p>"
    )


def origins_html(view: FamilyView) -> str:
    rows = "".join(
        f"<tr><td class='l nw'><a href='{_version_href(view.family, v)}' target='_top'>"
        f"{_e(view.family)}@{v}</a></td><td class='l'>{_e(view.origins.get(v, '?'))}</td></tr>"
        for v in view.versions
    )
    return f"<table><tr><th>version</th><th>origin</th></tr>{rows}</table>"


def render_family(view: FamilyView) -> str:
    f = _e(view.family)
    prod = (
        f"<a href='{_version_href(view.family, view.production)}' target='_top'>"
        f"<span class='badge prod'>{f}@{view.production}</span></a>"
        if view.production is not None
        else "<span class='muted'>no version has the production alias</span>"
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in view.graph.notes)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{f} · compatibility · fct-registry</title><style>{_CSS}</style></head><body>
<header><b>{f}</b><span>compatibility of the embedding family</span>
<span>production: {prod}</span><a href="../../#/models/{f}">MLflow registry →</a>
<a href="../">all families</a></header>
<main>
<section><h2>Compatibility graph</h2>{graph_svg(view)}
<p class="muted">Arcs above: transformations (blue: read side-info, orange: none); dashed arcs
below: recorded chains; label: #version of the transformation or chain and the top-1 % of new
queries on the old gallery it upgrades; under a version: top-1 on its own gallery.</p></section>
<section><h2>Every measured pair (top-1 %)</h2>{heatmap_html(view)}</section>
<section class="wide"><h2>Transformations and chains</h2>{edges_html(view)}</section>
<section class="wide"><h2>Where each version came from</h2>{origins_html(view)}</section>
<section class="wide" id="gate-history"><h2>Release gate history</h2>{gates_html(view)}</section>
{f'<section class="wide"><h2>Left out</h2><ul>{notes}</ul></section>' if notes else ""}
</main></body></html>"""


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
    except ResolveError as exc:
        abort(Response(_e(str(exc)), status=404, mimetype="text/plain"))
        raise  # unreachable: abort raises


@blueprint.route("/")
def index() -> Response:
    families = known_families(_client())
    readable = current_app.config.get(FAMILY_FILTER)
    if readable is not None:
        families = readable(families)
    items = "".join(f"<li><a href='family/{_e(n)}'>{_e(n)}</a></li>" for n in families)
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>fct-registry</title>"
        f"<style>{_CSS}</style></head><body><header><b>fct-registry</b>"
        "<a href='../'>MLflow UI →</a></header><main><section class='wide'><h2>Families</h2>"
        f"<ul>{items or '<li class=muted>none registered</li>'}</ul></section></main></body></html>"
    )
    return Response(body, mimetype="text/html")


@blueprint.route("/family/<family>")
def family_page(family: str) -> Response:
    return Response(render_family(_view_or_404(family)), mimetype="text/html")


@blueprint.route("/api/family/<family>")
def family_json(family: str) -> Response:
    return Response(json.dumps(_view_or_404(family).as_dict()), mimetype="application/json")
