"""Backfilling curves as MLflow metrics of the uncertainty-aware transformation's version.

The DVC stage ``backfill`` measures the curves of its recipe (an uncertainty-aware
transformation ``from -> to`` trained once per seed) and writes ``metrics.json``, ``curves.csv``
and ``curves.png``. :func:`log_backfill_metrics` files them under the registered transformation
version they are about, MLflow-natively:

* one run in the family's experiment ``fct-<family>`` (where each registered model has its run),
  tagged with the version (``fct.backfill.version = <name>/<version>``) and the sha256 of the
  ``metrics.json`` it logs;
* metrics ``backfill.auc_<top1|mAP>.<policy>.<mean|std|ci95>`` (area under the curve, percent,
  over seeds, 95% Student-t half-width), the paired ``uncertainty_minus_random`` differences,
  the transform-only scores ``backfill.transform_only_<metric>.<plain|uncertainty>.<...>``, and
  the seed-mean curves as stepped metrics ``backfill.curve_<metric>.<policy>`` (step = percent
  of the gallery backfilled);
* artifacts under ``backfill/``: the three files;
* on the version, tags ``fct.backfill.run`` (the run's id) and ``fct.backfill.summary`` (the
  mean AUCs as compact JSON), so the version page leads to the run.

Which version: ``NAME/VERSION`` when given, else the newest version of ``<family>-transformations``
whose kind predicts uncertainty and whose ends are the stage's ``from``/``to``. A version of
another kind or other ends is refused. The numbers describe the stage's recipe over its seeds,
which may differ from the registered weights (trained by the ``transformations`` stage); the
run records which recipe (``fct.backfill.recipe`` tag, when ``metrics.json`` carries it).
Logging the same ``metrics.json`` for the same version again reuses the run (idempotent).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fct_registry.errors import ConfigError, DataError
from fct_registry.models.uncertainty import kind_predicts_uncertainty
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.errors import RegistryError
from fct_registry.registry.store import (
    default_artifact_location,
    resolve_tracking_uri,
    tracking_store,
)

RUN_TAG = "fct.backfill.run"  # on the version: the run holding its backfilling metrics
SUMMARY_TAG = "fct.backfill.summary"  # on the version: mean AUCs, compact JSON
VERSION_TAG = "fct.backfill.version"  # on the run: <model name>/<version>
METRICS_SHA_TAG = "fct.backfill.metrics_sha256"  # on the run: what it logged
RECIPE_TAG = "fct.backfill.recipe"  # on the run: the stage's transformation recipe, if known
ROLE_BACKFILL = "backfill_evaluation"
CURVE_FILES = ("curves.csv", "curves.png")


@dataclass(frozen=True)
class LoggedBackfill:
    model: str
    version: int
    run_id: str
    experiment_id: str
    created: bool  # False: the same metrics were already logged for this version
    metrics: int  # scalar metrics in the run


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path} not found; run the backfill stage first (`dvc repro backfill`, with "
            "backfill.enabled: true in params.yaml)"
        ) from None
    except ValueError as exc:
        raise DataError(f"{path} is not JSON ({exc}); rerun the backfill stage") from None
    if not isinstance(metrics, dict) or not metrics.get("enabled"):
        raise DataError(
            f"{path} holds no curves (the backfill stage ran disabled); enable it "
            "(backfill.enabled: true) and rerun it"
        )
    for key in ("from", "to", "auc", "per_seed"):
        if key not in metrics:
            raise DataError(f"{path} lacks {key!r}; it is not the backfill stage's metrics.json")
    return metrics


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The summary numbers of ``metrics.json`` as flat MLflow metric names (NaN dropped: a
    single seed has no interval)."""
    out: dict[str, float] = {}

    def put(prefix: str, stats: dict[str, Any]) -> None:
        for stat in ("mean", "std", "ci95"):
            value = stats.get(stat)
            if isinstance(value, int | float) and value == value:  # not NaN
                out[f"{prefix}.{stat}"] = float(value)

    for policy, by_metric in metrics["auc"].items():
        for metric, stats in by_metric.items():
            put(f"backfill.auc_{metric}.{policy}", stats)
    for metric, stats in metrics.get("auc_uncertainty_minus_random", {}).items():
        put(f"backfill.auc_{metric}.uncertainty_minus_random", stats)
    for kind, by_metric in metrics.get("transform_only", {}).items():
        for metric, stats in by_metric.items():
            put(f"backfill.transform_only_{metric}.{kind}", stats)
    for metric, stats in metrics.get("transform_only_uncertainty_minus_plain", {}).items():
        put(f"backfill.transform_only_{metric}.uncertainty_minus_plain", stats)
    out["backfill.seeds"] = float(len(metrics.get("seeds", metrics["per_seed"])))
    return out


def seed_mean_curve(
    metrics: dict[str, Any], policy: str, metric: str
) -> tuple[list[float], list[float]]:
    """``(fractions backfilled, seed-mean values)`` of one policy's curve."""
    seeds = list(metrics["per_seed"].values())
    if policy not in seeds[0]["curves"]:
        raise DataError(
            f"the backfill stage measured no {policy!r} curve (policies: "
            f"{', '.join(seeds[0]['curves'])}); add it to backfill.policies and rerun"
        )
    fractions = [float(f) for f in seeds[0]["curves"][policy]["fractions"]]
    values = [
        sum(s["curves"][policy][metric][i] for s in seeds) / len(seeds)
        for i in range(len(fractions))
    ]
    return fractions, values


def mean_curves(metrics: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``policy -> metric -> [(percent backfilled, seed-mean value)]``."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for policy in next(iter(metrics["per_seed"].values()))["curves"]:
        out[policy] = {}
        for metric in ("top1", "mAP"):
            fractions, values = seed_mean_curve(metrics, policy, metric)
            steps = [round(100 * f) for f in fractions]
            if len(set(steps)) != len(steps):  # finer than 1%: number the points instead
                steps = list(range(len(steps)))
            out[policy][metric] = list(zip(steps, values, strict=True))
    return out


def find_version(client: Any, family: str, source: int, target: int, ref: str | None) -> Any:
    """The transformation version to link: ``ref`` (``NAME/VERSION``) checked, or the newest
    uncertainty-aware ``source -> target`` version of ``<family>-transformations``."""
    name = fct_tags.transformations_model_name(family)
    if ref:
        try:
            name, number = fct_tags.parse_model_ref(ref)
        except ValueError:
            raise ConfigError(
                f"--transformation {ref!r} is not NAME/VERSION (e.g. {name}/4)"
            ) from None
        version = client.get_model_version(name, str(number))
        _check(version, name, source, target)
        return version
    found = [
        v
        for v in client.search_model_versions(f"name = {fct_tags.quoted(name)}")
        if kind_predicts_uncertainty(v.tags.get(fct_tags.KIND, ""))
        and v.tags.get(fct_tags.SOURCE) == str(source)
        and v.tags.get(fct_tags.TARGET) == str(target)
    ]
    if not found:
        raise RegistryError(
            f"{name} has no uncertainty-aware transformation {source} -> {target} (kind "
            "fct-uncertainty) to log the backfilling curves on; register one (a "
            f"`transformations:` entry with from: {source}, to: {target}, kind: fct-uncertainty, "
            "then `dvc repro register`), or name a version with --transformation NAME/VERSION"
        )
    return max(found, key=lambda v: int(v.version))


def _check(version: Any, name: str, source: int, target: int) -> None:
    kind = version.tags.get(fct_tags.KIND, "")
    ends = (version.tags.get(fct_tags.SOURCE), version.tags.get(fct_tags.TARGET))
    if not kind_predicts_uncertainty(kind):
        raise RegistryError(
            f"{name}/{version.version} is a {kind or 'untagged'} transformation, which predicts "
            "no uncertainty; the backfilling curves are about an uncertainty-aware one "
            "(kind fct-uncertainty)"
        )
    if ends != (str(source), str(target)):
        raise RegistryError(
            f"{name}/{version.version} maps {ends[0]} -> {ends[1]}, but the curves were "
            f"measured for {source} -> {target}; name a version with those ends"
        )


def log_backfill_metrics(
    metrics_path: str | Path,
    *,
    family: str,
    transformation: str | None = None,
    tracking_uri: str | None = None,
) -> LoggedBackfill:
    """Log ``metrics_path`` (and the curve files beside it) as a run linked to the version."""
    from mlflow.entities import Metric

    metrics_path = Path(metrics_path)
    metrics = read_metrics(metrics_path)
    digest = hashlib.sha256(metrics_path.read_bytes()).hexdigest()
    source, target = int(metrics["from"]), int(metrics["to"])
    uri = resolve_tracking_uri(tracking_uri)
    with tracking_store(uri) as client:
        version = find_version(client, family, source, target, transformation)
        name, number = version.name, int(version.version)
        ref = fct_tags.model_ref(name, number)
        experiment = _experiment(client, family, default_artifact_location(uri, family))
        scalars = scalar_metrics(metrics)
        existing = client.search_runs(
            [experiment],
            filter_string=(
                f"tags.`{VERSION_TAG}` = {fct_tags.quoted(ref)} and tags.`{METRICS_SHA_TAG}` = "
                f"'{digest}'"
            ),
            max_results=1,
        )
        if existing:
            run_id, created = existing[0].info.run_id, False
        else:
            tags = {
                fct_tags.ROLE: ROLE_BACKFILL,
                fct_tags.FAMILY: family,
                VERSION_TAG: ref,
                METRICS_SHA_TAG: digest,
                fct_tags.SOURCE: str(source),
                fct_tags.TARGET: str(target),
                "mlflow.runName": f"backfill-{name}-{number}",
            }
            if "recipe" in metrics:
                tags[RECIPE_TAG] = json.dumps(metrics["recipe"], sort_keys=True)[:5000]
            run = client.create_run(experiment, tags=tags)
            run_id, created = run.info.run_id, True
            now = _millis()
            batch = [Metric(k, v, now, 0) for k, v in sorted(scalars.items())]
            for policy, by_metric in mean_curves(metrics).items():
                for metric, points in by_metric.items():
                    key = f"backfill.curve_{metric}.{policy}"
                    batch += [Metric(key, value, now, step) for step, value in points]
            for start in range(0, len(batch), 1000):
                client.log_batch(run_id, metrics=batch[start : start + 1000])
            client.log_param(run_id, "backfill.seeds", ",".join(map(str, metrics["per_seed"])))
            client.log_artifact(run_id, str(metrics_path), "backfill")
            for file in CURVE_FILES:
                path = metrics_path.parent / file
                if path.is_file():
                    client.log_artifact(run_id, str(path), "backfill")
            client.set_terminated(run_id)
        summary = {
            f"auc_{m}": {p: round(v[m]["mean"], 4) for p, v in metrics["auc"].items()}
            for m in ("top1", "mAP")
        }
        client.set_model_version_tag(name, str(number), RUN_TAG, run_id)
        client.set_model_version_tag(
            name, str(number), SUMMARY_TAG, json.dumps(summary, sort_keys=True)
        )
    return LoggedBackfill(name, number, run_id, experiment, created, len(scalars))


def _experiment(client: Any, family: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    name = fct_tags.experiment_name(family)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:  # a registry whose models were registered elsewhere: the family's experiment
        return str(
            client.create_experiment(
                name, artifact_location=artifact_location, tags={fct_tags.FAMILY: family}
            )
        )
    except MlflowException:  # created concurrently
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _millis() -> int:
    import time

    return int(time.time() * 1000)
