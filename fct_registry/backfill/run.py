"""``fct backfill run``: re-embed a plan's items from their images and rewrite their rows in place.

The gallery stays readable throughout, and a crash never leaves it half-backfilled:

1. ``_fct_backfill/job.json`` records the job (plan and model) and which shards it replaces.
2. Each shard holding planned rows is rewritten under a new name (``part-00000.bf-<job>.parquet``)
   with :func:`~fct_registry.gallery.shards.write_shard` (atomic, deterministic); the planned
   rows get the new model's embedding, ``backfilled = true`` and a null ``uncertainty``; every
   other row and column is copied. A marker then records the shard's checksum.
3. ``manifest.json`` is replaced atomically, naming the new shards and recording the backfill in
   its provenance: readers switch from the old snapshot to the new one at once.
4. The replaced shards and the progress files are deleted.

Until step 3, readers see the old manifest and the old, untouched shards. After a crash or
``kill -9`` the same command resumes: finished shards (marker and bytes agree) are skipped, the
rest redone, and the result is byte-identical to an uninterrupted run (writing is deterministic
and the job's fingerprint pins plan, model and batching). Rerunning a finished plan does nothing
(its checksum is in the manifest's provenance), which makes ``run`` idempotent. The first
backfill of a gallery rewrites every shard, so all shards share the schema with ``backfilled``.

One run at a time per gallery: the run holds ``_fct_backfill.lease`` in it
(:mod:`fct_registry.jobs.lease`), so a second ``fct backfill run`` started meanwhile fails at
once naming the holder, and reads the gallery only once it holds the lease.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from fct_registry.backfill.images import ItemImages
from fct_registry.backfill.plan import BackfillPlan, BackfillPlanError
from fct_registry.data.decode import ImageTransform
from fct_registry.errors import DataError, FctError
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.manifest import MANIFEST, Manifest, ShardInfo
from fct_registry.gallery.reader import Gallery
from fct_registry.gallery.shards import write_shard
from fct_registry.jobs import JobFiles, Stopwatch, batch_hook, fingerprint, intact
from fct_registry.jobs import reached as _reached  # the points of fct_registry.jobs.faults
from fct_registry.jobs.lease import lease

PROGRESS_DIR = "_fct_backfill"
FILES = JobFiles(PROGRESS_DIR)
JOB_FILE = FILES.job_file
LEASE = "_fct_backfill.lease"
"""Held for the whole run (:mod:`fct_registry.jobs.lease`), in the gallery it rewrites."""
DEFAULT_BATCH_SIZE = 8192
IMAGE_CHUNK = 512
"""Images decoded and embedded at a time: memory stays bounded however many rows a shard plans."""

EmbedImages = Callable[[torch.Tensor], np.ndarray]
"""uint8 images ``[N, C, H, W]`` -> new-model embeddings float32 ``[N, d]``."""


class BackfillError(FctError):
    """The plan cannot be applied to this gallery (changed since planning, foreign job, ...)."""


@dataclass
class BackfillReport:
    gallery: str
    planned: int
    shards: int  # shards rewritten by this job
    skipped_shards: int = 0  # already rewritten by an earlier, interrupted run
    already_complete: bool = False
    seconds: float = 0.0
    manifest: Manifest | None = None
    fingerprint: str = ""
    replaced: dict[str, str] = field(default_factory=dict)


def job_fingerprint(
    plan: BackfillPlan, model_id: str, batch_size: int, transform: ImageTransform | None = None
) -> str:
    record = transform.record() if transform is not None else None
    return fingerprint([plan.sha256, model_id, batch_size, record])


def new_shard_name(old: str, fingerprint: str) -> str:
    stem = re.sub(r"(\.bf-[0-9a-f]+)?\.parquet$", "", old)
    return f"{stem}.bf-{fingerprint[:12]}.parquet"


def run_backfill(
    plan: BackfillPlan,
    embed: EmbedImages,
    *,
    model_id: str,
    gallery: Gallery | None = None,
    images: str | None = None,
    transform: ImageTransform | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BackfillReport:
    """Apply ``plan`` to its gallery (see the module docstring).

    ``embed`` is the new model (the plan's target version) on uint8 images; ``model_id``
    identifies it (e.g. ``models:/fashion/3`` plus its weights' checksum) and is part of the
    job's fingerprint. Images are found from each row's ``source_uri`` and decoded with
    ``transform`` (the new version's input, as ``fct embed`` does; see
    :mod:`fct_registry.backfill.images`); rows without one read ``images`` (default: the plan's),
    a safetensors file. An image that cannot be read or decoded stops the run before anything
    is published: the error names the item and its URI, and the job's files are removed.
    """
    storage = (gallery or Gallery.open(plan.gallery)).storage
    with lease(storage, LEASE, "`fct backfill run`"):  # one run per gallery at a time
        # Read under the lease: a run that held it before us may have replaced the manifest.
        return _run(plan, embed, model_id, Gallery.open(storage), images, transform, batch_size)


def _run(
    plan: BackfillPlan,
    embed: EmbedImages,
    model_id: str,
    gallery: Gallery,
    images: str | None,
    transform: ImageTransform | None,
    batch_size: int,
) -> BackfillReport:
    clock = Stopwatch()
    storage = gallery.storage
    key = job_fingerprint(plan, model_id, batch_size, transform)
    report = BackfillReport(gallery.uri, len(plan.ids), 0, fingerprint=key)

    done_before = [
        b
        for b in (gallery.manifest.provenance or {}).get("backfills", [])
        if b.get("fingerprint") == key
    ]
    if done_before:  # finished earlier (maybe killed while deleting the replaced shards)
        _clean(storage, gallery.manifest, FILES.read_job(storage))
        report.already_complete, report.manifest = True, gallery.manifest
        report.replaced = dict(done_before[-1].get("replaced", {}))
        return report
    if gallery.manifest_sha256 != plan.manifest_sha256:
        raise BackfillError(
            f"{gallery.uri} changed since the plan was made (manifest sha256 "
            f"{gallery.manifest_sha256[:12]}…, plan made for {plan.manifest_sha256[:12]}…); "
            "write a new plan with `fct backfill plan`"
        )
    versions = gallery.manifest.versions
    if list(versions) != [plan.target]:
        raise BackfillError(
            f"{gallery.uri} holds versions {sorted(versions)}, but the plan re-embeds with "
            f"{plan.family}@{plan.target}; plan the gallery again"
        )
    images_of = ItemImages(transform, images or plan.images)

    job = FILES.read_job(storage)
    if job is not None and job.get("fingerprint") != key:
        raise BackfillError(
            f"{gallery.uri} holds an interrupted backfill of another plan or model "
            f"(plan {str(job.get('plan_sha256'))[:12]}…); rerun that plan to finish it, or "
            f"delete {gallery.uri}/{PROGRESS_DIR} to abandon it (the gallery is unchanged)"
        )
    rows_of, uris = _locate(gallery, plan)
    try:  # every planned row can at least be looked up, before anything is written
        images_of.check(list(uris), list(uris.values()))
    except DataError as exc:
        raise BackfillError(f"{exc}") from None
    untyped = _shards_without_backfilled_column(gallery)
    touched = [s for s in gallery.manifest.shards if rows_of.get(s.path) or untyped]
    replaced = {s.path: new_shard_name(s.path, key) for s in touched}
    if job is None:
        FILES.write_job(
            storage,
            {
                "fingerprint": key,
                "plan_sha256": plan.sha256,
                "manifest_sha256": gallery.manifest_sha256,
                "replaced": replaced,
            },
        )

    outputs: dict[str, ShardInfo] = {}
    for index, shard in enumerate(gallery.manifest.shards):
        if shard.path not in replaced:
            outputs[shard.path] = shard
            continue
        name = replaced[shard.path]
        marker = FILES.marked(storage, name, key, source_sha256=shard.sha256)
        if marker is not None and intact(storage, name, marker["output"]["sha256"]):
            outputs[shard.path] = ShardInfo.from_dict(marker["output"])
            report.skipped_shards += 1
            continue
        rows = rows_of.get(shard.path, {})
        ids = sorted(rows, key=rows.__getitem__)  # shard row order: deterministic batches
        try:
            vectors = _embed(embed, images_of, ids, uris, shard.embedding_dim) if ids else None
        except DataError as exc:  # a missing or bad image: leave the gallery as it was
            _abandon(storage, gallery.manifest, replaced)
            raise BackfillError(
                f"{exc}. Nothing was published: {gallery.uri} is unchanged and this "
                "backfill's files were removed; fix the image (or plan without the item) and "
                "run again"
            ) from None
        new_rows = {item: k for k, item in enumerate(ids)}
        with gallery.shard(shard) as reader:
            schema = _output_schema(reader.schema)
            batches = (
                _rewrite(batch, schema, new_rows, vectors) for batch in reader.batches(batch_size)
            )
            info = write_shard(storage, name, schema, batches, batch_hook(index, _reached))
        marker = {"fingerprint": key, "source_sha256": shard.sha256, "output": info.to_dict()}
        FILES.commit(storage, name, index, marker, _reached)
        outputs[shard.path] = info
        report.shards += 1

    provenance = dict(gallery.manifest.provenance or {})
    provenance["backfills"] = [
        *provenance.get("backfills", []),
        {
            "fingerprint": key,
            "plan_sha256": plan.sha256,
            "policy": plan.policy,
            "budget": plan.budget,
            "rows": len(plan.ids),
            "model": model_id,
            "source_manifest_sha256": gallery.manifest_sha256,
            "replaced": replaced,
        },
    ]
    manifest = Manifest(
        gallery.manifest.family,
        tuple(
            _renamed(outputs[s.path], replaced.get(s.path, s.path)) for s in gallery.manifest.shards
        ),
        provenance=provenance,
    )
    storage.write_bytes(MANIFEST, manifest.to_json())
    _reached("manifest")
    _clean(storage, manifest, {"replaced": replaced})
    report.manifest, report.replaced = manifest, replaced
    report.seconds = clock.read()[0]
    return report


def _renamed(info: ShardInfo, name: str) -> ShardInfo:
    return info if info.path == name else ShardInfo.from_dict(info.to_dict() | {"path": name})


def _locate(
    gallery: Gallery, plan: BackfillPlan
) -> tuple[dict[str, dict[str, int]], dict[str, str | None]]:
    """``(shard path -> {planned id: row in shard}, planned id -> its source_uri or None)``;
    every planned id must be a row of the gallery."""
    wanted = set(plan.ids)
    found: dict[str, dict[str, int]] = {}
    uris: dict[str, str | None] = {}
    for info in gallery.manifest.shards:
        with gallery.shard(info) as reader:
            offset = 0
            cols = [gallery_schema.ID] + (
                [gallery_schema.SOURCE_URI]
                if gallery_schema.SOURCE_URI in reader.schema.names
                else []
            )
            for batch in reader.batches(65_536, cols):
                ids = batch.column(gallery_schema.ID).to_pylist()
                sources = (
                    batch.column(gallery_schema.SOURCE_URI).to_pylist()
                    if gallery_schema.SOURCE_URI in batch.schema.names
                    else [None] * len(ids)
                )
                for row, (item, uri) in enumerate(zip(ids, sources, strict=True)):
                    if item in wanted:
                        found.setdefault(info.path, {})[item] = offset + row
                        uris[item] = uri
                offset += batch.num_rows
    missing = wanted - set(uris)
    if missing:
        raise BackfillPlanError(
            f"{len(missing)} planned id(s) are not in {gallery.uri} (e.g. "
            f"{sorted(missing)[0]!r}); the plan is for another gallery: plan this one"
        )
    return found, uris


def _shards_without_backfilled_column(gallery: Gallery) -> bool:
    for info in gallery.manifest.shards:
        with gallery.shard(info, verify=False) as reader:
            if gallery_schema.BACKFILLED not in reader.schema.names:
                return True
    return False


def _output_schema(schema: pa.Schema) -> pa.Schema:
    out = schema.remove_metadata()
    if gallery_schema.BACKFILLED not in out.names:
        out = out.append(gallery_schema.backfilled_field())
    return out


def _embed(
    embed: EmbedImages, reader: ItemImages, ids: list[str], uris: dict[str, str | None], dim: int
) -> np.ndarray:
    """New-model embeddings of ``ids``, :data:`IMAGE_CHUNK` images at a time."""
    parts = []
    for lo in range(0, len(ids), IMAGE_CHUNK):
        chunk = ids[lo : lo + IMAGE_CHUNK]
        images = reader.load(chunk, [uris[i] for i in chunk])
        parts.append(np.ascontiguousarray(embed(images), dtype=np.float32))
    vectors = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    if vectors.shape != (len(ids), dim):
        raise BackfillError(
            f"the new model gave {list(vectors.shape)} embeddings for {len(ids)} images, but "
            f"the gallery stores {dim}-d vectors; re-embed with the plan's target version"
        )
    if not np.isfinite(vectors).all():
        raise BackfillError("the new model produced NaN or inf embeddings; check the model")
    return vectors


def _rewrite(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    new_rows: dict[str, int],
    vectors: np.ndarray | None,
) -> pa.RecordBatch:
    """The batch with planned rows re-embedded and marked; other rows copied."""
    n = batch.num_rows
    ids = batch.column(gallery_schema.ID).to_pylist()
    take = np.array([new_rows.get(i, -1) for i in ids], dtype=np.int64)
    hit = take >= 0
    columns = {name: batch.column(name) for name in batch.schema.names}
    if hit.any():
        assert vectors is not None
        emb = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "backfill").copy()
        emb[hit] = vectors[take[hit]]
        columns[gallery_schema.EMBEDDING] = gallery_schema.vectors_array(emb)
        if gallery_schema.UNCERTAINTY in columns:
            old = columns[gallery_schema.UNCERTAINTY].cast(pa.float32())
            mask = old.is_null().to_numpy(zero_copy_only=False) | hit
            values = old.fill_null(0.0).to_numpy(zero_copy_only=False)
            columns[gallery_schema.UNCERTAINTY] = pa.array(values, pa.float32(), mask=mask)
    before = (
        batch.column(gallery_schema.BACKFILLED).fill_null(False).to_numpy(zero_copy_only=False)
        if gallery_schema.BACKFILLED in columns
        else np.zeros(n, dtype=bool)
    )
    columns[gallery_schema.BACKFILLED] = pa.array(before | hit, pa.bool_())
    return pa.RecordBatch.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)


def _clean(storage: Any, manifest: Manifest, job: dict[str, Any] | None) -> None:
    """Delete replaced shards no longer in ``manifest``, then the progress files."""
    live = {s.path for s in manifest.shards}
    for old in (job or {}).get("replaced", {}):
        if old not in live:
            storage.delete(old)
    FILES.clean(storage)
    storage.remove_temporaries()  # partial files of a killed run (their names are per process)


def _abandon(storage: Any, manifest: Manifest, replaced: dict[str, str]) -> None:
    """Remove an unpublished job's shards and progress files (the gallery is untouched)."""
    live = {s.path for s in manifest.shards}
    for name in replaced.values():
        if name not in live:
            storage.delete(name)
    _clean(storage, manifest, None)
