"""``fct resolve``, once its arguments are parsed (the parser is ``fct_registry.cli.resolve``)."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from fct_registry.config import load_params
from fct_registry.errors import DataError, FctError
from fct_registry.layout import Layout
from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import open_tracking_store
from fct_registry.resolver.load import load_graph
from fct_registry.resolver.resolve import resolve


def run(args: argparse.Namespace) -> int:

    source, target = parse_ref(args.source), parse_ref(args.target)  # checked by cli.resolve
    client = open_tracking_store(args.tracking_uri, read_only=True)
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


def _measuring_modules() -> tuple[ModuleType, ModuleType]:
    """``registry.chains`` and ``resolver.chain``: they run the chain's PyTorch modules, so they
    need the ``train`` extra. Loaded by name (dispatch, as the CLI loads a command) only for
    ``--evaluate``/``--export-onnx``, so plain ``fct resolve`` runs on the core install."""
    try:
        import torch  # noqa: F401  (heavy, optional: only measuring and exporting need it)
    except ImportError as exc:
        raise FctError(
            "--evaluate and --export-onnx run the chain in PyTorch, which this install lacks; "
            "install 'fct-registry[train]' (plain `fct resolve` needs no torch)"
        ) from exc
    return (
        importlib.import_module("fct_registry.registry.chains"),
        importlib.import_module("fct_registry.resolver.chain"),
    )


def _evaluate(args: argparse.Namespace, client: Any, graph: Any, resolution: Any) -> dict:
    """Measure the chosen route and the best unmeasured multi-hop alternatives; with
    ``--record``, register each measured multi-hop route as a chain."""

    chains, chain = _measuring_modules()
    distance = args.distance or _pipeline_distance()
    routes = [resolution.chosen]
    routes += [r for r in resolution.alternatives if not r.measured][:MAX_EVALUATED_ALTERNATIVES]
    evaluations, recorded, notes = [], [], []
    for route in routes:
        loaded = chains.load_chain(resolution.family, route.hops, route.path)
        evaluation = chain.evaluate_chain(
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
        version, created = chains.record_chain(client, loaded, evaluation, resolution.side_info)
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

    chains, chain = _measuring_modules()
    chosen = resolution.chosen
    loaded = chains.load_chain(resolution.family, chosen.hops, chosen.path)
    layout = Layout(args.outputs)
    notes = []
    try:
        keys = (graph.stored_as(chosen.source), graph.stored_as(chosen.target))
        old, _, side_info, _ = chain.stored_test_embeddings(layout, *keys)
        check: tuple | None = (old[:2048], side_info[:2048])
    except DataError:
        check = None
        notes.append(
            f"no stored embeddings under {layout.root}: the ONNX graph was checked on random "
            "inputs only"
        )
    diff = chain.export_chain_onnx(loaded, args.export_onnx, check_inputs=check)
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
