"""``fct backfill plan``: which items of an upgraded gallery to re-embed first, within a budget.

Candidates are the rows whose embedding a transformation predicted (a non-null ``uncertainty``)
and that no earlier backfill re-embedded. Policies (the same as the evaluation's,
:mod:`fct_registry.evaluation.backfill`): ``uncertainty`` (highest predicted log-variance first,
FastFill), ``random`` (a seeded baseline) and ``oracle`` (largest true error first: it embeds
every candidate's image with the new model, so it costs a full backfill and serves only to
measure the other policies). A gallery without an ``uncertainty`` column (upgraded through plain
transformations) has every not-yet-backfilled row as a candidate, for ``random`` and ``oracle``.

The plan is a canonical JSON file: the gallery and the manifest checksum it was made for, the
target version, the policy, the budget and the chosen ids with their scores, highest first.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fct_registry.errors import ConfigError, FctError
from fct_registry.evaluation.backfill import ORDERS, backfill_count, descending, true_error
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.pg.location import is_pg_url, redact
from fct_registry.gallery.reader import Gallery

PLAN_FORMAT = "fct-backfill-plan/1"
EmbedFn = Callable[[list[str]], np.ndarray]
"""``ids -> new-model embeddings [len(ids), d]`` (the oracle policy only)."""


class BackfillPlanError(FctError):
    """The gallery cannot be planned as asked (no candidates, unknown budget, mixed versions)."""


@dataclass(frozen=True)
class Budget:
    """How many rows to backfill: a fraction of the gallery's rows, or a count."""

    fraction: float | None = None
    count: int | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", text)
        if m:
            value = float(m.group(1))
            if not 0 <= value <= 100:
                raise ConfigError(f"budget {text!r}: a percentage must be within 0..100%")
            return cls(fraction=value / 100)
        if re.fullmatch(r"\s*\d+\s*", text):
            return cls(count=int(text))
        raise ConfigError(
            f"budget {text!r} is neither a percentage of the gallery (10%) nor a row count (5000)"
        )

    def rows(self, gallery_rows: int) -> int:
        if self.count is not None:
            return self.count
        return backfill_count(gallery_rows, self.fraction or 0.0)

    def __str__(self) -> str:
        return f"{self.count}" if self.count is not None else f"{100 * (self.fraction or 0):g}%"


@dataclass(frozen=True)
class BackfillPlan:
    gallery: str
    manifest_sha256: str
    family: str
    target: int
    policy: str
    budget: str
    candidates: int
    ids: tuple[str, ...]
    scores: tuple[float, ...]
    images: str | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, *, with_location: bool = True) -> bytes:
        payload = {
            "format": PLAN_FORMAT,
            "gallery": self.gallery if with_location else None,
            "manifest_sha256": self.manifest_sha256,
            "family": self.family,
            "target": self.target,
            "policy": self.policy,
            "budget": self.budget,
            "seed": self.seed,
            "candidates": self.candidates,
            "images": self.images,
            "items": [{"id": i, "score": s} for i, s in zip(self.ids, self.scores, strict=True)],
            **self.extra,
        }
        return (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode()

    @property
    def sha256(self) -> str:
        """The plan's identity: its content without the gallery's location, so the same plan
        applied to a copy of the gallery (same manifest bytes) is the same job."""
        return hashlib.sha256(self.to_json(with_location=False)).hexdigest()

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(self.to_json())
        tmp.replace(path)

    @classmethod
    def read(cls, path: str | Path) -> BackfillPlan:
        path = Path(path)
        try:
            raw = json.loads(path.read_bytes())
            if raw.get("format") != PLAN_FORMAT:
                raise ValueError(f"format {raw.get('format')!r} is not {PLAN_FORMAT!r}")
            known = {
                "format", "gallery", "manifest_sha256", "family", "target", "policy",
                "budget", "seed", "candidates", "images", "items",
            }  # fmt: skip
            return cls(
                gallery=str(raw["gallery"]),
                manifest_sha256=str(raw["manifest_sha256"]),
                family=str(raw["family"]),
                target=int(raw["target"]),
                policy=str(raw["policy"]),
                budget=str(raw["budget"]),
                candidates=int(raw["candidates"]),
                ids=tuple(str(i["id"]) for i in raw["items"]),
                scores=tuple(float(i["score"]) for i in raw["items"]),
                images=raw.get("images"),
                seed=int(raw.get("seed", 0)),
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except FileNotFoundError:
            raise BackfillPlanError(
                f"{path} not found; write a plan with `fct backfill plan`"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BackfillPlanError(
                f"{path} is not a backfill plan ({exc}); write one with `fct backfill plan`"
            ) from None


def open_gallery(location: str) -> Gallery:
    """The Parquet gallery (folder or ``s3://``) to plan; a ``postgresql://`` gallery is refused
    with the commands that copy it out and back (backfills rewrite Parquet shards)."""
    if is_pg_url(location):
        raise BackfillPlanError(
            f"{redact(location)} is a pgvector gallery, and backfills rewrite Parquet galleries: "
            "copy it out with `fct gallery copy URL galleries/to-backfill`, plan and run the "
            "backfill on galleries/to-backfill, then serve the result with `fct gallery copy "
            "galleries/to-backfill URL` (a new table and a view swap; URL: this gallery's)"
        )
    return Gallery.open(location)


@dataclass(frozen=True)
class Candidates:
    ids: list[str]
    uncertainty: np.ndarray | None  # float32 [n] log-variance, None: no uncertainty column
    rows: int  # every row of the gallery
    target: int


def candidates(gallery: Gallery) -> Candidates:
    """Rows a backfill may re-embed, streamed (only ids and two small columns are read)."""
    versions = gallery.manifest.versions
    if len(versions) != 1:
        raise BackfillPlanError(
            f"{gallery.uri} mixes versions {sorted(versions)}; upgrade it to one version with "
            "`fct upgrade` first, then backfill that gallery"
        )
    (target,) = versions
    ids: list[str] = []
    scores: list[np.ndarray] = []
    has_uncertainty = None
    for info in gallery.manifest.shards:
        with gallery.shard(info) as reader:
            names = reader.schema.names
            has = gallery_schema.UNCERTAINTY in names
            if has_uncertainty is None:
                has_uncertainty = has
            cols = [gallery_schema.ID] + [
                c for c in (gallery_schema.UNCERTAINTY, gallery_schema.BACKFILLED) if c in names
            ]
            for batch in reader.batches(65_536, cols):
                keep = np.ones(batch.num_rows, dtype=bool)
                if gallery_schema.BACKFILLED in names:
                    done = batch.column(gallery_schema.BACKFILLED).fill_null(False)
                    keep &= ~done.to_numpy(zero_copy_only=False)
                unc = None
                if has:
                    col = batch.column(gallery_schema.UNCERTAINTY)
                    keep &= ~col.is_null().to_numpy(zero_copy_only=False)
                    unc = col.fill_null(0.0).to_numpy(zero_copy_only=False)
                batch_ids = batch.column(gallery_schema.ID).to_pylist()
                ids.extend(i for i, k in zip(batch_ids, keep, strict=True) if k)
                if unc is not None and has_uncertainty:
                    scores.append(np.asarray(unc, dtype=np.float32)[keep])
    uncertainty = np.concatenate(scores) if has_uncertainty and scores else None
    return Candidates(ids, uncertainty, gallery.manifest.rows, int(target))


def make_plan(
    gallery: Gallery,
    budget: Budget,
    policy: str = "uncertainty",
    *,
    seed: int = 0,
    images: str | None = None,
    embed: EmbedFn | None = None,
    transformed: Callable[[list[str]], np.ndarray] | None = None,
) -> BackfillPlan:
    """Order the candidates by ``policy`` and keep the first ``budget`` of them.

    ``oracle`` needs ``embed`` (new-model embeddings by id) and ``transformed`` (the stored
    embeddings by id). Scores: the log-variance (uncertainty), the true squared error per
    dimension (oracle), or the draw order normalised to (0, 1] (random)."""
    ORDERS.check(policy)
    found = candidates(gallery)
    n = len(found.ids)
    take = min(budget.rows(found.rows), n)
    if n == 0 and budget.rows(found.rows) > 0:
        raise BackfillPlanError(
            f"{gallery.uri} has no row to backfill: every row is either embedded by the model "
            "itself or already backfilled"
        )
    if policy == "uncertainty":
        if found.uncertainty is None:
            raise BackfillPlanError(
                f"{gallery.uri} has no {gallery_schema.UNCERTAINTY} column: it was not upgraded "
                "through an uncertainty-aware transformation (kind fct-uncertainty); upgrade it "
                "through one (`fct upgrade --for-backfill`), or plan with --policy random"
            )
        score = torch.from_numpy(found.uncertainty.astype(np.float64))
    elif policy == "random":
        order = ORDERS.build("random")(n, seed=seed)
        score = torch.empty(n, dtype=torch.float64)
        score[order] = 1.0 - torch.arange(n, dtype=torch.float64) / max(n, 1)
    else:  # oracle
        if embed is None or transformed is None:
            raise BackfillPlanError(
                "the oracle policy embeds every candidate's image with the new model; give "
                "the model and the images (evaluation only)"
            )
        score = true_error(
            torch.from_numpy(transformed(found.ids)), torch.from_numpy(embed(found.ids))
        ).double()
    order = descending(score)[:take].tolist()
    return BackfillPlan(
        gallery=gallery.uri,
        manifest_sha256=gallery.manifest_sha256,
        family=gallery.manifest.family,
        target=found.target,
        policy=policy,
        budget=str(budget),
        candidates=n,
        ids=tuple(found.ids[i] for i in order),
        scores=tuple(float(score[i]) for i in order),
        images=images,
        seed=seed,
    )


def stored_embeddings(gallery: Gallery, ids: list[str]) -> np.ndarray:
    """The gallery's embeddings of ``ids``, in that order (the oracle's transformed side)."""
    wanted = {item: k for k, item in enumerate(ids)}
    out: np.ndarray | None = None
    for batch in gallery.batches(columns=[gallery_schema.ID, gallery_schema.EMBEDDING]):
        emb = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, gallery.uri)
        if out is None:
            out = np.zeros((len(ids), emb.shape[1]), dtype=np.float32)
        for row, item in enumerate(batch.column(gallery_schema.ID).to_pylist()):
            k = wanted.get(item)
            if k is not None:
                out[k] = emb[row]
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def source_uris(gallery: Gallery, ids: list[str]) -> list[str | None]:
    """Each id's ``source_uri`` (``None`` where the gallery has none), in the order of ``ids``."""
    wanted = {item: k for k, item in enumerate(ids)}
    out: list[str | None] = [None] * len(ids)
    for info in gallery.manifest.shards:
        with gallery.shard(info) as reader:
            if gallery_schema.SOURCE_URI not in reader.schema.names:
                continue
            for batch in reader.batches(65_536, [gallery_schema.ID, gallery_schema.SOURCE_URI]):
                uris = batch.column(gallery_schema.SOURCE_URI).to_pylist()
                for item, uri in zip(
                    batch.column(gallery_schema.ID).to_pylist(), uris, strict=True
                ):
                    k = wanted.get(item)
                    if k is not None:
                        out[k] = uri
    return out


__all__ = [
    "BackfillPlan",
    "BackfillPlanError",
    "Budget",
    "Candidates",
    "candidates",
    "make_plan",
    "open_gallery",
    "source_uris",
    "stored_embeddings",
]
