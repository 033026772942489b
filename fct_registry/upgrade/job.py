"""The streaming upgrade job: shard by shard, atomic, resumable, with provenance.

Layout of the destination while a job runs, and after::

    _fct_upgrade/job.json              the job's fingerprint and plan, written first
    _fct_upgrade/part-00000.parquet.json   one marker per finished shard (its checksums)
    part-00000.parquet, ...            one output shard per source shard, same names
    manifest.json                      written last; then _fct_upgrade/ is removed

Each output shard is published atomically (see :mod:`fct_registry.storage`) and only
then marked done, so after a crash or ``kill -9`` a rerun of the same command skips the shards
whose marker and bytes agree, redoes the rest, and produces the same bytes an uninterrupted run
would (writing is deterministic and the job's fingerprint pins the inputs, chains and batching).
A shard is skipped only if its marker names this job (chains, target, batch size) and the
current sha256 of its source shard, and its output still has the recorded bytes: fixing one bad
source shard and rerunning redoes just that shard. A destination holding anything else is
refused, and the source is only ever read.

Memory is bounded by two batches in flight (one being computed, one being written: rows in,
the chain's activations, rows out), whatever the gallery's size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fct_registry import __version__
from fct_registry.errors import FctError, StorageError
from fct_registry.gallery.errors import GalleryError, ManifestError
from fct_registry.gallery.manifest import MANIFEST, Manifest, ShardInfo
from fct_registry.gallery.reader import Gallery
from fct_registry.gallery.shards import ShardReader, write_shard
from fct_registry.jobs import JobFiles, Stopwatch, batch_hook, intact, progress_bar
from fct_registry.jobs import reached as _reached
from fct_registry.storage import TMP_SUFFIX, Storage
from fct_registry.upgrade.batch import BatchPlan, output_schema, upgrade_batch
from fct_registry.upgrade.lease import LEASE, upgrade_lease
from fct_registry.upgrade.plan import UpgradePlan

T = TypeVar("T")

PROGRESS_DIR = "_fct_upgrade"
FILES = JobFiles(PROGRESS_DIR)
JOB_FILE = FILES.job_file
DEFAULT_BATCH_SIZE = 8192


class DestinationError(StorageError):
    """The output location holds something other than this upgrade."""


class UpgradeIncompleteError(GalleryError):
    """Some shards could not be upgraded (``keep_going``); the others are done and kept."""


@dataclass
class UpgradeReport:
    source: str
    destination: str
    rows: int
    shards: int
    skipped_shards: int = 0  # already done by an earlier, interrupted run
    skipped_rows: int = 0
    already_complete: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    manifest: Manifest | None = None
    fingerprint: str = ""
    failures: list[str] = field(default_factory=list)

    def resume(
        self,
        shard: ShardInfo,
        state: DestinationState,
        dest: Storage,
        outputs: dict[str, ShardInfo],
    ) -> bool:
        """Count ``shard`` as done by an earlier run if its marker's output is intact."""
        done = state.done.get(shard.path)
        if done is None or not intact(dest, done.path, done.sha256):
            return False
        outputs[shard.path] = done
        self.skipped_shards += 1
        self.skipped_rows += shard.rows
        return True

    @property
    def upgraded_rows(self) -> int:
        return self.rows - self.skipped_rows

    @property
    def rows_per_second(self) -> float:
        return self.upgraded_rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class UpgradeJob:
    """One upgrade, as :func:`upgrade_gallery` and every engine receive it."""

    source: Gallery
    dest: Storage
    plan: UpgradePlan
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: bool = False
    keep_going: bool = False  # a bad shard is reported and skipped, the others upgraded


@dataclass(frozen=True)
class DestinationState:
    complete: bool  # manifest.json of this very job over these very source bytes is there
    done: dict[str, ShardInfo]  # shard name -> output info, from markers (not yet verified)
    started: bool  # job.json of this job is there


def inspect_destination(dest: Storage, fingerprint: str, source: Gallery) -> DestinationState:
    """What an earlier run of this job left at ``dest``; refuses anything else."""
    names = [n for n in dest.list() if n != LEASE]  # the lease this run holds
    if not names:
        return DestinationState(False, {}, False)
    if MANIFEST in names:
        try:
            existing = Manifest.from_json(dest.read_bytes(MANIFEST), f"{dest.uri}/{MANIFEST}")
        except ManifestError:
            existing = None
        prov = (existing.provenance or {}) if existing else {}
        if (
            existing is not None
            and prov.get("fingerprint") == fingerprint
            and prov.get("source", {}).get("manifest_sha256") == source.manifest_sha256
        ):
            _verify_finished(dest, existing)
            return DestinationState(True, {}, True)
        raise DestinationError(
            f"{dest.uri} already holds a gallery (its {MANIFEST} is not from "
            "this upgrade of these source bytes: other source, target, chains "
            "or batch size); choose an empty --out, or delete it to redo the "
            "upgrade"
        )
    if JOB_FILE not in names:
        raise DestinationError(
            f"{dest.uri} is not empty ({names[0]}, ...) and holds no upgrade "
            "in progress; choose an empty --out"
        )
    job = FILES.read_job(dest)
    if job is None:
        raise DestinationError(
            f"{dest.uri}/{JOB_FILE} is unreadable (a crash while it was "
            f"written?); delete {dest.uri} and rerun"
        )
    if job.get("fingerprint") != fingerprint:
        raise DestinationError(
            f"{dest.uri} holds an interrupted upgrade of a different job (to "
            f"{job.get('plan', {}).get('family')}@{job.get('plan', {}).get('target')}, from "
            f"{job.get('source')}); rerun that exact command to finish it, or delete "
            f"{dest.uri} to start this one"
        )
    expected = {s.path for s in source.manifest.shards}
    allowed = expected | {FILES.marker(s) for s in expected} | {JOB_FILE}
    foreign = [n for n in names if n not in allowed and not n.endswith(TMP_SUFFIX)]
    if foreign:
        raise DestinationError(
            f"{dest.uri} holds files this upgrade did not write ({foreign[0]}"
            "); move them away or choose an empty --out"
        )
    done: dict[str, ShardInfo] = {}
    for shard in source.manifest.shards:
        if FILES.marker(shard.path) in names:  # torn or stale: redo the shard
            marker = FILES.marked(dest, shard.path, fingerprint, source_sha256=shard.sha256)
            if marker is not None:
                done[shard.path] = ShardInfo.from_dict(marker["output"])
    return DestinationState(False, done, True)


def start_job(job: UpgradeJob) -> tuple[UpgradeReport, DestinationState | None]:
    """What every engine does first, holding the destination's lease (:mod:`.lease`):
    validate, inspect the destination, write the job file.

    Returns the report and the destination's state, or ``None`` when the job is already
    complete (the report then describes the finished output).
    """
    source, dest, plan, batch_size = job.source, job.dest, job.plan, job.batch_size
    if batch_size < 1:
        raise FctError(f"batch size must be positive, got {batch_size}")
    if source.storage.contains(dest) or dest.contains(source.storage):
        raise DestinationError(
            f"the output {dest.uri} overlaps the source {source.uri}; the "
            "source is never written to: choose an --out outside it"
        )
    source.check_usable("the source gallery", skip_unreadable=True)
    fingerprint = plan.fingerprint(batch_size)
    manifest = source.manifest
    report = UpgradeReport(
        source.uri,
        dest.uri,
        manifest.rows,
        len(manifest.shards),
        fingerprint=fingerprint,
    )
    state = inspect_destination(dest, fingerprint, source)
    _reached("inspected")
    dest.remove_temporaries()  # safe: the caller holds the destination's lease
    if state.complete:
        FILES.clean(dest)
        report.already_complete = True
        report.skipped_shards, report.skipped_rows = report.shards, report.rows
        report.manifest = Manifest.from_json(dest.read_bytes(MANIFEST), dest.uri)
        return report, None
    if not state.started:  # the job file: any engine can resume any other's run
        FILES.write_job(
            dest,
            {
                "fingerprint": fingerprint,
                "source": source.uri,
                "plan": plan.record(),
                "batch_size": batch_size,
            },
        )
    return report, state


def _verify_finished(dest: Storage, manifest: Manifest) -> None:
    """A finished gallery is said to need nothing only if every shard has its recorded bytes."""
    damaged = [s.path for s in manifest.shards if not intact(dest, s.path, s.sha256)]
    if damaged:
        raise DestinationError(
            f"{dest.uri} holds this upgrade's {MANIFEST}, but {len(damaged)} of "
            f"{len(manifest.shards)} shards are missing or differ from their checksums "
            f"({', '.join(damaged[:5])}{', ...' if len(damaged) > 5 else ''}); delete "
            f"{dest.uri} and rerun the upgrade"
        )


def upgrade_gallery(
    source: Gallery,
    dest: Storage,
    plan: UpgradePlan,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    keep_going: bool = False,
) -> UpgradeReport:
    """Upgrade every row of ``source`` to ``plan.target`` into ``dest`` (see module docstring).

    Rerunning after an interruption finishes the job; rerunning after success does nothing.
    With ``keep_going``, a bad shard is reported and skipped (nothing written for it) and the
    rest is upgraded; :class:`UpgradeIncompleteError` then lists the failures and no manifest
    is written. The run holds the destination's lease (:mod:`.lease`) throughout: a second run
    into the same ``dest`` fails at once with :class:`~.lease.LeaseHeldError`.
    """
    with upgrade_lease(dest):
        return run_upgrade(UpgradeJob(source, dest, plan, batch_size, progress, keep_going))


def run_upgrade(job: UpgradeJob) -> UpgradeReport:
    """:func:`upgrade_gallery` once the caller holds the destination's lease."""
    clock = Stopwatch()
    report, state = start_job(job)
    if state is None:
        return report
    source, dest, plan, manifest = job.source, job.dest, job.plan, job.source.manifest

    batch_plan = plan.batch_plan()
    outputs: dict[str, ShardInfo] = {}
    bar = upgrade_bar(job.progress, manifest)
    try:
        for index, shard in enumerate(manifest.shards):
            if report.resume(shard, state, dest, outputs):
                bar.update(shard.rows)
                bar.set_postfix_str(f"shards {len(outputs)}/{len(manifest.shards)}")
                continue
            where = f"{source.uri}/{shard.path}"
            try:
                plan.check_shard(shard, where)
                on_batch = batch_hook(index, _reached, bar.update)
                info = upgrade_shard(
                    source.storage, dest, shard, batch_plan, job.batch_size, on_batch=on_batch
                )
            except GalleryError as exc:
                if not job.keep_going:
                    raise
                report.failures.append(str(exc))
                continue
            marker = shard_marker(report.fingerprint, shard, info)
            FILES.commit(dest, shard.path, index, marker, _reached)
            outputs[shard.path] = info
            bar.set_postfix_str(f"shards {len(outputs)}/{len(manifest.shards)}")
    finally:
        bar.close()
    finish_job(job, report, outputs, "local")
    report.seconds, report.cpu_seconds = clock.read()
    return report


def finish_job(
    job: UpgradeJob, report: UpgradeReport, outputs: dict[str, ShardInfo], engine: str
) -> None:
    """What every engine does last: refuse an incomplete job (``report.failures``, in shard
    order), else write the manifest and remove the progress files."""
    source, dest, manifest = job.source, job.dest, job.source.manifest
    failures = report.failures
    if failures:
        raise UpgradeIncompleteError(
            f"{len(failures)} of {report.shards} shards could not be upgraded (nothing "
            f"was written for them; the other shards are done):\n  "
            + "\n  ".join(failures)
            + "\nfix them and rerun the same command: finished shards are skipped"
        )
    provenance = _provenance(source, job.plan, report.fingerprint, job.batch_size, outputs)
    result = Manifest(
        manifest.family,
        tuple(outputs[s.path] for s in manifest.shards),
        provenance=provenance | {"engine": engine},
    )
    dest.write_bytes(MANIFEST, result.to_json())
    _reached("manifest")
    FILES.clean(dest)
    report.manifest = result


def upgrade_shard(
    source: Storage,
    dest: Storage,
    shard: ShardInfo,
    plan: BatchPlan,
    batch_size: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> ShardInfo:
    """One shard, for every engine: verified read, :func:`upgrade_batch` per batch, atomic
    deterministic write. Messages name ``<source uri>/<shard> (batch i)``. ``on_batch(i, rows)``
    runs after batch ``i`` is written (progress)."""
    where = f"{source.uri}/{shard.path}"
    with ShardReader(source, shard) as reader:
        schema = output_schema(reader.schema, plan.target_dim, plan.uncertainty)
        # Decoding and the chain run one batch ahead in a helper thread while this thread
        # encodes, hashes and writes the batch before (~15% faster on two cores; every step
        # releases the GIL). Order is preserved.
        upgraded = read_ahead(
            upgrade_batch(b, plan, f"{where} (batch {i})")
            for i, b in enumerate(reader.batches(batch_size))
        )
        return write_shard(dest, shard.path, schema, upgraded, on_batch)


def shard_marker(fingerprint: str, source: ShardInfo, output: ShardInfo) -> dict[str, Any]:
    """What a finished shard's marker records (every engine writes the same)."""
    return {"fingerprint": fingerprint, "source_sha256": source.sha256, "output": output.to_dict()}


def _provenance(
    source: Gallery,
    plan: UpgradePlan,
    fingerprint: str,
    batch_size: int,
    outputs: dict[str, ShardInfo],
) -> dict[str, Any]:
    import onnxruntime
    import pyarrow

    return {
        "fingerprint": fingerprint,
        "engine": "local",
        "batch_size": batch_size,
        "source": {
            "uri": source.uri,
            "manifest_sha256": source.manifest_sha256,
            "rows": source.manifest.rows,
            "groups": source.manifest.to_dict()["groups"],
            **source_classes(source.manifest),
        },
        "plan": plan.record(source.manifest.groups),
        "shards": [
            {
                "path": s.path,
                "rows": s.rows,
                "source_sha256": s.sha256,
                "output_sha256": outputs[s.path].sha256,
            }
            for s in source.manifest.shards
        ],
        "software": {
            "fct_registry": __version__,
            "onnxruntime": onnxruntime.__version__,
            "pyarrow": pyarrow.__version__,
        },
    }


def source_classes(manifest: Manifest) -> dict[str, Any]:
    """The source's class names, carried to the output so its labels stay comparable by name
    (``Manifest.classes`` reads them back); nothing when the source records none."""
    classes = manifest.classes
    return {} if classes is None else {"classes": list(classes)}


_END = object()


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items`` in order while a helper thread produces the next one.

    An exception raised while producing an item is re-raised here, at that item. If the consumer
    stops early, the helper finishes its current item, closes ``items`` (releasing what they
    hold, e.g. an open shard) and is joined before this generator returns.
    """
    slot: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                slot.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    helper = threading.Thread(target=produce, name="fct-upgrade-ahead", daemon=True)
    helper.start()
    try:
        while True:
            item, exc = slot.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        helper.join()


def upgrade_bar(enabled: bool, manifest: Manifest) -> Any:
    """Rows done, with ``shards i/n`` beside them (every engine shows the same)."""
    return progress_bar(
        enabled,
        total=manifest.rows,
        unit="rows",
        unit_scale=True,
        desc="upgrade",
        postfix=f"shards 0/{len(manifest.shards)}",
    )
