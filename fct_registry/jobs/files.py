"""A job's progress files in its destination, the unit of resume.

Layout, under the job's own folder (``_fct_upgrade``, ``_fct_embed``, ``_fct_backfill``)::

    <dir>/job.json                 the job's fingerprint (and plan), written first
    <dir>/<shard>.json             one marker per finished shard: its checksums

A shard is marked only after its output was published atomically, and a marker counts only when
it names this job and the output still has the bytes it records, so a rerun after ``kill -9``
skips exactly the finished shards. Once the manifest is written the folder is removed, the job
file last (a run killed while cleaning up is still recognised as this job).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from fct_registry.errors import FctError
from fct_registry.jobs.faults import Hook


class JobStore(Protocol):
    """What a job needs of its destination (``fct_registry.storage.Storage`` is one)."""

    def list(self) -> list[str]: ...
    def read_bytes(self, name: str) -> bytes: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...
    def sha256(self, name: str) -> str: ...


def json_bytes(payload: dict[str, Any]) -> bytes:
    """How job files are written: indented, sorted keys, one trailing newline (deterministic)."""
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def read_json(store: JobStore, name: str) -> dict[str, Any] | None:
    """The JSON object stored as ``name``; None when it is missing, torn or not an object (a
    crash while it was written: the caller redoes what it described)."""
    try:
        value = json.loads(store.read_bytes(name))
    except (ValueError, FctError):  # the store's errors are FctErrors (StorageError, ...)
        return None
    return value if isinstance(value, dict) else None


def intact(store: JobStore, path: str, sha256: str) -> bool:
    """The file ``path`` is there with the recorded bytes."""
    try:
        return store.sha256(path) == sha256
    except FctError:  # missing or unreadable: not intact
        return False


@dataclass(frozen=True)
class JobFiles:
    """The progress files of one kind of job, under ``directory`` of its destination."""

    directory: str

    @property
    def job_file(self) -> str:
        return f"{self.directory}/job.json"

    def marker(self, shard: str) -> str:
        return f"{self.directory}/{shard}.json"

    def owns(self, name: str) -> bool:
        """``name`` is one of this job's progress files."""
        return name.startswith(f"{self.directory}/")

    def read_job(self, store: JobStore) -> dict[str, Any] | None:
        return read_json(store, self.job_file)

    def write_job(self, store: JobStore, payload: dict[str, Any]) -> None:
        store.write_bytes(self.job_file, json_bytes(payload))

    def mark(self, store: JobStore, shard: str, payload: dict[str, Any]) -> None:
        """Record ``shard`` as finished (its output is already published)."""
        store.write_bytes(self.marker(shard), json_bytes(payload))

    def marked(
        self, store: JobStore, shard: str, fingerprint: str, **expected: Any
    ) -> dict[str, Any] | None:
        """The marker of ``shard`` if it belongs to job ``fingerprint`` and holds ``expected``
        (e.g. the source shard's sha256); None otherwise (torn, stale: redo the shard)."""
        marker = read_json(store, self.marker(shard))
        if marker is None or marker.get("fingerprint") != fingerprint:
            return None
        if any(marker.get(key) != value for key, value in expected.items()):
            return None
        return marker

    def commit(
        self, store: JobStore, shard: str, index: int, payload: dict[str, Any], hook: Hook
    ) -> None:
        """Mark shard ``index`` (published as ``shard``) done, between the ``shard:<index>`` and
        ``marker:<index>`` fault points of ``hook`` (see :mod:`.faults`)."""
        hook(f"shard:{index}")
        self.mark(store, shard, payload)
        hook(f"marker:{index}")

    def clean(self, store: JobStore) -> None:
        """Remove every progress file, the job file last."""
        for name in store.list():
            if self.owns(name) and name != self.job_file:
                store.delete(name)
        store.delete(self.job_file)
