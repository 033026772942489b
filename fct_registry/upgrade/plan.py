"""What an upgrade will run: one resolved chain per (version, side-info extractor) in the gallery.

:func:`plan_from_registry` resolves, for every group of rows the manifest lists, the chain to the
target with :func:`fct_registry.resolver.resolve` (on the gallery's *recorded* extractor, so
extractors are never mixed), downloads each step's ONNX graph from the ``fct`` flavor, verifies
it against the checksums recorded at registration, and builds a runner. Everything that can be
checked without reading rows is checked here, before anything is written: unknown versions,
side-info mismatches, widths the chains cannot read.

:meth:`UpgradePlan.fingerprint` identifies the job (source manifest, chains and their graphs'
checksums, batch size); a resumed run continues only a job with the same fingerprint.
:func:`estimate` times the chains on random rows for ``--dry-run``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fct_registry._files import sha256_file
from fct_registry.errors import FctError
from fct_registry.gallery.errors import SchemaError, SideInfoError
from fct_registry.gallery.manifest import GroupKey, Manifest, ShardInfo
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.flavor_files import flavor_conf, verify_registered
from fct_registry.registry.refs import VersionRef
from fct_registry.resolver.errors import ResolverError
from fct_registry.resolver.load import load_graph
from fct_registry.resolver.resolve import resolve, uncertainty_routes
from fct_registry.resolver.search import best_routes
from fct_registry.upgrade.batch import BatchPlan, GroupRunner, UpgradeTarget
from fct_registry.upgrade.runner import ChainRunner, OnnxChainRunner

PLAN_FORMAT = "fct-upgrade/1"


class PlanError(FctError):
    """The registry cannot provide a usable chain for some rows of the gallery."""


@dataclass(frozen=True)
class Step:
    """One ONNX graph of a chain: a registered transformation or a recorded chain of them."""

    model: str  # registered model, e.g. fashion-transformations ("local" for plain files)
    version: int
    source: int
    target: int
    hops: tuple[int, ...]  # transformation versions it applies
    onnx_sha256: str
    onnx: str = field(compare=False)  # local path of the graph (not recorded)

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}" if self.model != "local" else self.onnx

    def record(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "uri": self.uri,
            "from": self.source,
            "to": self.target,
            "transformations": list(self.hops),
            "onnx_sha256": self.onnx_sha256,
        }


@dataclass(frozen=True)
class GroupPlan:
    """The route chosen for one group of rows (its steps, runner and score, as recorded in the
    gallery's provenance); no steps when the rows are already at the target."""

    key: GroupKey
    path: tuple[int, ...]  # family versions visited
    steps: tuple[Step, ...]
    runner: ChainRunner | None = field(compare=False, repr=False)
    top1: float | None = None
    basis: str = ""

    def label(self, family: str) -> str:
        if not self.steps:
            return f"{family}@{self.key[0]} (already the target)"
        via = ", ".join(f"{s.model}/{s.version}" for s in self.steps)
        return f"{family}@{' -> '.join(map(str, self.path))} via {via}"

    def record(self) -> dict[str, Any]:
        return {
            "from": self.key[0],
            "side_info": self.key[1],
            "path": list(self.path),
            "steps": [s.record() for s in self.steps],
            "top1": self.top1,
            "basis": self.basis,
        }


@dataclass(frozen=True)
class UpgradePlan(UpgradeTarget):
    routes: Mapping[GroupKey, GroupPlan]
    registry: str | None = None  # redacted tracking URI the chains came from

    def batch_plan(self) -> BatchPlan:
        return BatchPlan(
            self.family,
            self.target,
            self.target_dim,
            {k: GroupRunner(r.runner, r.label(self.family)) for k, r in self.routes.items()},
        )

    def record(self, keys: Any = None) -> dict[str, Any]:
        """The plan as provenance; ``keys``: only the chains of these groups (default: all)."""
        keys = _sorted(self.routes if keys is None else [k for k in keys if k in self.routes])
        return {
            "family": self.family,
            "target": self.target,
            "target_dim": self.target_dim,
            "registry": self.registry,
            "chains": [self.routes[k].record() for k in keys],
        }

    def fingerprint(self, batch_size: int) -> str:
        """The job's identity: same chains (graph checksums), same target, same batching. The
        source is checked shard by shard (each finished shard records its input's sha256)."""
        job = {"format": PLAN_FORMAT, "batch_size": batch_size, **self.record()}
        job.pop("registry")  # where the chains came from does not change the output
        return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()

    def check_shard(self, shard: ShardInfo, where: str) -> None:
        """What the manifest alone shows to be wrong with a shard, before reading it."""
        for key in shard.groups:
            route = self.routes.get(key)
            if route is None:
                raise SchemaError(
                    f"{where}: holds {self.family}@{key[0]} rows with side-info "
                    f"{key[1] or 'none'}, for which no chain was planned; the "
                    "manifest is inconsistent: restore it"
                )
            want = route.runner.old_dim if route.runner is not None else self.target_dim
            if shard.embedding_dim != want:
                raise SchemaError(
                    f"{where}: embeddings are {shard.embedding_dim}-d, but "
                    f"{route.label(self.family)} reads {want}-d; the shard was "
                    f"not embedded with {self.family}@{key[0]}: re-index it"
                )
            needs = route.runner.side_info_dim if route.runner is not None else 0
            if needs and shard.side_info_dim is None:
                raise SideInfoError(
                    f"{where}: no side_info column, but {route.label(self.family)}"
                    " reads side-info; re-index the shard with `fct embed`"
                )
            if needs and shard.side_info_dim != needs:
                raise SchemaError(
                    f"{where}: side-info is {shard.side_info_dim}-d, but "
                    f"{route.label(self.family)} reads {needs}-d; re-index it"
                )

    @classmethod
    def from_onnx(
        cls,
        family: str,
        target: int,
        chains: Mapping[GroupKey, Sequence[str | Path]],
        *,
        target_dim: int | None = None,
        threads: int | None = None,
    ) -> UpgradePlan:
        """A plan from local ONNX graphs (tests, benchmarks, offline use): ``chains`` maps each
        group of rows to its graphs in order (an empty list: already at the target)."""
        routes: dict[GroupKey, GroupPlan] = {}
        dims = set()
        for key, paths in chains.items():
            if not paths:
                routes[key] = GroupPlan(key, (key[0],), (), None)
                continue
            runner = OnnxChainRunner(paths, threads=threads)
            dims.add(runner.new_dim)
            steps = tuple(
                Step("local", 0, key[0], target, (), sha256_file(p), str(p)) for p in paths
            )
            routes[key] = GroupPlan(key, (key[0], target), steps, runner, basis="local graphs")
        if target_dim is None:
            if len(dims) != 1:
                raise PlanError(
                    "pass target_dim: no chain (or chains of different widths) "
                    "says how wide the target's embeddings are"
                )
            target_dim = dims.pop()
        return cls(family, target, target_dim, routes)


def _sorted(keys: Any) -> list[GroupKey]:
    return sorted(keys, key=lambda k: (k[0], k[1] or ""))


# --- from the registry -------------------------------------------------------------------------


def plan_from_registry(
    client: Any,
    manifest: Manifest,
    target: Any,
    workdir: Path,
    *,
    gallery: str = "the gallery",
    threads: int | None = None,
    registry: str | None = None,
    uncertainty: bool = False,
) -> UpgradePlan:
    """Resolve and fetch the chain for every (version, extractor) group of ``manifest``.
    ``uncertainty``: only chains ending in an uncertainty-aware transformation, so the gallery
    gets the ``uncertainty`` column a backfill plan orders by (``fct upgrade --for-backfill``).

    ``target`` is a :class:`~fct_registry.registry.refs.VersionRef` of the gallery's family.
    Graphs are downloaded under ``workdir`` through MLflow's current registry URI and verified
    against the versions' ``fct.checksums`` tags. Raises a ``ResolverError`` (unknown version,
    side-info mismatch, no path) or :class:`PlanError`, naming the rows concerned.
    """

    family = manifest.family
    if target.family != family:
        raise PlanError(
            f"{gallery} holds {family} embeddings, but the target is {target}; "
            f"upgrade within the family (e.g. --to {family}@latest)"
        )
    graph = load_graph(client, family)
    dst = graph.version_of(target)
    fetched: dict[tuple[str, int], Step] = {}
    routes: dict[GroupKey, GroupPlan] = {}
    for key, rows in manifest.groups.items():
        shards = manifest.shards_with(key)
        listed = ", ".join(shards[:3]) + (", ..." if len(shards) > 3 else "")
        where = (
            f"{gallery}: {rows} rows of {family}@{key[0]} (side-info "
            f"{key[1] or 'none'}) in {listed}"
        )
        try:
            routes[key] = _route(client, graph, key, dst, workdir, fetched, threads, uncertainty)
        except ResolverError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        except (PlanError, SideInfoError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    node_dim = graph.nodes[dst].embedding_dim
    dims = {r.runner.new_dim for r in routes.values() if r.runner is not None}
    if node_dim is not None:
        dims.add(node_dim)
    if not dims:  # every row is already at the target and the registry does not say the width
        dims = {s.embedding_dim for s in manifest.shards}
    if len(dims) != 1:
        raise PlanError(
            f"the chains to {family}@{dst} end in different widths {sorted(dims)} "
            f"(registry: {family}@{dst} is {node_dim}-d); fix the registrations"
        )
    return UpgradePlan(family, dst, dims.pop(), routes, registry)


def _route(
    client: Any,
    graph: Any,
    key: GroupKey,
    dst: int,
    workdir: Path,
    fetched: dict[tuple[str, int], Step],
    threads: int | None,
    uncertainty: bool = False,
) -> GroupPlan:

    source, extractor = key
    family = graph.family
    graph.version_of(VersionRef(family, version=source))  # UnknownVersionError, listing known
    if source == dst:
        return GroupPlan(key, (source,), (), None, basis="already the target")
    if extractor is None:  # no side-info stored: only chains that read none can be used
        found = best_routes(graph, source, dst, None)
        chosen = next(iter(uncertainty_routes(found) if uncertainty else found), None)
        if chosen is None:
            raise SideInfoError(
                f"these rows have no side-info, and every chain to "
                f"{family}@{dst} reads some; re-index them with `fct embed` "
                "(which stores side-info)"
            )
    else:
        resolution = resolve(
            graph,
            VersionRef(family, version=source),
            VersionRef(family, version=dst),
            side_info=extractor,
            uncertainty=uncertainty,
        )
        chosen = resolution.chosen
    model = graph.transformations_model
    steps = []
    for segment in chosen.segments:
        cache = (model, segment.model_version)
        if cache not in fetched:
            fetched[cache] = _fetch_step(client, model, segment, workdir)
        steps.append(fetched[cache])
    runner = OnnxChainRunner([s.onnx for s in steps], threads=threads)
    return GroupPlan(
        key, chosen.path, tuple(steps), runner, top1=chosen.top1, basis=chosen.basis(model)
    )


def _fetch_step(client: Any, model: str, segment: Any, workdir: Path) -> Step:
    """Download one transformation (or recorded chain) version and verify its files."""
    from mlflow.artifacts import download_artifacts

    version = segment.model_version
    uri = f"models:/{model}/{version}"
    version_tags = client.get_model_version(model, str(version)).tags
    dst = workdir / f"{model}-{version}"
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    if not (local / "MLmodel").is_file():
        local = next((p.parent for p in local.rglob("MLmodel")), local)
    verify_registered(local, version_tags, what=uri)
    conf = flavor_conf(local)
    if conf.get("kind") != "transformation":
        raise PlanError(
            f"{uri} is a {conf.get('kind')} model, not a transformation; fix its {fct_tags.ROLE} "
            "tag"
        )
    onnx = local / conf["onnx"]
    return Step(
        model,
        version,
        segment.source,
        segment.target,
        tuple(segment.hops),
        conf["checksums"][conf["onnx"]],
        str(onnx),
    )


# --- dry run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    rows: int
    seconds: float
    rates: dict[GroupKey, float]  # rows per second of each chain, measured


def estimate(
    plan: UpgradePlan, manifest: Manifest, *, sample_rows: int = 2048, repeats: int = 2
) -> Estimate:
    """Time each chain on ``sample_rows`` random rows (best of ``repeats``, after a warm-up) and
    scale to the gallery's rows. Reading, checking and writing add a few percent on top (see
    benchmarks/bench_upgrade.py), not included."""
    rng = np.random.default_rng(0)
    rates: dict[GroupKey, float] = {}
    seconds = 0.0
    for key, rows in manifest.groups.items():
        route = plan.routes[key]
        if route.runner is None:
            continue
        runner = route.runner
        old = rng.standard_normal((sample_rows, runner.old_dim), dtype=np.float32)
        side = (
            rng.standard_normal((sample_rows, runner.side_info_dim), dtype=np.float32)
            if runner.side_info_dim
            else None
        )
        runner(old[:16], None if side is None else side[:16])  # warm-up: session start, arenas
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            runner(old, side)
            best = min(best, time.perf_counter() - start)
        rates[key] = sample_rows / best
        seconds += rows / rates[key]
    return Estimate(manifest.rows, seconds, rates)
