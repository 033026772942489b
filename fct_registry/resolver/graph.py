"""The compatibility graph of one family: versions as nodes, measured transformations as edges.

Pure data, built from MLflow ``ModelVersion``-like records (anything with ``name``, ``version``,
``tags`` and optionally ``status``), so the path search is tested without a tracking server and
``load.py`` is the only module that talks to MLflow. The naming and tag schema are fixed in
``fct_registry.registry.tags``.

Records that cannot be used (no ``fct.from``/``fct.to``, no measured top-1, a chain whose hops do
not connect) are not fatal: they are left out and described in ``CompatibilityGraph.notes``, so
one bad registration never hides the rest of the family. A transformation without a measured
top-1 is also kept in ``CompatibilityGraph.unmeasured``, so that a request it would serve fails
naming it (:mod:`.resolve`) instead of with a bare "no path". A ``fct.top1`` counts as measured
only beside ``fct.measured_run``, the run that logged it, which the tool writes with it: a
number set by hand is never taken as a measurement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fct_registry.registry import tags as fct_tags
from fct_registry.registry.refs import VersionRef
from fct_registry.resolver.errors import ResolverError, UnknownVersionError


class ModelVersionLike(Protocol):
    """The part of ``mlflow.entities.model_registry.ModelVersion`` the graph reads."""

    name: str
    version: Any  # str over REST, int from the SQL store
    tags: Mapping[str, str]


@dataclass(frozen=True)
class VersionNode:
    """One embedding-model version (a registered version of model ``F``)."""

    version: int
    side_info: str | None  # "<F>-side-info/<n>": the extractor its galleries are indexed with
    embedding_dim: int | None = None
    aliases: tuple[str, ...] = ()
    pipeline_key: str | None = None  # the params.yaml ``versions`` key it was trained from


@dataclass(frozen=True)
class TransformEdge:
    """A registered transformation, or a recorded chain of them, with its measured accuracy.

    ``top1``/``top5``/``mAP`` are percent, measured as new-version queries against the old
    gallery upgraded by this edge (leave-one-out on the held-out split). For a recorded chain
    they are measured end to end, and ``hops`` lists the transformation versions it applies.
    """

    model_version: int  # version number in the "<F>-transformations" registered model
    source: int
    target: int
    side_info: str | None  # None: reads no side-info (kind fct-no-side-info), fits any gallery
    top1: float
    hops: tuple[int, ...]  # transformation versions applied in order; (model_version,) if single
    kind: str | None = None
    top5: float | None = None
    mAP: float | None = None

    @property
    def is_chain(self) -> bool:
        return len(self.hops) > 1

    @property
    def n_hops(self) -> int:
        return len(self.hops)

    @property
    def cost(self) -> float:
        """``-ln(top1 / 100)``: maximising a product of scores is minimising a sum of costs."""
        return -math.log(max(self.top1, 1e-9) / 100.0)


@dataclass(frozen=True)
class UnmeasuredEdge:
    """A registered transformation between registered versions that has no measured top-1."""

    model_version: int
    source: int
    target: int
    side_info: str | None
    why: str  # what its tags lack, in words

    def label(self, model: str) -> str:
        return f"{model}/{self.model_version} ({self.source}->{self.target})"


@dataclass(frozen=True)
class LoadStats:
    """What loading the graph cost: the benchmark and ``fct resolve`` print these."""

    calls: int  # MLflow client calls in all
    pages: int  # search_model_versions pages among them
    versions: int  # model versions read
    seconds: float


@dataclass
class CompatibilityGraph:
    """Versions, usable edges and recorded chains of one family. Treat it as immutable: the
    search caches per-extractor adjacency in it."""

    family: str
    nodes: dict[int, VersionNode]
    edges: list[TransformEdge]  # single transformations, sorted by model version
    chains: list[TransformEdge]  # recorded chains with an end-to-end measurement
    aliases: dict[str, int] = field(default_factory=dict)
    side_info_versions: list[int] = field(default_factory=list)  # of "<F>-side-info"
    notes: list[str] = field(default_factory=list)  # records left out, and why
    unmeasured: list[UnmeasuredEdge] = field(default_factory=list)  # left out: no measurement
    load_stats: LoadStats | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_records(
        cls,
        family: str,
        records: Iterable[ModelVersionLike],
        aliases: Mapping[str, int | str] | None = None,
    ) -> CompatibilityGraph:
        """Build the graph from the versions of ``F``, ``F-side-info`` and ``F-transformations``.

        Records of other registered models are ignored; versions that are not ``READY`` (a
        registration still uploading or one that failed) are left out.
        """
        side_name, trans_name = (
            fct_tags.side_info_model_name(family),
            fct_tags.transformations_model_name(family),
        )
        alias_map = {a: int(v) for a, v in (aliases or {}).items()}
        by_version: dict[int, list[str]] = {}
        for alias, v in alias_map.items():
            by_version.setdefault(v, []).append(alias)
        nodes: dict[int, VersionNode] = {}
        side_versions: list[int] = []
        singles: dict[int, TransformEdge] = {}
        unmeasured: dict[int, UnmeasuredEdge] = {}
        chain_records: list[tuple[int, Mapping[str, str]]] = []
        notes: list[str] = []
        for rec in records:
            status = getattr(rec, "status", "READY")
            if status not in (None, "READY"):
                notes.append(f"{rec.name}/{rec.version} skipped: status {status}")
                continue
            version, tags = int(rec.version), dict(rec.tags or {})
            if rec.name == family:
                role = tags.get(fct_tags.ROLE, fct_tags.ROLE_EMBEDDING)
                if role != fct_tags.ROLE_EMBEDDING:
                    notes.append(
                        f"{family}/{version} skipped: {fct_tags.ROLE}={role}, not embedding"
                    )
                    continue
                nodes[version] = VersionNode(
                    version=version,
                    side_info=tags.get(fct_tags.SIDE_INFO) or None,
                    embedding_dim=_int_or_none(tags.get(fct_tags.EMBEDDING_DIM)),
                    aliases=tuple(sorted(by_version.get(version, ()))),
                    pipeline_key=tags.get(fct_tags.PIPELINE_KEY) or None,
                )
            elif rec.name == side_name:
                side_versions.append(version)
            elif rec.name == trans_name:
                role = tags.get(fct_tags.ROLE, fct_tags.ROLE_TRANSFORMATION)
                if role == fct_tags.ROLE_CHAIN:
                    chain_records.append((version, tags))
                elif role == fct_tags.ROLE_TRANSFORMATION:
                    edge = _edge(trans_name, version, tags, (version,), notes, unmeasured)
                    if edge is not None:
                        singles[version] = edge
                else:
                    notes.append(
                        f"{trans_name}/{version} skipped: unknown {fct_tags.ROLE}={role!r}"
                    )
        for v, edge in list(singles.items()):
            missing = [end for end in (edge.source, edge.target) if end not in nodes]
            if missing:
                notes.append(
                    f"{trans_name}/{v} skipped: it names {family} version(s) "
                    f"{', '.join(map(str, missing))}, which are not registered"
                )
                del singles[v]
        for v, u in list(unmeasured.items()):
            if u.source not in nodes or u.target not in nodes:
                del unmeasured[v]
        chains = [
            c
            for version, tags in chain_records
            if (c := _chain(trans_name, version, tags, singles, notes)) is not None
        ]
        return cls(
            family=family,
            nodes=dict(sorted(nodes.items())),
            edges=[singles[v] for v in sorted(singles)],
            chains=sorted(chains, key=lambda c: c.model_version),
            aliases=alias_map,
            side_info_versions=sorted(side_versions),
            notes=notes,
            unmeasured=[unmeasured[v] for v in sorted(unmeasured)],
        )

    # --- references ---------------------------------------------------------------------------
    @property
    def transformations_model(self) -> str:
        return fct_tags.transformations_model_name(self.family)

    def known_versions(self) -> str:
        return ", ".join(map(str, self.nodes)) or "none registered"

    def version_of(self, ref: VersionRef) -> int:
        """The version number a reference names, or an error listing what is known."""
        if ref.family != self.family:
            raise ResolverError(
                f"{ref} belongs to family {ref.family!r}, but the graph is of {self.family!r}; "
                f"resolve within one family (e.g. {self.family}@1 {self.family}@2)"
            )
        if not self.nodes:
            raise UnknownVersionError(
                f"{self.family} has no embedding versions registered; register one first"
            )
        if ref.version is not None:
            if ref.version not in self.nodes:
                raise UnknownVersionError(
                    f"unknown version {ref.version} of {self.family}; "
                    f"known: {self.known_versions()}"
                )
            return ref.version
        if ref.is_latest:
            return max(self.nodes)
        assert ref.alias is not None
        if ref.alias not in self.aliases:
            known = ", ".join([*sorted(self.aliases), "latest"])
            hint = (
                "the first release sets it: `fct gate --bootstrap --promote --candidate "
                f"{self.family}@latest`"
                if ref.alias == fct_tags.PRODUCTION_ALIAS
                else f"name a version instead, e.g. {self.family}@{max(self.nodes)}"
            )
            raise UnknownVersionError(
                f"{self.family} has no alias {ref.alias!r}; known aliases: {known}; {hint}"
            )
        version = self.aliases[ref.alias]
        if version not in self.nodes:
            raise UnknownVersionError(
                f"alias {self.family}@{ref.alias} points at version {version}, which is not a "
                f"usable embedding version; known: {self.known_versions()}"
            )
        return version

    def stored_as(self, version: int) -> int:
        """The pipeline version whose stored embeddings (``outputs/embeddings/v<n>``) are this
        registry version's: its ``fct.pipeline_key`` tag, else the same number."""
        key = self.nodes[version].pipeline_key if version in self.nodes else None
        return int(key) if key is not None and key.isdigit() else version

    # --- adjacency, cached per side-info extractor --------------------------------------------
    def extractors(self) -> list[str]:
        """Every side-info extractor read by some edge."""
        return sorted({e.side_info for e in (*self.edges, *self.chains) if e.side_info})

    def out_edges(self, side_info: str | None) -> dict[int, list[TransformEdge]]:
        """Edges and recorded chains usable on a gallery indexed with ``side_info``, by source.

        ``side_info=None`` keeps only edges that read no side-info.
        """
        key = ("out", side_info)
        if key not in self._cache:
            adj: dict[int, list[TransformEdge]] = {}
            for e in (*self.edges, *self.chains):
                if e.side_info is None or e.side_info == side_info:
                    adj.setdefault(e.source, []).append(e)
            self._cache[key] = adj
        return self._cache[key]

    def reachable(self, source: int, side_info: str | None) -> list[int]:
        """Versions a gallery of ``source`` can be upgraded to (breadth-first, any score)."""
        adj, seen, frontier = self.out_edges(side_info), {source}, [source]
        while frontier:
            nxt = []
            for v in frontier:
                for e in adj.get(v, ()):
                    if e.target not in seen:
                        seen.add(e.target)
                        nxt.append(e.target)
            frontier = nxt
        seen.discard(source)
        return sorted(seen)


MEASURE_HINT = (
    "measure it with the evaluate stage and record the numbers with their run through "
    "`fct register` (`dvc repro evaluate register`)"
)
"""How a transformation of the pipeline gets its measured top-1."""


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _edge(
    model: str,
    version: int,
    tags: Mapping[str, str],
    hops: tuple[int, ...],
    notes: list[str],
    unmeasured: dict[int, UnmeasuredEdge] | None = None,
) -> TransformEdge | None:
    source, target = (
        _int_or_none(tags.get(fct_tags.SOURCE)),
        _int_or_none(tags.get(fct_tags.TARGET)),
    )
    if source is None or target is None:
        notes.append(
            f"{model}/{version} skipped: no integer {fct_tags.SOURCE}/{fct_tags.TARGET} tags"
        )
        return None
    if source == target:
        notes.append(
            f"{model}/{version} skipped: {fct_tags.SOURCE} == {fct_tags.TARGET} == {source}"
        )
        return None
    top1 = _float(tags.get(fct_tags.TOP1))
    why = None
    if top1 is None or not 0.0 <= top1 <= 100.0:
        why = f"no measured {fct_tags.TOP1} in [0, 100] (got {tags.get(fct_tags.TOP1)!r})"
    elif not tags.get(fct_tags.MEASURED_RUN):
        why = (
            f"{fct_tags.TOP1}={tags[fct_tags.TOP1]} carries no {fct_tags.MEASURED_RUN} (the "
            "evaluation run that measured it): set by hand, not a measurement"
        )
    if why is not None:
        notes.append(f"{model}/{version} ({source}->{target}) skipped: {why}; {MEASURE_HINT}")
        if unmeasured is not None:
            reads = (
                None
                if tags.get(fct_tags.KIND) == "fct-no-side-info"
                else tags.get(fct_tags.SIDE_INFO)
            )
            unmeasured[version] = UnmeasuredEdge(version, source, target, reads or None, why)
        return None
    kind = tags.get(fct_tags.KIND) or None
    side_info = tags.get(fct_tags.SIDE_INFO) or None
    if kind == "fct-no-side-info":
        side_info = None
    return TransformEdge(
        model_version=version,
        source=source,
        target=target,
        side_info=side_info,
        top1=top1,
        hops=hops,
        kind=kind,
        top5=_float(tags.get(fct_tags.TOP5)),
        mAP=_float(tags.get(fct_tags.MAP)),
    )


def _chain(
    model: str,
    version: int,
    tags: Mapping[str, str],
    singles: Mapping[int, TransformEdge],
    notes: list[str],
) -> TransformEdge | None:
    raw = tags.get(fct_tags.HOPS, "")
    try:
        hops = tuple(int(h) for h in raw.split(",") if h.strip())
    except ValueError:
        notes.append(f"{model}/{version} (chain) skipped: unreadable {fct_tags.HOPS}={raw!r}")
        return None
    missing = [h for h in hops if h not in singles]
    if len(hops) < 2 or missing:
        why = f"unusable transformations {missing}" if missing else "fewer than 2 hops"
        notes.append(f"{model}/{version} (chain {raw}) skipped: {why}")
        return None
    steps = [singles[h] for h in hops]
    if any(a.target != b.source for a, b in itertools.pairwise(steps)):
        notes.append(f"{model}/{version} (chain {raw}) skipped: its hops do not connect")
        return None
    reads = {s.side_info for s in steps} - {None}
    if len(reads) > 1:
        notes.append(f"{model}/{version} (chain {raw}) skipped: hops mix side-info {sorted(reads)}")
        return None
    edge = _edge(model, version, tags, hops, notes)
    if edge is None:
        return None
    if (edge.source, edge.target) != (steps[0].source, steps[-1].target):
        notes.append(
            f"{model}/{version} (chain {raw}) skipped: tags say {edge.source}->{edge.target} but "
            f"its hops go {steps[0].source}->{steps[-1].target}"
        )
        return None
    # A chain reads whatever its hops read; its own tag, if any, must agree.
    side_info = next(iter(reads), None)
    if edge.side_info not in (None, side_info):
        notes.append(
            f"{model}/{version} (chain {raw}) skipped: tagged "
            f"{fct_tags.SIDE_INFO}={edge.side_info} but its hops read {side_info}"
        )
        return None
    return TransformEdge(
        model_version=edge.model_version,
        source=edge.source,
        target=edge.target,
        side_info=side_info,
        top1=edge.top1,
        hops=hops,
        kind=fct_tags.ROLE_CHAIN,
        top5=edge.top5,
        mAP=edge.mAP,
    )
