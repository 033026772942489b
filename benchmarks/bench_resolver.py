"""Benchmark: ``fct resolve`` on a synthetic family of 1,000 versions and 5,000 transformations.

    .venv/bin/python benchmarks/bench_resolver.py [--versions 1000] [--edges 5000] [--chains 100]
        [--queries 500] [--page-size 1000] [--api-sample 200]

What is measured, and how:

1. The registry. A SQLite MLflow store in a temporary folder holds the family ``bench``: 1,000
   embedding versions, 5,000 transformations plus ``--chains`` recorded chains in
   ``bench-transformations``, and 2 side-info extractors. Registering ~6,100 versions through
   ``MlflowClient.create_model_version`` takes minutes on SQLite, so the rows are bulk-inserted
   with MLflow's own SQLAlchemy schema (``mlflow.store.model_registry.dbmodels``); the cost of
   the API path is measured on ``--api-sample`` versions and extrapolated (printed as such).
2. Loading: ``load_graph`` through the public ``MlflowClient`` against that store, once per
   page size, printing MLflow calls, search pages, versions read and wall/CPU time. Calls are
   ``1 + ceil(versions / page_size)``: they grow with pages, not versions.
3. Resolving: ``resolve`` on the loaded graph for ``--queries`` random (FROM < TO) pairs with a
   random gallery extractor: median, p95 and max latency against the 50 ms target. Queries with
   no path (an error carrying the reachable set) are timed too, separately.

Edges go from older to newer versions, mostly short jumps (a family upgrades step by step) with
some long ones; 90% read extractor 1, 10% extractor 2; top-1 uniform in [40, 95]. Exit status 1
if the p95 of either query kind misses the target.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 50.0
FAMILY = "bench"


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, CPU seconds of this process)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def synthetic_rows(
    n_versions: int, n_edges: int, n_chains: int, seed: int
) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """``{registered model: [(version, tags)]}`` of the synthetic family."""
    from fct_registry.registry import tags as fct_tags

    rng = random.Random(seed)
    side_model = fct_tags.side_info_model_name(FAMILY)
    extractors = [fct_tags.model_ref(side_model, 1), fct_tags.model_ref(side_model, 2)]
    embeddings = [
        (
            v,
            {
                fct_tags.ROLE: fct_tags.ROLE_EMBEDDING,
                fct_tags.SIDE_INFO: extractors[0],
                fct_tags.EMBEDDING_DIM: "128",
            },
        )
        for v in range(1, n_versions + 1)
    ]
    transforms: list[tuple[int, dict[str, str]]] = []
    by_source: dict[int, list[tuple[int, int, str]]] = {}
    for version in range(1, n_edges + 1):
        source = rng.randint(1, n_versions - 1)
        jump = min(n_versions - source, 1 + int(rng.expovariate(1 / 3)))
        target = source + jump
        reads = extractors[0] if rng.random() < 0.9 else extractors[1]
        top1 = rng.uniform(40, 95)
        transforms.append(
            (
                version,
                {
                    fct_tags.ROLE: fct_tags.ROLE_TRANSFORMATION,
                    fct_tags.SOURCE: str(source),
                    fct_tags.TARGET: str(target),
                    fct_tags.SIDE_INFO: reads,
                    fct_tags.KIND: "fct",
                    fct_tags.TOP1: f"{top1:.2f}",
                    fct_tags.TOP5: f"{min(100.0, top1 + 5):.2f}",
                    fct_tags.MAP: f"{top1 - 10:.2f}",
                    # synthetic: stands in for an evaluation run
                    fct_tags.MEASURED_RUN: "benchmark",
                },
            )
        )
        by_source.setdefault(source, []).append((version, target, reads))
    version = n_edges
    while len(transforms) < n_edges + n_chains:  # recorded chains along 2-3 existing hops
        first = rng.choice(transforms[:n_edges])
        hops = [first[0]]
        at, reads = int(first[1][fct_tags.TARGET]), first[1][fct_tags.SIDE_INFO]
        for _ in range(rng.randint(1, 2)):
            nxt = [h for h in by_source.get(at, []) if h[2] == reads]
            if not nxt:
                break
            step = rng.choice(nxt)
            hops.append(step[0])
            at = step[1]
        if len(hops) < 2:
            continue
        version += 1
        transforms.append(
            (
                version,
                {
                    fct_tags.ROLE: fct_tags.ROLE_CHAIN,
                    fct_tags.SOURCE: first[1][fct_tags.SOURCE],
                    fct_tags.TARGET: str(at),
                    fct_tags.HOPS: ",".join(map(str, hops)),
                    fct_tags.SIDE_INFO: reads,
                    fct_tags.TOP1: f"{rng.uniform(40, 90):.2f}",
                    fct_tags.MEASURED_RUN: "benchmark",
                },
            )
        )
    return {
        FAMILY: embeddings,
        side_model: [
            (1, {fct_tags.ROLE: fct_tags.ROLE_SIDE_INFO}),
            (2, {fct_tags.ROLE: fct_tags.ROLE_SIDE_INFO}),
        ],
        fct_tags.transformations_model_name(FAMILY): transforms,
    }


def bulk_insert(uri: str, rows: dict[str, list[tuple[int, dict[str, str]]]]) -> None:
    """Write the rows with MLflow's SQLAlchemy schema (the store must be initialised)."""
    import sqlalchemy
    from mlflow.store.model_registry.dbmodels.models import (
        SqlModelVersion,
        SqlModelVersionTag,
        SqlRegisteredModel,
        SqlRegisteredModelAlias,
    )

    now = int(time.time() * 1000)
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(
            SqlRegisteredModel.__table__.insert(),
            [{"name": n, "creation_time": now, "last_updated_time": now} for n in rows],
        )
        conn.execute(
            SqlModelVersion.__table__.insert(),
            [
                {
                    "name": name,
                    "version": v,
                    "creation_time": now,
                    "last_updated_time": now,
                    "source": f"/nonexistent/{name}/{v}",
                    "status": "READY",
                    "current_stage": "None",
                }
                for name, versions in rows.items()
                for v, _ in versions
            ],
        )
        conn.execute(
            SqlModelVersionTag.__table__.insert(),
            [
                {"name": name, "version": v, "key": k, "value": value}
                for name, versions in rows.items()
                for v, tags in versions
                for k, value in tags.items()
            ],
        )
        latest = max(v for v, _ in rows[FAMILY])
        conn.execute(
            SqlRegisteredModelAlias.__table__.insert(),
            [{"name": FAMILY, "alias": "production", "version": latest}],
        )
    engine.dispose()


def api_cost_per_version(uri: str, rows: list[tuple[int, dict[str, str]]]) -> float:
    """Seconds per ``create_model_version`` (with tags) on this store, measured on ``rows``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("api-sample")
    start = time.perf_counter()
    for _, tags in rows:
        client.create_model_version("api-sample", source="/nonexistent", tags=tags)
    return (time.perf_counter() - start) / max(len(rows), 1)


def _initialised_client(uri: str) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_registered_models()  # the first call creates the schema
    return client


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--edges", type=int, default=5000)
    parser.add_argument("--chains", type=int, default=100, help="recorded chains (default 100)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--page-size", type=int, nargs="+", default=[1000, 200, 10000])
    parser.add_argument("--api-sample", type=int, default=200, help="versions registered via API")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(REPO_ROOT))
    import logging

    from fct_registry.errors import FctError
    from fct_registry.registry.refs import VersionRef
    from fct_registry.resolver import load_graph, resolve

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    rows = synthetic_rows(args.versions, args.edges, args.chains, args.seed)
    total = sum(len(v) for v in rows.values())
    print(
        f"synthetic family {FAMILY!r}: {args.versions} versions, {args.edges} transformations, "
        f"{len(rows[f'{FAMILY}-transformations']) - args.edges} recorded chains, "
        f"2 side-info extractors = {total} model versions"
    )

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        client, wall, _ = timed(lambda: _initialised_client(uri))
        print(f"\n[store] SQLite MLflow store in a temp dir (schema created in {wall:.1f} s)")
        _, wall, _ = timed(lambda: bulk_insert(uri, rows))
        print(f"  bulk-inserted {total} versions with MLflow's SQLAlchemy schema in {wall:.1f} s")
        sample = rows[f"{FAMILY}-transformations"][: args.api_sample]
        per_version = api_cost_per_version(uri, sample)
        print(
            f"  MlflowClient.create_model_version measured at {1000 * per_version:.0f} ms/version "
            f"on {len(sample)} versions -> registering all {total} through the API would take "
            f"~{per_version * total / 60:.1f} min (extrapolated, not run)"
        )

        print("\n[load] load_graph(MlflowClient(), family) against that store")
        print(
            f"  {'page size':>9} {'calls':>6} {'pages':>6} {'versions':>9} {'wall s':>7} "
            f"{'cpu s':>6}"
        )
        graph = None
        for page_size in args.page_size:
            graph, wall, cpu = timed(lambda ps=page_size: load_graph(client, FAMILY, ps))
            s = graph.load_stats
            print(
                f"  {page_size:>9} {s.calls:>6} {s.pages:>6} {s.versions:>9} {wall:>7.2f} "
                f"{cpu:>6.2f}"
            )
        assert graph is not None
        print(
            f"  calls = 1 get_registered_model + ceil(versions / page size) searches; "
            f"one call per version would be {total + 1}"
        )
        print(
            f"  graph: {len(graph.nodes)} versions, {len(graph.edges)} transformations, "
            f"{len(graph.chains)} recorded chains, {len(graph.notes)} records left out"
        )

    rng = random.Random(args.seed + 1)
    extractors = graph.extractors()
    # The first query per extractor builds cached adjacency lists; timed on their own.
    first = []
    for extractor in extractors:
        a, b = 1, max(graph.nodes)
        start = time.perf_counter()
        with contextlib.suppress(FctError):  # a query with no path still builds the caches
            resolve(graph, VersionRef(FAMILY, version=a), VersionRef(FAMILY, version=b), extractor)
        first.append(1000 * (time.perf_counter() - start))
    found: list[float] = []
    missing: list[float] = []
    hops: list[int] = []
    cpu_start = time.process_time()
    for _ in range(args.queries):
        a, b = sorted(rng.sample(list(graph.nodes), 2))
        extractor = extractors[0] if rng.random() < 0.9 else extractors[1]
        src, dst = VersionRef(FAMILY, version=a), VersionRef(FAMILY, version=b)
        start = time.perf_counter()
        try:
            res = resolve(graph, src, dst, side_info=extractor)
            found.append(1000 * (time.perf_counter() - start))
            hops.append(res.chosen.n_hops if res.chosen else 0)
        except FctError:
            missing.append(1000 * (time.perf_counter() - start))
    cpu = time.process_time() - cpu_start

    print(
        f"\n[resolve] {args.queries} random queries on the loaded graph (target: < {TARGET_MS:g} "
        f"ms each; CPU {cpu:.2f} s in all)"
    )
    print(
        f"  first query per extractor (builds its cached adjacency, {FAMILY}@1 -> @latest): "
        + ", ".join(f"{ms:.1f} ms" for ms in first)
    )
    ok = True
    for name, values in (("chain found", found), ("no path (error)", missing)):
        if not values:
            continue
        p95 = percentile(values, 0.95)
        ok &= p95 < TARGET_MS
        print(
            f"  {name:<16} n={len(values):<4} median {statistics.median(values):6.2f} ms  "
            f"p95 {p95:6.2f} ms  max {max(values):6.2f} ms  "
            f"{'OK' if p95 < TARGET_MS else 'MISSES TARGET'}"
        )
    if hops:
        print(f"  chosen chains: {statistics.mean(hops):.1f} hops on average, max {max(hops)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
