"""Register a pipeline's models in the MLflow Model Registry: idempotent, linked, concurrent-safe.

:func:`register_pipeline` is the one library function behind the DVC ``register`` stage and
``fct register``. For a family ``F`` (naming in :mod:`.tags`) it registers, in this order:

1. the side-info extractor as a version of ``F-side-info``;
2. each embedding version, in ascending ``params.yaml`` key order, as a version of ``F``;
3. each transformation as a version of ``F-transformations``, tagged with the MLflow versions of
   its two ends (``fct.from`` / ``fct.to``) and of the side-info extractor it reads; then the
   backfill stage's uncertainty-aware transformation (params key ``backfill``, kind
   ``fct-uncertainty``), when that stage trained one.

A model whose content hash (:func:`~.checksums.content_hash`) is already registered maps to that
version, so rerunning on unchanged outputs creates nothing. A new model gets an MLflow run
(params, metrics, per-epoch history, the compatibility table) and a LoggedModel in the ``fct``
flavor, then a version. Finally the links that depend on other versions (transformations into
and out of each embedding version, descriptions, ``pipeline-<key>`` aliases) are recomputed from
the registry itself (:mod:`.links`).

Concurrency: creating versions and rewriting links happen under a per-family lock
(:mod:`.lock`: a registered model that exists only while held, since creating one is atomic in
every MLflow backend), so processes registering at once neither duplicate a content hash nor
lose a link. The slow part (ONNX export, artifact upload) runs under a per-content claim (the
same kind of lock, keyed by the content hash), so different models are logged in parallel and
the same model only once: no duplicate runs or logged models are left behind.

Credentials: the store is opened by :mod:`.store`; tracking URIs are redacted (``redact_uri``)
before they reach a summary, a log line or an error; nothing derived from the environment is
written to tags or descriptions.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry.config import Params
from fct_registry.errors import DataError
from fct_registry.evaluation.compatibility import gap_closed
from fct_registry.layout import Layout, read_given, read_source
from fct_registry.models.io import WEIGHTS_FILE, load_spec
from fct_registry.models.io import load_model as load_hop
from fct_registry.models.transformations import uses_side_info
from fct_registry.models.uncertainty import KIND as UNCERTAINTY_KIND
from fct_registry.registry import flavor
from fct_registry.registry import tags as T
from fct_registry.registry.chains import record_pipeline_chains
from fct_registry.registry.checksums import canonical_json, content_hash, sha256_file
from fct_registry.registry.errors import RegistryError
from fct_registry.registry.given import external_tags, given_digest, given_tags, register_given
from fct_registry.registry.links import update_links
from fct_registry.registry.lock import LOCK_TIMEOUT_S, Lock, registration_lock
from fct_registry.registry.pages import refresh_descriptions
from fct_registry.registry.provenance import git_commit
from fct_registry.registry.query import find_version
from fct_registry.registry.store import (
    default_artifact_location,
    first_line,
    redact_uri,
    resolve_tracking_uri,
    tracking_store,
)
from fct_registry.registry.summary import RegisteredVersion, RegistrationSummary, write_summary

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# write_summary: the DVC entry point imports it from here (pipelines/register.py).
__all__ = ["record_measured_chains", "register_all", "register_pipeline", "write_summary"]

log = logging.getLogger(__name__)

BACKFILL_KEY = "backfill"
"""The params key (``fct.pipeline_key``) of the backfill stage's registered transformation."""


def register_pipeline(
    params: Params,
    layout: Layout,
    tracking_uri: str | None = None,
    *,
    root: str | Path | None = None,
    artifact_location: str | None = None,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> RegistrationSummary:
    """Register the side-info extractor, every embedding version and every transformation that
    ``params`` declares and ``layout`` holds (see the module docstring).

    ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``
    with artifacts in ``<root>/mlartifacts``; ``root`` (default: the working directory) is also
    where ``git rev-parse HEAD`` runs. ``artifact_location`` applies only when the family's
    experiment is created. Idempotent: unchanged models map to their existing versions.
    """
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri, root)
    safe_uri = redact_uri(uri)
    evaluation = _read_evaluation(layout)
    with tracking_store(uri) as client:
        try:
            experiment = _ensure_experiment(
                client,
                params.family,
                artifact_location or default_artifact_location(uri, params.family),
            )
        except Exception as exc:
            raise RegistryError(
                f"cannot use the tracking store {safe_uri} "
                f"({redact_uri(first_line(exc))}); start it or pass "
                "--tracking-uri / set MLFLOW_TRACKING_URI"
            ) from None
        log.info("registering %s into %s", params.family, safe_uri)
        registrar = _Registrar(
            client, experiment, params, layout, evaluation, git_commit(root), lock_timeout
        )
        try:
            return registrar.run(safe_uri)
        except MlflowException as exc:  # its text may carry the URI; the chain would too
            raise RegistryError(
                f"the tracking store {safe_uri} refused the registration "
                f"({redact_uri(first_line(exc))}); fix the store or its "
                "permissions and rerun (registered versions are kept)"
            ) from None


def register_all(
    params: Params,
    layout: Layout,
    tracking_uri: str | None = None,
    *,
    root: str | Path | None = None,
) -> tuple[RegistrationSummary, list[int]]:
    """The one registration that ``fct register`` and the DVC ``register`` stage both run: every
    model (:func:`register_pipeline`), then the chains the evaluate stage measured
    (:func:`record_measured_chains`); returns the summary and the chain versions."""
    summary = register_pipeline(params, layout, tracking_uri, root=root)
    return summary, record_measured_chains(summary, layout, tracking_uri, root=root)


def record_measured_chains(
    summary: RegistrationSummary,
    layout: Layout,
    tracking_uri: str | None = None,
    *,
    root: str | Path | None = None,
) -> list[int]:
    """Record the chains the ``evaluate`` stage measured end to end (``fct.role=chain``), so that
    ``fct resolve`` compares measurements, not estimates, right after ``dvc repro``."""
    report = json.loads((layout.evaluation / "metrics.json").read_text())
    with (
        tracking_store(tracking_uri, root=root) as client,
        registration_lock(client, summary.family),
    ):
        recorded = record_pipeline_chains(client, summary, report)
        refresh_descriptions(client, summary.family)
        return recorded


def _ensure_experiment(client: MlflowClient, family: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    name = T.experiment_name(family)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags={T.FAMILY: family}
        )
    except MlflowException as exc:  # created concurrently by another registration
        found = client.get_experiment_by_name(name)
        if found is None:
            raise exc from None
        return found.experiment_id


def _read_evaluation(layout: Layout) -> dict[str, Any]:
    path = layout.evaluation / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path} not found; run the evaluate stage first (`dvc repro evaluate`)")
    table = layout.evaluation / "compatibility.md"
    return {
        "metrics": json.loads(path.read_text()),
        "table": table.read_text() if table.is_file() else None,
        "table_path": table if table.is_file() else None,
    }


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: canonical_json(value) if isinstance(value, list) else str(value)}


_METRIC_TAGS = {
    "top1": T.TOP1,
    "top5": T.TOP5,
    "mAP": T.MAP,
    "gap_closed_top1": T.GAP_CLOSED_TOP1,
    "gap_closed_mAP": T.GAP_CLOSED_MAP,
}


@dataclass
class _Model:
    """What the registrar needs to know about one pipeline output."""

    role: str
    name: str  # registered model
    key: str  # params.yaml key
    folder: Path
    run_name: str
    trained_from: dict[str, Any]  # params sections, logged and tagged
    metrics: dict[str, float]
    history: Path
    tags: dict[str, str]  # fixed at creation
    identity: dict[str, str] = field(default_factory=dict)  # link tags that are part of "same"


class _Registrar:
    def __init__(
        self,
        client: MlflowClient,
        experiment: str,
        params: Params,
        layout: Layout,
        evaluation: dict[str, Any],
        commit: str,
        lock_timeout: float,
    ) -> None:
        self.client, self.experiment, self.params, self.layout = client, experiment, params, layout
        self.metrics = evaluation["metrics"]
        self.table, self.table_path = evaluation["table"], evaluation["table_path"]
        self.commit, self.lock_timeout = commit, lock_timeout
        self.family = params.family
        self._aliases: dict[tuple[str, int], set[str]] = {}  # aliases each version already has
        train = layout.data / "train.safetensors"
        if not train.is_file():
            raise DataError(f"{train} not found; run the pipeline first (`dvc repro`)")
        self.data_sha = sha256_file(train)
        info_path = layout.data / "info.json"
        self.class_names = (
            json.loads(info_path.read_text()).get("classes", []) if info_path.is_file() else []
        )

    # -- orchestration --------------------------------------------------------------------------

    def run(self, safe_uri: str) -> RegistrationSummary:
        p, family = self.params, self.family
        self._ensure_registered_models()
        side = self._register(self._side_info_model())
        side_ref = T.model_ref(side.model, side.version)
        embeddings = {
            str(k): self._register(self._embedding_model(k, side_ref)) for k in sorted(p.versions)
        }
        key_map = {k: v.version for k, v in embeddings.items()}
        edges = sorted(
            p.transformations.items(), key=lambda kv: (kv[1].source, kv[1].target, kv[0])
        )
        transformations = {}
        for name, cfg in edges:
            source, target = key_map[str(cfg.source)], key_map[str(cfg.target)]
            model = self._transformation_model(name, source, target, side_ref)
            registered = self._register(model)
            transformations[name] = RegisteredVersion(
                **{**asdict(registered), "source": source, "target": target}
            )
        backfill = self._backfill_model(key_map, side_ref)
        if backfill is not None and BACKFILL_KEY not in transformations:
            registered = self._register(backfill)
            transformations[BACKFILL_KEY] = RegisteredVersion(
                **{
                    **asdict(registered),
                    "source": int(backfill.identity[T.SOURCE]),
                    "target": int(backfill.identity[T.TARGET]),
                }
            )
        summary = RegistrationSummary(
            family, safe_uri, self.commit, side, embeddings, transformations
        )
        with registration_lock(self.client, family, self.lock_timeout):
            update_links(self.client, summary, self._aliases)
        return summary

    # -- the three kinds of model ----------------------------------------------------------------

    def _common_tags(self, role: str, key: str, trained_from: dict[str, Any]) -> dict[str, str]:
        return {
            T.ROLE: role,
            T.FAMILY: self.family,
            T.PIPELINE_KEY: key,
            T.GIT_COMMIT: self.commit,
            T.DATASET: self.params.data.dataset,
            T.DATA_SHA256: self.data_sha,
            T.PARAMS: canonical_json(trained_from),
        }

    def _trained_from(self, section: str, config: Any) -> dict[str, Any]:
        return {
            "family": self.family,
            "seed": self.params.seed,
            "data": self.params.data.model_dump(mode="json"),
            section: config.model_dump(mode="json", by_alias=True),
        }

    def _side_info_model(self) -> _Model:
        cfg = self.params.side_info
        trained_from = self._trained_from("side_info", cfg)
        tags = self._common_tags(T.ROLE_SIDE_INFO, cfg.name, trained_from)
        tags[T.EMBEDDING_DIM] = str(cfg.dim)
        tags[T.TRAINED_WITH] = "all" if cfg.trained_with is None else str(cfg.trained_with)
        return _Model(
            T.ROLE_SIDE_INFO,
            T.side_info_model_name(self.family),
            cfg.name,
            self.layout.side_info,
            f"{self.family} side-info ({cfg.name})",
            trained_from,
            {},
            self.layout.history("side_info"),
            tags,
        )

    def _embedding_model(self, key: int, side_ref: str) -> _Model:
        cfg = self.params.versions[key]
        trained_from = self._trained_from(f"versions.{key}", cfg)
        tags = self._common_tags(T.ROLE_EMBEDDING, str(key), trained_from)
        classes = cfg.classes if cfg.classes is not None else list(range(len(self.class_names)))
        tags.update(
            {
                T.EMBEDDING_DIM: str(cfg.embedding_dim),
                T.SIDE_INFO: side_ref,
                T.CLASSES: canonical_json(classes),
            }
        )
        scores = self.metrics.get("self", {}).get(str(key), {})
        return _Model(
            T.ROLE_EMBEDDING,
            self.family,
            str(key),
            self.layout.version(key),
            f"{self.family} embedding (params key {key})",
            trained_from,
            _numbers(scores),
            self.layout.history(f"v{key}"),
            tags,
        )

    def _transformation_model(self, name: str, source: int, target: int, side_ref: str) -> _Model:
        cfg = self.params.transformations[name]
        trained_from = self._trained_from(f"transformations.{name}", cfg)
        tags = self._common_tags(T.ROLE_TRANSFORMATION, name, trained_from)
        tags.update(
            {
                T.SOURCE: str(source),
                T.TARGET: str(target),
                T.KIND: cfg.kind,
                T.EMBEDDING_DIM: str(self.params.versions[cfg.target].embedding_dim),
                T.SIDE_INFO_DIM: str(self.params.side_info.dim if uses_side_info(cfg.kind) else 0),
            }
        )
        if uses_side_info(cfg.kind):
            tags[T.SIDE_INFO] = side_ref
        scores = self.metrics.get("transformations", {}).get(name, {})
        # Same weights between other versions is another transformation: ends are identity.
        return _Model(
            T.ROLE_TRANSFORMATION,
            T.transformations_model_name(self.family),
            name,
            self.layout.transformation(name),
            f"{self.family} transformation {name}",
            trained_from,
            _numbers(scores),
            self.layout.history(f"transform-{name}"),
            tags,
            identity={T.SOURCE: str(source), T.TARGET: str(target)},
        )

    def _backfill_model(self, key_map: dict[str, int], side_ref: str) -> _Model | None:
        """The backfill stage's uncertainty-aware transformation, measured by that stage
        (transform-only retrieval of its seed, as ``evaluate`` scores every transformation);
        None while the stage is off or has not run."""
        cfg = self.params.backfill
        folder = self.layout.backfill_transformation
        if cfg is None or not cfg.enabled or not (folder / WEIGHTS_FILE).is_file():
            return None
        report_path = self.layout.backfill / "metrics.json"
        if not report_path.is_file():
            raise DataError(f"{report_path} not found; run the backfill stage first")
        report = json.loads(report_path.read_text())
        seed = str(load_spec(folder).get("seed"))
        if seed not in report.get("per_seed", {}):
            raise DataError(
                f"{folder} holds the model of seed {seed}, but {report_path} has no such seed; "
                "rerun the backfill stage (`dvc repro backfill`)"
            )
        scores = dict(_numbers(report["per_seed"][seed]["transform_only"]["uncertainty"]))
        own = self.metrics.get("self", {})
        ends = own.get(str(cfg.source), {}), own.get(str(cfg.target), {})
        for m in ("top1", "mAP"):
            if m in scores and m in ends[0] and m in ends[1]:
                scores[f"gap_closed_{m}"] = gap_closed(scores[m], ends[0][m], ends[1][m])
        source, target = key_map[str(cfg.source)], key_map[str(cfg.target)]
        trained_from = self._trained_from("backfill", cfg)
        tags = self._common_tags(T.ROLE_TRANSFORMATION, BACKFILL_KEY, trained_from)
        tags.update(
            {
                T.SOURCE: str(source),
                T.TARGET: str(target),
                T.KIND: UNCERTAINTY_KIND,
                T.EMBEDDING_DIM: str(self.params.versions[cfg.target].embedding_dim),
                T.SIDE_INFO_DIM: str(self.params.side_info.dim),
                T.SIDE_INFO: side_ref,
            }
        )
        return _Model(
            T.ROLE_TRANSFORMATION,
            T.transformations_model_name(self.family),
            BACKFILL_KEY,
            folder,
            f"{self.family} transformation {BACKFILL_KEY} (uncertainty-aware, seed {seed})",
            trained_from,
            scores,
            self.layout.history(f"backfill-uncertainty-s{seed}"),
            tags,
            identity={T.SOURCE: str(source), T.TARGET: str(target)},
        )

    # -- registering one model -------------------------------------------------------------------

    def _register(self, model: _Model) -> RegisteredVersion:
        given = read_given(model.folder)  # given as embeddings: no weights to hash
        if given is None:
            module, spec = load_hop(model.folder)
            digest = content_hash([module], [spec])
        else:
            digest = given_digest(given)
        existing = find_version(self.client, model.name, digest, model.identity)
        created = False
        if existing is None:
            # One process per content logs it: the others wait for its claim and then find the
            # version, instead of logging a duplicate run and model and discarding it.
            claim = f"{digest[:12]}-{'-'.join(model.identity.values())}".strip("-")
            with registration_lock(self.client, self.family, self.lock_timeout, key=claim) as lock:
                existing = find_version(self.client, model.name, digest, model.identity)
                if existing is None:
                    existing, created = self._create(model, digest, lock)
        version = int(existing.version)
        self._aliases[(model.name, version)] = set(getattr(existing, "aliases", None) or [])
        if not created:  # a new version was just tagged from this evaluation, with its run
            self._refresh_metric_tags(model, version, existing.tags)
        log.info(
            "%s %s/%d (params key %s)",
            "registered" if created else "unchanged",
            model.name,
            version,
            model.key,
        )
        return RegisteredVersion(model.name, version, model.key, digest, created)

    def _create(self, model: _Model, digest: str, lock: Lock) -> tuple[ModelVersion, bool]:
        import mlflow

        with mlflow.start_run(
            experiment_id=self.experiment,
            run_name=model.run_name,
            nested=mlflow.active_run() is not None,
        ) as run:
            lock.record_run(run.info.run_id)  # failed by whoever takes over if this one dies
            mlflow.set_tags(
                {
                    T.ROLE: model.role,
                    T.FAMILY: self.family,
                    T.PIPELINE_KEY: model.key,
                    T.CONTENT_HASH: digest,
                    T.GIT_COMMIT: self.commit,
                }
            )
            flat = _flatten("", model.trained_from)
            mlflow.log_params({k[:250]: v[:6000] for k, v in flat.items()})
            if model.metrics:
                mlflow.log_metrics({f"eval.{k}": v for k, v in model.metrics.items()})
            self._log_history(run.info.run_id, model.history)
            if self.table_path is not None:
                mlflow.log_artifact(str(self.table_path), "eval")
            given = read_given(model.folder)
            if given is None:
                info = flavor.log_model(model.folder, name=f"{model.name}-{model.key}")
        if given is None:
            conf = info.flavors[flavor.FLAVOR_NAME]
            extra = {T.ONNX_MAX_ABS_DIFF: f"{conf['onnx_max_abs_diff']:.3g}"}
            external = read_source(model.folder)  # an external model: its lineage
            if external is not None:
                extra.update(external_tags(external))
        else:
            extra = given_tags(given, digest)
        tags = {**model.tags, **extra, **self._metric_tags(model)}
        if model.metrics:  # the run above logged them: their provenance
            tags[T.MEASURED_RUN] = run.info.run_id
        with registration_lock(self.client, self.family, self.lock_timeout):
            raced = find_version(self.client, model.name, digest, model.identity)
            if raced is not None:  # another process registered the same content meanwhile
                self.client.set_tag(
                    run.info.run_id, "fct.duplicate_of", T.model_ref(model.name, raced.version)
                )
                return raced, False
            description = f"{model.run_name}; description pending link update"
            if given is not None:
                version = register_given(
                    self.client,
                    model.folder,
                    model.name,
                    run.info.run_id,
                    tags=tags,
                    description=description,
                )
            else:
                version = flavor.register_logged_model(
                    info, model.name, tags=tags, client=self.client, description=description
                )
        return version, True

    def _log_history(self, run_id: str, path: Path) -> None:
        from mlflow.entities import Metric

        if not path.is_file():
            return
        now = int(time.time() * 1000)
        metrics = []
        with path.open() as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                step = int(float(row.get("epoch") or i + 1))
                for key, value in row.items():
                    if key == "epoch" or value in (None, ""):
                        continue
                    with contextlib.suppress(ValueError):
                        metrics.append(Metric(f"train.{key}", float(value), now, step))
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        self.client.log_artifact(run_id, str(path), "history")

    def _metric_tags(self, model: _Model) -> dict[str, str]:
        return {_METRIC_TAGS[k]: f"{v:.4f}" for k, v in model.metrics.items() if k in _METRIC_TAGS}

    def _refresh_metric_tags(self, model: _Model, version: int, current: Mapping[str, str]) -> None:
        """Evaluation can change without the model changing (e.g. the distance): keep the
        version's accuracy tags equal to the latest evaluation, each new measurement logged in
        a run of its own that the tags name (``fct.measured_run``; also added to versions
        registered before the tag existed)."""
        wanted = self._metric_tags(model)
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not changed and (not wanted or current.get(T.MEASURED_RUN)):
            return
        run_id = self._measurement_run(model, version)
        for key, value in {**changed, T.MEASURED_RUN: run_id}.items():
            self.client.set_model_version_tag(model.name, str(version), key, value)

    def _measurement_run(self, model: _Model, version: int) -> str:
        """A run holding the evaluation's numbers for an already registered version."""
        run = self.client.create_run(
            self.experiment,
            run_name=f"evaluation of {model.name}/{version}",
            tags={
                T.ROLE: model.role,
                T.FAMILY: self.family,
                T.PIPELINE_KEY: model.key,
                T.GIT_COMMIT: self.commit,
            },
        )
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"eval.{k}", v, now, 0) for k, v in model.metrics.items()]
        self.client.log_batch(run.info.run_id, metrics=metrics)
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    # -- links, descriptions and aliases -------------------------------------------------------

    def _ensure_registered_models(self) -> None:
        from mlflow.exceptions import MlflowException

        family = self.family
        about = {
            family: (
                T.ROLE_EMBEDDING,
                f"Embedding-model versions of the `{family}` family. "
                f"Version N here is {family}@N; each version links its side-info "
                "extractor and the transformations into and out of it (fct.* tags).",
            ),
            T.side_info_model_name(family): (
                T.ROLE_SIDE_INFO,
                f"Side-info extractors of the `{family}` family, read by FCT transformations.",
            ),
            T.transformations_model_name(family): (
                T.ROLE_TRANSFORMATION,
                f"FCT transformations between versions of `{family}`: "
                "fct.from / fct.to hold the family versions they connect; load one with "
                "mlflow.pyfunc.load_model and predict({old_embedding, side_info}).",
            ),
        }
        for name, (role, text) in about.items():
            try:
                self.client.create_registered_model(
                    name, tags={T.FAMILY: family, T.ROLE: role}, description=text
                )
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise


def _numbers(scores: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in scores.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }
