"""What a rerun of ``fct embed`` finds in its ``--out`` and re-reads of its source.

The destination (:func:`inspect`): empty, this very job finished (nothing to do), this job
interrupted (its progress files, :mod:`fct_registry.jobs.files`), or anything else (refused).
The source: a finished shard is kept only if the ids it would list now hash to what its marker
recorded (:class:`Hashing`); otherwise the listing restarts at that shard (:func:`relist`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Iterable, Iterator

from fct_registry.data.base_image_source import ImageSource, Item
from fct_registry.data.tar_shards import TarShardsSource
from fct_registry.errors import StorageError
from fct_registry.gallery.errors import ManifestError
from fct_registry.gallery.manifest import MANIFEST, Manifest
from fct_registry.jobs import JobFiles, intact
from fct_registry.storage import TMP_SUFFIX, Storage

FILES = JobFiles("_fct_embed")
JOB_FILE = FILES.job_file
LEASE = "_fct_embed.lease"
"""Held for the whole run (:mod:`fct_registry.jobs.lease`): a second run into the same
``--out`` fails at once, naming the holder."""
SKIPPED_REPORT = "skipped.jsonl"


class EmbedDestinationError(StorageError):
    """The output location holds something other than this indexing job."""


def inspect(storage: Storage, key: str) -> set[str] | None:
    """The progress files an earlier run of this job left (empty for a fresh start), or
    ``None`` when this job already completed there; anything else is refused."""
    names = [n for n in storage.list() if n != LEASE]  # the lease this run holds
    if not names:
        return set()
    if MANIFEST in names:
        try:
            existing = Manifest.from_json(storage.read_bytes(MANIFEST), storage.uri)
        except ManifestError:
            existing = None
        if existing is not None and (existing.provenance or {}).get("fingerprint") == key:
            return None
        raise EmbedDestinationError(
            f"{storage.uri} already holds a gallery (not from this very command: other "
            "images, model or settings); choose an empty --out, or delete it to re-index"
        )
    job = FILES.read_job(storage) if JOB_FILE in names else None
    if job is None:
        raise EmbedDestinationError(
            f"{storage.uri} is not empty ({names[0]}, ...) and holds no `fct embed` in "
            "progress; choose an empty --out"
        )
    if job.get("fingerprint") != key:
        raise EmbedDestinationError(
            f"{storage.uri} holds an interrupted `fct embed` of other images, model or "
            f"settings (from {job.get('source')}); rerun that exact command to finish it, or "
            f"delete {storage.uri} to start this one"
        )
    foreign = [
        n
        for n in names
        if not (
            FILES.owns(n)
            or n.endswith(TMP_SUFFIX)
            or (n.startswith("part-") and n.endswith(".parquet"))
            or n == SKIPPED_REPORT
        )
    ]
    if foreign:
        raise EmbedDestinationError(
            f"{storage.uri} holds files `fct embed` did not write ({foreign[0]}); move them "
            "away or choose an empty --out"
        )
    return set(names)


def done_marker(storage: Storage, names: set[str], shard: str, key: str) -> dict | None:
    """The marker of ``shard`` if this job finished it (torn or stale: None, redo the shard)."""
    return FILES.marked(storage, shard, key) if FILES.marker(shard) in names else None


def output_intact(storage: Storage, output: dict | None) -> bool:
    """A marker's output is still there with its bytes; a shard whose every item was skipped
    has no file."""
    return output is None or intact(storage, output["path"], output["sha256"])


def forget_unfinished(storage: Storage) -> None:
    """A run that started the job and failed before finishing any shard (a refused input, the
    first bad image under ``fail``) leaves the destination as it found it: no job file, so a
    different command may use it. Finished shards are kept for the rerun that resumes them."""
    with contextlib.suppress(StorageError):
        names = storage.list()
        if any(FILES.owns(n) and n != JOB_FILE for n in names):
            return
        if not [n for n in names if n not in (JOB_FILE, LEASE) and not n.endswith(TMP_SUFFIX)]:
            storage.delete(JOB_FILE)


# --- the source's listing ---


class Hashing:
    """Passes items through, hashing their ids (what a marker pins) and counting them."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.items, self.digest, self.count = items, hashlib.sha256(), 0

    def __iter__(self) -> Iterator[Item]:
        for item in self.items:
            self.digest.update(item.id.encode() + b"\n")
            self.count += 1
            yield item


def digest_ids(items: Iterable[Item]) -> tuple[str, int]:
    hashed = Hashing(items)
    for _ in hashed:
        pass
    return hashed.digest.hexdigest(), hashed.count


def count_items(source: ImageSource, limit: int | None) -> int | None:
    """How many images the job will list, for the progress bar's total and ETA; a listing pass
    (names only) except for tar shards, whose members are known only by reading them: None."""
    if isinstance(source, TarShardsSource):
        return None
    return sum(1 for _ in itertools.islice(source.items(), limit))


def relist(source: ImageSource, start: int, limit: int | None) -> Iterator[Item]:
    listing: Iterator[Item] = source.items()
    if limit is not None:
        listing = itertools.islice(listing, limit)
    return itertools.islice(listing, start, None)
