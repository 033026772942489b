"""Register a version given as embeddings (``source.json`` instead of weights).

Such a version has no model to log: its run holds ``source.json`` (the tables' URIs, sha256 and
width) and its registered version points at that artifact, tagged ``fct.source`` with the same
record, plus every link tag a trained version has (side-info, width, classes, accuracy), so the
resolver, upgrades, the gate and ``fct backfill plan`` treat it like any version. Commands that
would run its model are refused by :func:`refuse_given` with the one-line reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry.errors import FctError
from fct_registry.layout import SOURCE_FILE
from fct_registry.registry import tags as fct_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

ARTIFACT_DIR = "given"
DATASET = "embeddings"  # fct.dataset of a version given as embedding tables


class NoModelError(FctError):
    """A command needs to run a version's model, but the version was given as embeddings."""


def canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def given_digest(record: Mapping[str, Any]) -> str:
    """The content hash of a given model: its kind, width and the tables' sha256 (not their
    paths: the same bytes elsewhere are the same model)."""
    content = {
        "kind": record["kind"],
        "dim": record["dim"],
        "tables": {s: t["sha256"] for s, t in sorted(record["tables"].items())},
    }
    return hashlib.sha256(canonical(content).encode()).hexdigest()


def no_model_message(what: str, source: str | None = None) -> str:
    """The one-line refusal of every command that would run ``what``'s model."""
    given = f" ({_tables(source)})" if source else ""
    return (
        f"{what} was given as embeddings{given}; there is no model to run: compute its "
        "vectors with the encoder that produced the tables, write them as a gallery "
        "(`fct gallery import`), and use `fct upgrade` / `fct search` (see "
        "docs/embeddings-only.md)"
    )


def _tables(source: str) -> str:
    try:
        record = json.loads(source)
        return ", ".join(f"{s}: {t['uri']}" for s, t in sorted(record["tables"].items()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return source[:200]


def given_tags(record: Mapping[str, Any], digest: str) -> dict[str, str]:
    """The version tags a given model adds: its lineage and content hash."""
    lineage = {
        "kind": record["kind"],
        "tables": {
            s: {"uri": t["uri"], "sha256": t["sha256"]} for s, t in record["tables"].items()
        },
    }
    return {
        fct_tags.GIVEN_SOURCE: canonical(lineage),
        fct_tags.CONTENT_HASH: digest,
        fct_tags.DATASET: DATASET,
    }


def register_given(
    client: MlflowClient,
    folder: Path,
    name: str,
    run_id: str,
    *,
    tags: Mapping[str, str],
    description: str | None = None,
) -> ModelVersion:
    """Log ``folder``'s ``source.json`` to run ``run_id`` and register it as a version of
    ``name`` (created by the caller) with ``tags``."""
    client.log_artifact(run_id, str(Path(folder) / SOURCE_FILE), ARTIFACT_DIR)
    return client.create_model_version(
        name,
        source=f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_DIR}",
        run_id=run_id,
        tags=dict(tags),
        description=description,
    )


def refuse_given(what: str, version_tags: Mapping[str, str] | None) -> None:
    """Raise :class:`NoModelError` when the version's tags say it was given as embeddings."""
    if version_tags and fct_tags.GIVEN_SOURCE in version_tags:
        source = version_tags[fct_tags.GIVEN_SOURCE]
        if not _is_external_model(source):  # an external model has a graph to run
            raise NoModelError(no_model_message(what, source))


def _is_external_model(source: str) -> bool:
    try:
        record = json.loads(source)
    except ValueError:
        return False
    return isinstance(record, dict) and "tables" not in record and "sha256" in record


def external_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The version tags an external model adds: its source (kind, original URI, checksum) and
    the preprocessing ``fct embed`` applies by default."""
    lineage = {k: record[k] for k in ("kind", "uri", "sha256")}
    return {
        fct_tags.GIVEN_SOURCE: canonical(lineage),
        fct_tags.PREPROCESS: canonical(record["preprocess"]),
    }
