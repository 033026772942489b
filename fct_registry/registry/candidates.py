"""What a pipeline's outputs are registered as: one :class:`Candidate` per model, planned from
``params.yaml``, the output layout and the evaluation (registered model, params key, tags,
metrics), before anything is written to MLflow (:mod:`.record` writes them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fct_registry.config import Params
from fct_registry.errors import DataError
from fct_registry.evaluation.compatibility import gap_closed
from fct_registry.layout import Layout
from fct_registry.models.io import WEIGHTS_FILE, load_spec
from fct_registry.models.transformations import uses_side_info
from fct_registry.models.uncertainty import KIND as UNCERTAINTY_KIND
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.checksums import canonical_json, sha256_file

BACKFILL_KEY = "backfill"
"""The params key (``fct.pipeline_key``) of the backfill stage's registered transformation."""


def read_evaluation(layout: Layout) -> dict[str, Any]:
    path = layout.evaluation / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path} not found; run the evaluate stage first (`dvc repro evaluate`)")
    table = layout.evaluation / "compatibility.md"
    return {
        "metrics": json.loads(path.read_text()),
        "table": table.read_text() if table.is_file() else None,
        "table_path": table if table.is_file() else None,
    }


@dataclass
class Candidate:
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


class Candidates:
    """Plans the :class:`Candidate` of each model ``params`` declares and ``layout`` holds."""

    def __init__(
        self, params: Params, layout: Layout, metrics: dict[str, Any], commit: str
    ) -> None:
        self.params, self.layout, self.metrics, self.commit = params, layout, metrics, commit
        self.family = params.family
        train = layout.data / "train.safetensors"
        if not train.is_file():
            raise DataError(f"{train} not found; run the pipeline first (`dvc repro`)")
        self.data_sha = sha256_file(train)
        info_path = layout.data / "info.json"
        self.class_names = (
            json.loads(info_path.read_text()).get("classes", []) if info_path.is_file() else []
        )

    def _common_tags(self, role: str, key: str, trained_from: dict[str, Any]) -> dict[str, str]:
        return {
            fct_tags.ROLE: role,
            fct_tags.FAMILY: self.family,
            fct_tags.PIPELINE_KEY: key,
            fct_tags.GIT_COMMIT: self.commit,
            fct_tags.DATASET: self.params.data.dataset,
            fct_tags.DATA_SHA256: self.data_sha,
            fct_tags.PARAMS: canonical_json(trained_from),
        }

    def _trained_from(self, section: str, config: Any) -> dict[str, Any]:
        return {
            "family": self.family,
            "seed": self.params.seed,
            "data": self.params.data.model_dump(mode="json"),
            section: config.model_dump(mode="json", by_alias=True),
        }

    def side_info(self) -> Candidate:
        cfg = self.params.side_info
        trained_from = self._trained_from("side_info", cfg)
        tags = self._common_tags(fct_tags.ROLE_SIDE_INFO, cfg.name, trained_from)
        tags[fct_tags.EMBEDDING_DIM] = str(cfg.dim)
        tags[fct_tags.TRAINED_WITH] = "all" if cfg.trained_with is None else str(cfg.trained_with)
        return Candidate(
            fct_tags.ROLE_SIDE_INFO,
            fct_tags.side_info_model_name(self.family),
            cfg.name,
            self.layout.side_info,
            f"{self.family} side-info ({cfg.name})",
            trained_from,
            {},
            self.layout.history("side_info"),
            tags,
        )

    def embedding(self, key: int, side_ref: str) -> Candidate:
        cfg = self.params.versions[key]
        trained_from = self._trained_from(f"versions.{key}", cfg)
        tags = self._common_tags(fct_tags.ROLE_EMBEDDING, str(key), trained_from)
        classes = cfg.classes if cfg.classes is not None else list(range(len(self.class_names)))
        tags.update(
            {
                fct_tags.EMBEDDING_DIM: str(cfg.embedding_dim),
                fct_tags.SIDE_INFO: side_ref,
                fct_tags.CLASSES: canonical_json(classes),
            }
        )
        scores = self.metrics.get("self", {}).get(str(key), {})
        return Candidate(
            fct_tags.ROLE_EMBEDDING,
            self.family,
            str(key),
            self.layout.version(key),
            f"{self.family} embedding (params key {key})",
            trained_from,
            _numbers(scores),
            self.layout.history(f"v{key}"),
            tags,
        )

    def transformation(self, name: str, source: int, target: int, side_ref: str) -> Candidate:
        cfg = self.params.transformations[name]
        scores = self.metrics.get("transformations", {}).get(name, {})
        return self._edge(
            name,
            cfg.kind,
            cfg.target,
            (source, target),
            side_ref,
            self._trained_from(f"transformations.{name}", cfg),
            self.layout.transformation(name),
            f"{self.family} transformation {name}",
            _numbers(scores),
            self.layout.history(f"transform-{name}"),
        )

    def backfill(self, key_map: dict[str, int], side_ref: str) -> Candidate | None:
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
        return self._edge(
            BACKFILL_KEY,
            UNCERTAINTY_KIND,
            cfg.target,
            (key_map[str(cfg.source)], key_map[str(cfg.target)]),
            side_ref,
            self._trained_from("backfill", cfg),
            folder,
            f"{self.family} transformation {BACKFILL_KEY} (uncertainty-aware, seed {seed})",
            scores,
            self.layout.history(f"backfill-uncertainty-s{seed}"),
        )

    def _edge(
        self,
        key: str,
        kind: str,
        target_key: int,
        ends: tuple[int, int],
        side_ref: str,
        trained_from: dict[str, Any],
        folder: Path,
        run_name: str,
        scores: dict[str, float],
        history: Path,
    ) -> Candidate:
        """A transformation between the registered versions ``ends`` (into params version
        ``target_key``), as every transformation is tagged."""
        source, target = (str(v) for v in ends)
        reads_side_info = uses_side_info(kind)
        tags = self._common_tags(fct_tags.ROLE_TRANSFORMATION, key, trained_from)
        tags.update(
            {
                fct_tags.SOURCE: source,
                fct_tags.TARGET: target,
                fct_tags.KIND: kind,
                fct_tags.EMBEDDING_DIM: str(self.params.versions[target_key].embedding_dim),
                fct_tags.SIDE_INFO_DIM: str(self.params.side_info.dim if reads_side_info else 0),
            }
        )
        if reads_side_info:
            tags[fct_tags.SIDE_INFO] = side_ref
        # Same weights between other versions is another transformation: ends are identity.
        return Candidate(
            fct_tags.ROLE_TRANSFORMATION,
            fct_tags.transformations_model_name(self.family),
            key,
            folder,
            run_name,
            trained_from,
            scores,
            history,
            tags,
            identity={fct_tags.SOURCE: source, fct_tags.TARGET: target},
        )


def _numbers(scores: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in scores.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }
