"""Open a gallery: its manifest, and its rows streamed shard by shard with checksums verified."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from fct_registry.gallery.manifest import Manifest, ShardInfo, read_manifest
from fct_registry.gallery.shards import ShardReader
from fct_registry.gallery.storage import Storage, open_storage


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
