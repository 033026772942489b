"""A chain of transformations as one registered model: load its hops, record its measurement.

Recording registers the chain as a ``fct.role=chain`` version of ``<F>-transformations`` with
``fct.hops`` and the measured tags, so the next ``fct resolve`` compares measurements, not
estimates. A chain is itself a model (one ``TransformationChain`` module, one MLflow model, one
fused ONNX graph). Measuring a chain end to end is the resolver's job
(:func:`fct_registry.resolver.chain.evaluate_chain`); this module only stores what was measured.

Loading and logging go through :mod:`fct_registry.registry.flavor`, which uses MLflow's current
tracking and registry URIs (see :mod:`fct_registry.registry.store`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fct_registry.errors import FctError
from fct_registry.evaluation.compatibility import gap_closed
from fct_registry.evaluation.retrieval import RetrievalScores
from fct_registry.models.transformations import TransformationChain
from fct_registry.registry import flavor
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.checksums import canonical_json
from fct_registry.registry.pages import refresh_descriptions
from fct_registry.registry.provenance import git_commit
from fct_registry.registry.summary import RegistrationSummary


@dataclass(frozen=True)
class LoadedChain:
    """The chain's hops as one module, with the specs needed to log it again."""

    family: str
    hops: tuple[int, ...]  # transformation versions
    path: tuple[int, ...]  # family versions visited
    module: TransformationChain
    specs: tuple[dict[str, Any], ...]

    @property
    def old_dim(self) -> int:
        return int(self.specs[0]["old_dim"])

    @property
    def side_info_dim(self) -> int:
        return int(flavor.describe(self.specs)["side_info_dim"])


@dataclass(frozen=True)
class ChainEvaluation:
    """End-to-end accuracy of a chain, percent; ``old_old``/``new_new`` frame the gap it closes."""

    source: int
    target: int
    hops: tuple[int, ...]
    cross: RetrievalScores  # new-version queries vs the upgraded old gallery
    old_old: RetrievalScores
    new_new: RetrievalScores
    items: int
    distance: str

    @property
    def gap_closed_top1(self) -> float:
        return gap_closed(self.cross.top1, self.old_old.top1, self.new_new.top1)

    @property
    def gap_closed_mAP(self) -> float:
        return gap_closed(self.cross.mAP, self.old_old.mAP, self.new_new.mAP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "hops": list(self.hops),
            **self.cross.as_dict(),
            "gap_closed_top1": self.gap_closed_top1,
            "gap_closed_mAP": self.gap_closed_mAP,
            "old_old": self.old_old.as_dict(),
            "new_new": self.new_new.as_dict(),
            "items": self.items,
            "distance": self.distance,
        }


def load_chain(
    family: str, hops: tuple[int, ...], path: tuple[int, ...], dst_dir: Path | None = None
) -> LoadedChain:
    """Download every hop (versions of ``<family>-transformations``, applied in order, visiting
    the family versions ``path``) into one module; checksums are verified by the flavor."""
    model = fct_tags.transformations_model_name(family)
    modules: list[Any] = []
    specs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(dst_dir) if dst_dir is not None else Path(tmp)
        for i, version in enumerate(hops):
            where = root / f"hop-{i}-v{version}"
            where.mkdir(parents=True, exist_ok=True)
            loaded = flavor.load_model(f"models:/{model}/{version}", dst_path=where)
            mlmodel = next(where.rglob("MLmodel"), None)
            if mlmodel is None:  # pragma: no cover - load_model succeeded, so it exists
                raise FctError(f"{model}/{version}: no MLmodel file in its artifacts")
            specs += flavor.flavor_conf(mlmodel.parent)["specs"]
            modules += list(loaded.hops) if isinstance(loaded, TransformationChain) else [loaded]
    return LoadedChain(
        family=family,
        hops=tuple(hops),
        path=tuple(path),
        module=TransformationChain(modules).eval(),
        specs=tuple(specs),
    )


def chain_tags(
    family: str,
    evaluation: ChainEvaluation,
    side_info: str | None,
    loaded: LoadedChain,
    run_id: str | None = None,
) -> dict[str, str]:
    """The version tags of a recorded chain (schema: ``fct_registry.registry.tags``);
    ``run_id``: the run that logged the measurement (``fct.measured_run``)."""
    tags = {
        fct_tags.ROLE: fct_tags.ROLE_CHAIN,
        fct_tags.FAMILY: family,
        fct_tags.SOURCE: str(evaluation.source),
        fct_tags.TARGET: str(evaluation.target),
        fct_tags.HOPS: ",".join(map(str, loaded.hops)),
        fct_tags.SIDE_INFO_DIM: str(loaded.side_info_dim),
        fct_tags.EMBEDDING_DIM: str(loaded.specs[-1]["new_dim"]),
        fct_tags.TOP1: f"{evaluation.cross.top1:.4f}",
        fct_tags.TOP5: f"{evaluation.cross.top5:.4f}",
        fct_tags.MAP: f"{evaluation.cross.mAP:.4f}",
        fct_tags.GAP_CLOSED_TOP1: f"{evaluation.gap_closed_top1:.4f}",
        fct_tags.GAP_CLOSED_MAP: f"{evaluation.gap_closed_mAP:.4f}",
        # Like every version: what it was built from (its hops' specs) and the code's commit.
        fct_tags.KIND: "+".join(str(s.get("type", "?")) for s in loaded.specs),
        fct_tags.PARAMS: canonical_json({"hops": list(loaded.hops), "specs": list(loaded.specs)}),
        fct_tags.GIT_COMMIT: git_commit(),
    }
    if side_info and loaded.side_info_dim:  # hops without side-info fit any gallery: no tag
        tags[fct_tags.SIDE_INFO] = side_info
    if run_id:
        tags[fct_tags.MEASURED_RUN] = run_id
    return tags


_MEASURED = (
    fct_tags.TOP1,
    fct_tags.TOP5,
    fct_tags.MAP,
    fct_tags.GAP_CLOSED_TOP1,
    fct_tags.GAP_CLOSED_MAP,
)


def find_recorded_chain(client: Any, family: str, hops: tuple[int, ...]) -> int | None:
    """The version already recording exactly these hops, if any (recording is idempotent)."""
    model = fct_tags.transformations_model_name(family)
    found = client.search_model_versions(
        filter_string=(
            f"name = {fct_tags.quoted(model)} AND tags.`{fct_tags.ROLE}` = '{fct_tags.ROLE_CHAIN}' "
            f"AND tags.`{fct_tags.HOPS}` = '{','.join(map(str, hops))}'"
        ),
        max_results=10,
    )
    versions = sorted(int(v.version) for v in found)
    return versions[0] if versions else None


def record_chain(
    client: Any,
    loaded: LoadedChain,
    evaluation: ChainEvaluation,
    side_info: str | None,
) -> tuple[int, bool]:
    """Register the chain as a ``fct.role=chain`` version; ``(version, created)``.

    If these hops are already recorded, that version's measured tags are updated instead of
    registering a duplicate (left alone when they already hold this measurement). Each new
    measurement is logged in a run that the tags name (``fct.measured_run``).
    """
    import mlflow  # heavy: only when a chain is recorded

    if evaluation.hops != loaded.hops:
        raise FctError(
            f"the evaluation is of hops {evaluation.hops} but the chain is {loaded.hops}; "
            "evaluate the chain you record"
        )
    family = loaded.family
    model = fct_tags.transformations_model_name(family)
    existing = find_recorded_chain(client, family, loaded.hops)
    if existing is not None:
        current = client.get_model_version(model, str(existing)).tags
        fresh = chain_tags(family, evaluation, side_info, loaded)
        if current.get(fct_tags.MEASURED_RUN) and all(
            current.get(k) == fresh[k] for k in _MEASURED
        ):
            return existing, False  # the same measurement, already recorded with its run
    route = "->".join(map(str, loaded.path))
    mlflow.set_experiment(fct_tags.experiment_name(family))
    # Every measurement gets its run (the metrics), which the version's tags then name.
    with mlflow.start_run(run_name=f"chain-{route}") as run:
        mlflow.log_metrics(
            {
                "top1": evaluation.cross.top1,
                "top5": evaluation.cross.top5,
                "mAP": evaluation.cross.mAP,
            }
        )
        tags = chain_tags(family, evaluation, side_info, loaded, run.info.run_id)
        if existing is not None:
            for key, value in tags.items():
                client.set_model_version_tag(model, str(existing), key, value)
            refresh_descriptions(client, family)
            return existing, False
        info = flavor.log_model(
            loaded.module,
            name=f"{model}-chain-{'-'.join(map(str, loaded.path))}",
            specs=list(loaded.specs),
            tags=tags,
        )
    description = (
        f"Chain {route} of {family} (transformations {', '.join(map(str, loaded.hops))}), "
        f"measured end to end: top-1 {evaluation.cross.top1:.2f}%, mAP "
        f"{evaluation.cross.mAP:.2f}%."
    )
    version = flavor.register_logged_model(
        info, model, tags=tags, description=description, client=client
    )
    refresh_descriptions(client, family)  # its own page, and the link tables of its ends
    return int(version.version), True


def record_pipeline_chains(
    client: Any, summary: RegistrationSummary, report: dict[str, Any]
) -> list[int]:
    """Record every multi-hop chain that the ``evaluate`` stage measured end to end.

    ``summary`` is the :class:`~fct_registry.registry.register.RegistrationSummary` of the same
    run (it maps params keys to registry versions) and ``report`` the stage's ``metrics.json``.
    Without this the resolver could only *estimate* a chain right after ``dvc repro``.
    Idempotent: an already recorded chain gets its measured tags refreshed.
    """

    def scores(d: dict[str, Any]) -> RetrievalScores:
        return RetrievalScores(top1=d["top1"], top5=d["top5"], mAP=d["mAP"])

    embeddings, transforms = summary.embeddings, summary.transformations
    side_info = fct_tags.model_ref(summary.side_info.model, summary.side_info.version)
    recorded = []
    for case in report.get("chains", {}).values():
        if any(name not in transforms for name in case["hops"]):
            continue  # a hop that was not registered (e.g. filtered out): nothing to record
        hops = tuple(transforms[name].version for name in case["hops"])
        path = (
            transforms[case["hops"][0]].source,
            *(transforms[name].target for name in case["hops"]),
        )
        loaded = load_chain(summary.family, hops, path)
        evaluation = ChainEvaluation(
            source=path[0],
            target=path[-1],
            hops=hops,
            cross=scores(case),
            old_old=scores(report["self"][embeddings[str(case["from"])].pipeline_key]),
            new_new=scores(report["self"][embeddings[str(case["to"])].pipeline_key]),
            items=0,
            distance="l2",
        )
        version, _ = record_chain(client, loaded, evaluation, side_info)
        recorded.append(version)
    return recorded
