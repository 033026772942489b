"""``fct resolve FROM TO``: which transformation chain upgrades a gallery, and why."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from fct_registry.cli._common import add_tracking_uri
from fct_registry.config import load_params
from fct_registry.errors import DataError, FctError
from fct_registry.layout import Layout
from fct_registry.registry.chains import load_chain, record_chain
from fct_registry.registry.refs import parse_ref
from fct_registry.resolver.chain import evaluate_chain, export_chain_onnx, stored_test_embeddings
from fct_registry.resolver.load import DEFAULT_PAGE_SIZE, load_graph
from fct_registry.resolver.resolve import resolve

DESCRIPTION = """\
Pick the chain of registered transformations that upgrades a gallery embedded with FROM into
TO's embedding space: the route with the highest measured top-1 (new-version queries against the
upgraded old gallery), fewest hops on ties. Only transformations reading the side-info extractor
the gallery was indexed with are used (FROM's fct.side_info tag, or --side-info).

A single transformation or a recorded chain scores its measured top-1; a route joining several
is estimated as the product of their top-1 fractions (shown as "estimated"). --evaluate measures
the chosen route end to end on the stored test embeddings, --record registers it as a chain so
later resolves use the measurement, --export-onnx writes it as one fused ONNX graph."""

EPILOG = """\
examples:
  fct resolve fashion@1 fashion@3 --json
  fct resolve fashion@1 fashion@production
  fct resolve fashion@1 fashion@latest --evaluate --record --export-onnx chain.onnx"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:

    parser = subparsers.add_parser(
        "resolve",
        help="choose the transformation chain from one version to another, with its numbers",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="FROM", help="the gallery's version, e.g. fashion@1")
    parser.add_argument(
        "target", metavar="TO", help="the version to upgrade to: fashion@3, @production, @latest"
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--side-info",
        metavar="F-side-info/N",
        help="the extractor the gallery's side-info was computed with (default: FROM's "
        "fct.side_info tag)",
    )
    parser.add_argument("--json", action="store_true", help="print the resolution as JSON")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="measure the chosen chain end to end on the stored test embeddings (--outputs)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="with --evaluate: register the multi-hop chain (fct.role=chain) with its measurement",
    )
    parser.add_argument(
        "--export-onnx",
        type=Path,
        metavar="PATH",
        help="write the chosen chain as one fused ONNX graph, checked against hop-by-hop",
    )
    parser.add_argument(
        "--outputs",
        type=Path,
        default=Path("outputs"),
        metavar="DIR",
        help="pipeline outputs holding the stored embeddings (default: %(default)s)",
    )
    parser.add_argument(
        "--distance",
        help="distance for --evaluate: l2 or cosine (default: evaluation.distance of "
        "./params.yaml, the one every edge was measured with, else l2)",
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help="model versions per registry search page (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def mlflow_client(tracking_uri: str | None) -> Any:
    """An ``MlflowClient``; a given URI also becomes MLflow's default, which the flavor uses."""
    import mlflow

    # Progress bars of artifact downloads would interleave with the table on stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient()


def run(args: argparse.Namespace) -> int:

    source, target = parse_ref(args.source), parse_ref(args.target)
    if source.family != target.family:
        raise FctError(
            f"FROM and TO must be versions of one family, got {source.family!r} and "
            f"{target.family!r}; e.g. fct resolve {source.family}@1 {source.family}@2"
        )
    if args.record and not args.evaluate:
        raise FctError("--record stores a measurement: pass --evaluate with it")
    if args.page_size < 1:
        raise FctError(f"--page-size must be a positive number, got {args.page_size}")

    client = mlflow_client(args.tracking_uri)
    graph = load_graph(client, source.family, page_size=args.page_size)
    start = time.perf_counter()
    resolution = resolve(graph, source, target, side_info=args.side_info)
    resolve_ms = 1000 * (time.perf_counter() - start)
    if (args.evaluate or args.export_onnx) and resolution.chosen is None:
        raise FctError(
            f"{args.source} and {args.target} are the same version: there is no chain to "
            "evaluate or export"
        )
    extra: dict[str, Any] = {}
    notes: list[str] = []
    if args.evaluate:
        measured = _evaluate(args, client, graph, resolution)
        notes += measured.pop("chain_notes")
        extra.update(measured)
        if extra["recorded"]:  # resolve again, on the measurements just recorded
            extra["decision_before_measuring"] = resolution.decision
            graph = load_graph(client, source.family, page_size=args.page_size)
            resolution = resolve(graph, source, target, side_info=args.side_info)
    if args.export_onnx:
        exported = _export(args, graph, resolution)
        notes += exported.pop("chain_notes")
        extra.update(exported)
    if notes:
        extra["chain_notes"] = notes

    out: dict[str, Any] = resolution.to_dict()
    stats = graph.load_stats
    out["graph"] = {
        "versions": len(graph.nodes),
        "transformations": len(graph.edges),
        "chains": len(graph.chains),
        "mlflow_calls": stats.calls if stats else None,
        "pages": stats.pages if stats else None,
        "load_seconds": stats.seconds if stats else None,
        "resolve_ms": resolve_ms,
    }
    out.update(extra)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    _print_text(resolution, out)
    return 0


def _print_text(resolution: Any, out: dict[str, Any]) -> None:
    if "decision_before_measuring" in out:
        print(f"before measuring: {out['decision_before_measuring']}\n")
    print(resolution.table())
    g = out["graph"]
    print(
        f"\ngraph: {g['versions']} versions, {g['transformations']} transformations, "
        f"{g['chains']} recorded chains; loaded with {g['mlflow_calls']} MLflow calls "
        f"({g['pages']} search page{'s' if g['pages'] != 1 else ''}) in "
        f"{g['load_seconds']:.2f} s; resolved in {g['resolve_ms']:.1f} ms"
    )
    for e in out.get("evaluations", []):
        route = "->".join(map(str, e["path"]))
        print(
            f"evaluated {route} (transformations {','.join(map(str, e['hops']))}) end to end on "
            f"{e['items']} test items ({e['distance']}): top-1 {e['top1']:.2f}% (was "
            f"{e['top1_before']:.2f}%, {e['basis_before']}), top-5 {e['top5']:.2f}%, mAP "
            f"{e['mAP']:.2f}%"
        )
    for r in out.get("recorded", []):
        verb = "registered" if r["created"] else "updated the measurement of"
        print(f"{verb} {r['uri']} (chain {','.join(map(str, r['hops']))})")
    for note in out.get("chain_notes", []):
        print(f"note: {note}")
    if "onnx" in out:
        o = out["onnx"]
        print(
            f"wrote {o['path']}: one ONNX graph of {o['hops']} hop(s); max |ONNX - hop-by-hop| "
            f"= {o['max_abs_diff']:.2e} on {o['checked_on']}"
        )


MAX_EVALUATED_ALTERNATIVES = 3


def _evaluate(args: argparse.Namespace, client: Any, graph: Any, resolution: Any) -> dict:
    """Measure the chosen route and the best unmeasured multi-hop alternatives; with
    ``--record``, register each measured multi-hop route as a chain."""

    distance = args.distance or _pipeline_distance()
    routes = [resolution.chosen]
    routes += [r for r in resolution.alternatives if not r.measured][:MAX_EVALUATED_ALTERNATIVES]
    evaluations, recorded, notes = [], [], []
    for route in routes:
        loaded = load_chain(resolution.family, route.hops, route.path)
        evaluation = evaluate_chain(
            loaded,
            Layout(args.outputs),
            distance=distance,
            stored_as=(graph.stored_as(route.source), graph.stored_as(route.target)),
        )
        evaluations.append(
            evaluation.to_dict()
            | {
                "path": list(route.path),
                "top1_before": route.top1,
                "basis_before": route.basis(resolution.model),
            }
        )
        if not args.record:
            continue
        if route.n_hops < 2:
            notes.append(
                f"{'->'.join(map(str, route.path))} is a single transformation: not recorded as "
                "a chain, its own fct.top1 is its measurement"
            )
            continue
        version, created = record_chain(client, loaded, evaluation, resolution.side_info)
        recorded.append(
            {
                "model_version": version,
                "uri": f"models:/{resolution.model}/{version}",
                "hops": list(route.hops),
                "created": created,
            }
        )
    return {"evaluations": evaluations, "recorded": recorded, "chain_notes": notes}


def _pipeline_distance() -> str:
    """The distance the pipeline measured edges with, so a chain is measured the same way."""

    params = Path("params.yaml")
    return load_params(params).evaluation.distance if params.is_file() else "l2"


def _export(args: argparse.Namespace, graph: Any, resolution: Any) -> dict[str, Any]:

    chosen = resolution.chosen
    loaded = load_chain(resolution.family, chosen.hops, chosen.path)
    layout = Layout(args.outputs)
    notes = []
    try:
        keys = (graph.stored_as(chosen.source), graph.stored_as(chosen.target))
        old, _, side_info, _ = stored_test_embeddings(layout, *keys)
        check: tuple | None = (old[:2048], side_info[:2048])
    except DataError:
        check = None
        notes.append(
            f"no stored embeddings under {layout.root}: the ONNX graph was checked on random "
            "inputs only"
        )
    diff = export_chain_onnx(loaded, args.export_onnx, check_inputs=check)
    return {
        "onnx": {
            "path": str(args.export_onnx),
            "hops": len(loaded.hops),
            "transformations": list(loaded.hops),
            "max_abs_diff": diff,
            "checked_on": "stored test embeddings" if check is not None else "random inputs",
        },
        "chain_notes": notes,
    }
