"""The MLflow writes of a registration: the family's experiment and registered models, then per
:class:`~.candidates.Candidate` a version that is found by content hash or created once (run,
LoggedModel in the ``fct`` flavor, version), under the locks of :mod:`.lock`."""

from __future__ import annotations

import contextlib
import csv
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry.layout import read_given, read_source
from fct_registry.models.io import load_model as load_hop
from fct_registry.registry import flavor
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.candidates import Candidate
from fct_registry.registry.checksums import canonical_json, content_hash
from fct_registry.registry.given import external_tags, given_digest, given_tags, register_given
from fct_registry.registry.lock import Lock, registration_lock
from fct_registry.registry.query import find_version
from fct_registry.registry.summary import RegisteredVersion

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: canonical_json(value) if isinstance(value, list) else str(value)}


_METRIC_TAGS = {
    "top1": fct_tags.TOP1,
    "top5": fct_tags.TOP5,
    "mAP": fct_tags.MAP,
    "gap_closed_top1": fct_tags.GAP_CLOSED_TOP1,
    "gap_closed_mAP": fct_tags.GAP_CLOSED_MAP,
}


class Registrar:
    """Registers :class:`~.candidates.Candidate` models of one family into ``client``."""

    def __init__(
        self,
        client: MlflowClient,
        experiment: str,
        family: str,
        commit: str,
        lock_timeout: float,
        table_path: Path | None,
    ) -> None:
        self.client, self.experiment, self.family = client, experiment, family
        self.commit, self.lock_timeout, self.table_path = commit, lock_timeout, table_path
        self.aliases: dict[tuple[str, int], set[str]] = {}  # aliases each version already has

    def register(self, model: Candidate) -> RegisteredVersion:
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
        self.aliases[(model.name, version)] = set(getattr(existing, "aliases", None) or [])
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

    def _create(self, model: Candidate, digest: str, lock: Lock) -> tuple[ModelVersion, bool]:
        import mlflow

        with mlflow.start_run(
            experiment_id=self.experiment,
            run_name=model.run_name,
            nested=mlflow.active_run() is not None,
        ) as run:
            lock.record_run(run.info.run_id)  # failed by whoever takes over if this one dies
            mlflow.set_tags(
                {
                    fct_tags.ROLE: model.role,
                    fct_tags.FAMILY: self.family,
                    fct_tags.PIPELINE_KEY: model.key,
                    fct_tags.CONTENT_HASH: digest,
                    fct_tags.GIT_COMMIT: self.commit,
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
            extra = {fct_tags.ONNX_MAX_ABS_DIFF: f"{conf['onnx_max_abs_diff']:.3g}"}
            external = read_source(model.folder)  # an external model: its lineage
            if external is not None:
                extra.update(external_tags(external))
        else:
            extra = given_tags(given, digest)
        tags = {**model.tags, **extra, **self._metric_tags(model)}
        if model.metrics:  # the run above logged them: their provenance
            tags[fct_tags.MEASURED_RUN] = run.info.run_id
        with registration_lock(self.client, self.family, self.lock_timeout):
            raced = find_version(self.client, model.name, digest, model.identity)
            if raced is not None:  # another process registered the same content meanwhile
                self.client.set_tag(
                    run.info.run_id,
                    "fct.duplicate_of",
                    fct_tags.model_ref(model.name, raced.version),
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

    def _metric_tags(self, model: Candidate) -> dict[str, str]:
        return {_METRIC_TAGS[k]: f"{v:.4f}" for k, v in model.metrics.items() if k in _METRIC_TAGS}

    def _refresh_metric_tags(
        self, model: Candidate, version: int, current: Mapping[str, str]
    ) -> None:
        """Evaluation can change without the model changing (e.g. the distance): keep the
        version's accuracy tags equal to the latest evaluation, each new measurement logged in
        a run of its own that the tags name (``fct.measured_run``; also added to versions
        registered before the tag existed)."""
        wanted = self._metric_tags(model)
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not changed and (not wanted or current.get(fct_tags.MEASURED_RUN)):
            return
        run_id = self._measurement_run(model, version)
        for key, value in {**changed, fct_tags.MEASURED_RUN: run_id}.items():
            self.client.set_model_version_tag(model.name, str(version), key, value)

    def _measurement_run(self, model: Candidate, version: int) -> str:
        """A run holding the evaluation's numbers for an already registered version."""
        run = self.client.create_run(
            self.experiment,
            run_name=f"evaluation of {model.name}/{version}",
            tags={
                fct_tags.ROLE: model.role,
                fct_tags.FAMILY: self.family,
                fct_tags.PIPELINE_KEY: model.key,
                fct_tags.GIT_COMMIT: self.commit,
            },
        )
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"eval.{k}", v, now, 0) for k, v in model.metrics.items()]
        self.client.log_batch(run.info.run_id, metrics=metrics)
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def ensure_registered_models(self) -> None:
        from mlflow.exceptions import MlflowException

        family = self.family
        about = {
            family: (
                fct_tags.ROLE_EMBEDDING,
                f"Embedding-model versions of the `{family}` family. "
                f"Version N here is {family}@N; each version links its side-info "
                "extractor and the transformations into and out of it (fct.* tags).",
            ),
            fct_tags.side_info_model_name(family): (
                fct_tags.ROLE_SIDE_INFO,
                f"Side-info extractors of the `{family}` family, read by FCT transformations.",
            ),
            fct_tags.transformations_model_name(family): (
                fct_tags.ROLE_TRANSFORMATION,
                f"FCT transformations between versions of `{family}`: "
                "fct.from / fct.to hold the family versions they connect; load one with "
                "mlflow.pyfunc.load_model and predict({old_embedding, side_info}).",
            ),
        }
        for name, (role, text) in about.items():
            try:
                self.client.create_registered_model(
                    name, tags={fct_tags.FAMILY: family, fct_tags.ROLE: role}, description=text
                )
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
