"""The streaming indexing job behind ``fct embed``: any image source in, a gallery out.

Shard ``k`` of the gallery holds the items at positions ``[k * shard_rows, (k + 1) * shard_rows)``
of the source's stable listing (fewer rows when bad images are skipped). Layout while the job
runs, as for ``fct upgrade`` (:mod:`fct_registry.upgrade.job`)::

    _fct_embed.lease                     held for the whole run: a second run fails at once,
                                         naming the holder (:mod:`fct_registry.jobs.lease`)
    _fct_embed/job.json                  fingerprint of the job, written first (removed again
                                         when the run fails before finishing any shard)
    _fct_embed/part-00000.parquet.json   one marker per finished shard: its checksums, the
                                         sha256 of the ids it read, the items it skipped
    part-00000.parquet, ...              published atomically, one at a time
    skipped.jsonl                        (``on_bad_image=skip``) every item left out, and why
    manifest.json                        written last; then _fct_embed/ is removed

After a crash or ``kill -9``, rerunning the same command lists the source again, skips each
shard whose marker matches (same job, same ids, output bytes intact) and redoes the rest;
batches and row groups fall on the same boundaries, so the gallery is byte-identical to an
uninterrupted run's. Memory is bounded by the DataLoader's prefetch plus one row group,
whatever the collection's size; images are decoded in DataLoader workers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from fct_registry import __version__
from fct_registry.data.base_image_source import ImageSource, Item
from fct_registry.data.decode import ImageTransform
from fct_registry.data.loader import BadImagePolicy, Skipped, check_policy, stream_batches
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.embed_resume import (
    FILES,
    JOB_FILE,
    LEASE,
    SKIPPED_REPORT,
    Hashing,
    count_items,
    digest_ids,
    done_marker,
    forget_unfinished,
    inspect,
    output_intact,
    relist,
)
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.manifest import MANIFEST, Manifest, ShardInfo
from fct_registry.gallery.shards import regroup, shard_name, write_shard
from fct_registry.gallery.writer import DEFAULT_ROW_GROUP_ROWS, DEFAULT_SHARD_ROWS
from fct_registry.jobs import Stopwatch, batch_hook, json_bytes, progress_bar
from fct_registry.jobs import reached as _reached  # the points of fct_registry.jobs.faults
from fct_registry.jobs.lease import lease
from fct_registry.storage import Storage
from fct_registry.training.embed import embed_images, embed_rows


class StoredEmbeddings(Protocol):
    """Embeddings a gallery already holds, by the row number its items carry: a job that adds
    side-info to a gallery (:mod:`fct_registry.gallery.side_info`) copies them instead of running
    the backbone again. Picklable, like the rest of a :class:`ShardJob`."""

    key: str  # pins the rows in the job's fingerprint (e.g. the gallery's manifest sha256)
    dim: int

    def take(self, rows: Sequence[int]) -> np.ndarray: ...


@dataclass(frozen=True)
class EmbedModels:
    """The models a gallery is indexed with; ``key`` pins them in the job's fingerprint (e.g.
    the registry URIs of immutable versions). ``stored`` instead of ``model``: the embedding
    of each row is copied from there (only side-info is computed from the images).
    ``side_info_transform``: the pixels the side-info extractor reads when they are not the
    version's (its own resize or crop); each image is then decoded once for each."""

    family: str
    version: int
    model: nn.Module | None
    side_info_model: nn.Module | None
    side_info_ref: str | None
    key: str
    stored: StoredEmbeddings | None = None
    side_info_transform: ImageTransform | None = None

    def __post_init__(self) -> None:
        if (self.side_info_model is None) != (self.side_info_ref is None):
            raise GalleryError("pass both side_info_model and side_info_ref, or neither")
        if (self.model is None) == (self.stored is None):
            raise GalleryError("pass either model or stored embeddings, not both or neither")
        if self.side_info_transform is not None and self.side_info_model is None:
            raise GalleryError("side_info_transform without a side-info model")


@dataclass
class EmbedReport:
    source: str
    destination: str
    items: int = 0  # listed (and not limited away)
    rows: int = 0  # written
    skipped: list[Skipped] = field(default_factory=list)
    shards: int = 0
    resumed_shards: int = 0  # finished by an earlier, interrupted run
    already_complete: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    manifest: Manifest | None = None
    fingerprint: str = ""
    skipped_report: str | None = None

    @property
    def images_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


class WriteOptions(TypedDict, total=False):
    """How :func:`embed_source` writes, passed through by the commands that build its models
    (``fct embed``, ``fct gallery add-side-info``); defaults as in its signature."""

    device: torch.device | str
    batch_size: int
    num_workers: int
    shard_rows: int
    on_bad_image: BadImagePolicy
    progress: bool


ShardRunner = Callable[
    ["ShardJob", Storage, list[tuple[int, str, list[Item]]]], Iterable[tuple[int, "ShardDone"]]
]
"""Runs ``(index, shard name, items)`` s elsewhere, yielding each shard's result as it ends."""


def fingerprint(
    source: ImageSource,
    transform: ImageTransform,
    models: EmbedModels,
    settings: dict[str, Any],
) -> str:
    payload = {
        "source": source.describe(),
        "transform": transform.record(),
        "models": _models_record(models),
        "settings": settings,
    }
    return hashlib.sha256(json_bytes(payload)).hexdigest()  # as written: resumes stay valid


def embed_source(
    source: ImageSource,
    storage: Storage,
    models: EmbedModels,
    transform: ImageTransform,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    num_workers: int = 2,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    on_bad_image: BadImagePolicy = "fail",
    limit: int | None = None,
    progress: bool = False,
    runner: ShardRunner | None = None,
) -> EmbedReport:
    """Index every item of ``source`` into ``storage`` (see the module docstring).

    ``runner``: runs the shards still to do elsewhere (``upgrade.engines.ray_embed``: Ray
    Data actors), each with :func:`embed_shard` as here; default: one after another in this
    process. The outputs are the same files either way, and a run interrupted under one resumes
    under the other.

    Rerunning after an interruption finishes the job; rerunning after success does nothing.
    Under ``on_bad_image="fail"`` the first bad image stops the job with its error (finished
    shards are kept for the rerun); under ``skip`` bad images are left out and listed in
    ``skipped.jsonl``.
    """
    check_policy(on_bad_image)
    clock = Stopwatch()
    settings = {
        "batch_size": batch_size,
        "shard_rows": shard_rows,
        "row_group_rows": row_group_rows,
        "on_bad_image": on_bad_image,
        "limit": limit,
    }
    for name in ("batch_size", "shard_rows", "row_group_rows"):
        if settings[name] < 1:
            raise GalleryError(f"{name} must be positive, got {settings[name]}")
    key = fingerprint(source, transform, models, settings)
    report = EmbedReport(source.uri, storage.uri, fingerprint=key)
    with lease(storage, LEASE, "`fct embed`"):  # one run per --out; released however it ends
        markers = inspect(storage, key)
        _reached("inspected")
        if markers is None:
            manifest = Manifest.from_json(storage.read_bytes(MANIFEST), storage.uri)
            report.already_complete, report.manifest = True, manifest
            report.rows, report.shards = manifest.rows, len(manifest.shards)
            report.items = int((manifest.provenance or {}).get("source", {}).get("items", 0))
            FILES.clean(storage)
            return report
        storage.remove_temporaries()  # only ours and dead writers'; we hold the lease anyway
        fresh = JOB_FILE not in markers
        if fresh:
            FILES.write_job(storage, {"fingerprint": key, "source": source.uri})
        try:
            _run(
                source, storage, models, transform, settings, key, markers, report,
                device, num_workers, progress, runner,
            )  # fmt: skip
        except BaseException:
            if fresh:
                forget_unfinished(storage)
            raise
    report.seconds, report.cpu_seconds = clock.read()
    return report


def _run(
    source: ImageSource,
    storage: Storage,
    models: EmbedModels,
    transform: ImageTransform,
    settings: dict[str, Any],
    key: str,
    markers: set[str],
    report: EmbedReport,
    device: torch.device | str,
    num_workers: int,
    progress: bool,
    runner: ShardRunner | None,
) -> None:
    """The job proper, under the destination's lease: shards, then the manifest."""
    batch_size, shard_rows = settings["batch_size"], settings["shard_rows"]
    row_group_rows, on_bad_image = settings["row_group_rows"], settings["on_bad_image"]
    limit = settings["limit"]
    dev = torch.device(device)
    schema = _schema(models, transform, source.has_labels, dev)
    listing = relist(source, 0, limit)
    finished: dict[int, ShardDone] = {}
    pending: list[tuple[int, str, list[Item]]] = []
    shard_job = ShardJob(
        source, models, transform, schema, key, str(dev), batch_size, num_workers, on_bad_image,
        row_group_rows,
    )  # fmt: skip
    bar = progress_bar(
        progress,
        desc=f"embed {models.family}@{models.version}",
        total=count_items(source, limit) if progress else None,  # for the ETA
        unit="img",
        smoothing=0.1,
    )
    try:
        for index in itertools.count():
            first = next(listing, None)
            if first is None:
                break
            chunk = itertools.chain([first], itertools.islice(listing, shard_rows - 1))
            name = shard_name(index)
            done = done_marker(storage, markers, name, key)
            if done is not None:
                ids_sha, n = digest_ids(chunk)
                if ids_sha == done["ids_sha256"] and output_intact(storage, done.get("output")):
                    report.resumed_shards += 1
                    output = done["output"]
                    finished[index] = ShardDone(
                        n,
                        [Skipped(**s) for s in done["skipped"]],
                        None if output is None else ShardInfo.from_dict(output),
                    )
                    bar.update(n)
                    continue
                # The source changed under this shard: list it again and redo it.
                listing = relist(source, index * shard_rows, limit)
                chunk = itertools.islice(listing, shard_rows)
            if runner is not None:  # another engine runs the shard: hand it the references
                pending.append((index, name, [item.without_data() for item in chunk]))
                continue
            finished[index] = embed_shard(shard_job, storage, index, name, chunk, bar)
            skips = sum(len(d.skipped) for d in finished.values())
            bar.set_postfix_str(f"shards {index + 1}, skipped {skips}")
        if pending and runner is not None:
            for index, result in runner(shard_job, storage, pending):
                finished[index] = result
                bar.update(result.items)
    finally:
        bar.close()
    outputs: list[ShardInfo] = []
    for index in sorted(finished):  # shard order, whichever finished first
        report.items += finished[index].items
        report.skipped += finished[index].skipped
        if finished[index].output is not None:
            outputs.append(finished[index].output)

    if not outputs:
        raise GalleryError(
            f"no image of {source.uri} could be used ({len(report.skipped)} skipped: "
            f"{report.skipped[0].reason if report.skipped else 'none listed'}); nothing was "
            "written as a gallery"
        )
    if report.skipped:
        lines = [json.dumps(s.to_dict(), sort_keys=True) for s in report.skipped]
        storage.write_bytes(SKIPPED_REPORT, ("\n".join(lines) + "\n").encode())
        report.skipped_report = f"{storage.uri.rstrip('/')}/{SKIPPED_REPORT}"
    manifest = Manifest(
        models.family,
        tuple(outputs),
        provenance=_provenance(key, source, transform, models, settings, report)
        | {"engine": getattr(runner, "name", "local")},
    )
    storage.write_bytes(MANIFEST, manifest.to_json())
    _reached("manifest")
    FILES.clean(storage)
    report.manifest, report.rows, report.shards = manifest, manifest.rows, len(outputs)


@dataclass(frozen=True)
class ShardJob:
    """What indexing one shard needs besides its items: picklable, so an engine can ship it
    to other processes (``upgrade.engines.ray_embed``)."""

    source: ImageSource
    models: EmbedModels
    transform: ImageTransform
    schema: pa.Schema
    key: str
    device: str
    batch_size: int
    num_workers: int
    on_bad_image: BadImagePolicy
    row_group_rows: int


@dataclass
class ShardDone:
    items: int
    skipped: list[Skipped]
    output: ShardInfo | None


def embed_shard(
    job: ShardJob,
    storage: Storage,
    index: int,
    name: str,
    items: Iterable[Item],
    bar: Any = None,
) -> ShardDone:
    """Index ``items`` into shard ``name`` and write its marker (the unit of resume)."""
    dev = torch.device(job.device)
    bar = bar if bar is not None else progress_bar(False)
    hashed = Hashing(items)
    skipped: list[Skipped] = []
    batches = stream_batches(
        job.source,
        job.transform,
        items=hashed,
        batch_size=job.batch_size,
        num_workers=job.num_workers,
        on_bad_image=job.on_bad_image,
        pin_memory=dev.type == "cuda",
        side_transform=job.models.side_info_transform,
    )
    labels = job.source.has_labels
    rows = _rows(batches, job.models, dev, job.batch_size, labels, skipped, bar)
    groups = regroup(rows, job.schema, job.row_group_rows)
    on_batch = batch_hook(index, _reached)
    info: ShardInfo | None = write_shard(storage, name, job.schema, groups, on_batch)
    assert info is not None
    if info.rows == 0:  # every item of the shard was skipped: no empty file
        storage.delete(name)
        info = None
    marker = {
        "fingerprint": job.key,
        "ids_sha256": hashed.digest.hexdigest(),
        "items": hashed.count,
        "output": None if info is None else info.to_dict(),
        "skipped": [s.to_dict() for s in skipped],
    }
    FILES.commit(storage, name, index, marker, _reached)
    return ShardDone(hashed.count, skipped, info)


# --- the rows of one shard ---------------------------------------------------------------------


def _rows(
    batches: Iterable[Any],
    models: EmbedModels,
    device: torch.device,
    batch_size: int,
    labels: bool,
    skipped: list[Skipped],
    bar: Any,
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        skipped += batch.bad
        bar.update(len(batch) + len(batch.bad))
        if not len(batch):
            continue
        emb = (
            models.stored.take(batch.rows)
            if models.model is None
            else embed_rows(models.model, batch.images, device, batch_size)
        )
        side_images = batch.images if batch.side_images is None else batch.side_images
        side = (
            None
            if models.side_info_model is None
            else embed_rows(models.side_info_model, side_images, device, batch_size)
        )
        label_array = None
        if labels:
            missing = [i for i, label in zip(batch.ids, batch.labels, strict=True) if label is None]
            if missing:
                raise GalleryError(
                    f"item {missing[0]!r} has no label while others do; give every item a "
                    "label (or none)"
                )
            label_array = np.asarray(batch.labels, dtype=np.int64)
        yield gallery_schema.make_batch(
            batch.ids,
            emb,
            model_version=models.version,
            side_info=side,
            side_info_version=models.side_info_ref,
            labels=label_array,
            source_uris=batch.uris,
        )


def _schema(
    models: EmbedModels, transform: ImageTransform, labels: bool, device: torch.device
) -> pa.Schema:
    """The gallery's schema: widths from one forward pass on a blank image."""
    blank = torch.zeros((1, *transform.shape), dtype=torch.uint8)
    dim = (
        int(embed_images(models.model, blank, device).shape[1])
        if models.model is not None
        else models.stored.dim
    )
    side_shape = (models.side_info_transform or transform).shape
    side = (
        None
        if models.side_info_model is None
        else int(
            embed_images(
                models.side_info_model, torch.zeros((1, *side_shape), dtype=torch.uint8), device
            ).shape[1]
        )
    )
    return gallery_schema.gallery_schema(dim, side, labels=labels, source_uris=True)


def _models_record(models: EmbedModels) -> dict[str, Any]:
    record = {
        "family": models.family,
        "version": models.version,
        "key": models.key,
        "side_info": models.side_info_ref,
    }
    if models.stored is not None:  # only then: earlier galleries' fingerprints stay the same
        record["stored_embeddings"] = models.stored.key
    if models.side_info_transform is not None:  # likewise
        record["side_info_transform"] = models.side_info_transform.record()
    return record


def _provenance(
    key: str,
    source: ImageSource,
    transform: ImageTransform,
    models: EmbedModels,
    settings: dict[str, Any],
    report: EmbedReport,
) -> dict[str, Any]:
    return {
        "fingerprint": key,
        "engine": "local",
        "job": "embed",
        "source": {**source.describe(), "items": report.items},
        "transform": transform.record(),
        "models": _models_record(models),
        "settings": settings,
        "skipped": len(report.skipped),
        "skipped_report": SKIPPED_REPORT if report.skipped else None,
        "software": {"fct_registry": __version__},
    }
