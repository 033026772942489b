"""Open a gallery: its manifest, and its rows streamed shard by shard with checksums verified."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.manifest import Manifest, ShardInfo, read_manifest
from fct_registry.gallery.shards import ShardReader
from fct_registry.storage import Storage, open_storage


@dataclass(frozen=True)
class Gallery:
    storage: Storage
    manifest: Manifest
    manifest_sha256: str

    @classmethod
    def open(cls, location: str | os.PathLike | Storage) -> Gallery:
        storage = location if isinstance(location, Storage) else open_storage(location)
        manifest, digest = read_manifest(storage)
        return cls(storage, manifest, digest)

    @property
    def uri(self) -> str:
        return self.storage.uri

    def shard(self, info: ShardInfo, *, verify: bool = True) -> ShardReader:
        return ShardReader(self.storage, info, verify=verify)

    def batches(
        self, batch_size: int = 65_536, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Every row, in manifest order, each shard checked against its sha256 first."""
        for info in self.manifest.shards:
            with self.shard(info) as reader:
                yield from reader.batches(batch_size, columns)

    def check_usable(
        self, role: str = "gallery", show: int = 10, *, skip_unreadable: bool = False
    ) -> None:
        """Refuse a gallery with no rows, or with an id on more than one row (search would
        return a query's own row under another position, an upgrade would copy the clash).
        Reads only the id column, each shard checksum-verified; ``show`` duplicates are named.
        ``skip_unreadable`` passes over shards that cannot be read: a caller that checks each
        shard itself (the upgrade job, which can ``keep_going``) reports them there.
        """
        if not self.manifest.shards or self.manifest.rows == 0:
            raise GalleryError(
                f"{role} {self.uri} is empty ({len(self.manifest.shards)} shards, "
                f"{self.manifest.rows} rows); embed images into it first (`fct embed`)"
            )
        counts: Counter[str] = Counter()
        for info in self.manifest.shards:
            try:
                with self.shard(info) as reader:
                    for batch in reader.batches(65_536, [gallery_schema.ID]):
                        counts.update(batch.column(0).to_pylist())
            except GalleryError:
                if not skip_unreadable:
                    raise
        duplicates = [(i, n) for i, n in counts.items() if n > 1]
        if duplicates:
            listed = ", ".join(f"{i!r} x{n}" for i, n in duplicates[:show])
            more = f", and {len(duplicates) - show} more" if len(duplicates) > show else ""
            raise GalleryError(
                f"{role} {self.uri} has {len(duplicates)} ids on more than one row ({listed}"
                f"{more}); ids must be unique: re-embed with distinct ids (--id-prefix) or "
                "remove the duplicate rows"
            )
