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

Planning what to register is :mod:`.candidates`; the MLflow writes are :mod:`.record`.

Credentials: the store is opened by :mod:`.store`; tracking URIs are redacted (``redact_uri``)
before they reach a summary, a log line or an error; nothing derived from the environment is
written to tags or descriptions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from fct_registry.config import Params
from fct_registry.layout import Layout
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.candidates import BACKFILL_KEY, Candidates, read_evaluation
from fct_registry.registry.chains import record_pipeline_chains
from fct_registry.registry.errors import RegistryError
from fct_registry.registry.experiment import family_experiment
from fct_registry.registry.links import update_links
from fct_registry.registry.lock import LOCK_TIMEOUT_S, registration_lock
from fct_registry.registry.pages import refresh_descriptions
from fct_registry.registry.provenance import git_commit
from fct_registry.registry.record import Registrar
from fct_registry.registry.store import (
    default_artifact_location,
    first_line,
    redact_uri,
    resolve_tracking_uri,
    tracking_store,
)
from fct_registry.registry.summary import RegisteredVersion, RegistrationSummary, write_summary

# write_summary: the DVC entry point imports it from here (pipelines/register.py); BACKFILL_KEY:
# callers name the backfill stage's transformation with it.
__all__ = [
    "BACKFILL_KEY",
    "record_measured_chains",
    "register_all",
    "register_pipeline",
    "write_summary",
]

log = logging.getLogger(__name__)


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
    evaluation = read_evaluation(layout)
    with tracking_store(uri) as client:
        try:
            experiment = family_experiment(
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
        commit = git_commit(root)
        candidates = Candidates(params, layout, evaluation["metrics"], commit)
        registrar = Registrar(
            client, experiment, params.family, commit, lock_timeout, evaluation["table_path"]
        )
        try:
            return _register_all_models(candidates, registrar, safe_uri)
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


def _register_all_models(
    candidates: Candidates, registrar: Registrar, safe_uri: str
) -> RegistrationSummary:
    """The side-info extractor, then every embedding version, then the transformations."""
    p, family = candidates.params, candidates.family
    registrar.ensure_registered_models()
    side = registrar.register(candidates.side_info())
    side_ref = fct_tags.model_ref(side.model, side.version)
    embeddings = {
        str(k): registrar.register(candidates.embedding(k, side_ref)) for k in sorted(p.versions)
    }
    key_map = {k: v.version for k, v in embeddings.items()}
    edges = sorted(p.transformations.items(), key=lambda kv: (kv[1].source, kv[1].target, kv[0]))
    transformations = {}
    for name, cfg in edges:
        source, target = key_map[str(cfg.source)], key_map[str(cfg.target)]
        model = candidates.transformation(name, source, target, side_ref)
        registered = registrar.register(model)
        transformations[name] = RegisteredVersion(
            **{**asdict(registered), "source": source, "target": target}
        )
    backfill = candidates.backfill(key_map, side_ref)
    if backfill is not None and BACKFILL_KEY not in transformations:
        registered = registrar.register(backfill)
        transformations[BACKFILL_KEY] = RegisteredVersion(
            **{
                **asdict(registered),
                "source": int(backfill.identity[fct_tags.SOURCE]),
                "target": int(backfill.identity[fct_tags.TARGET]),
            }
        )
    summary = RegistrationSummary(
        family, safe_uri, candidates.commit, side, embeddings, transformations
    )
    with registration_lock(registrar.client, family, registrar.lock_timeout):
        update_links(registrar.client, summary, registrar.aliases)
    return summary
