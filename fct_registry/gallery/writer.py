"""Write a gallery: rows in, Parquet shards of a fixed size plus ``manifest.json`` out.

Shards are published atomically as they fill, and the manifest last, so a gallery whose writer
was interrupted has no manifest and is refused by readers instead of being silently short.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError, SchemaError
from fct_registry.gallery.manifest import MANIFEST, Manifest, ShardInfo
from fct_registry.gallery.shards import shard_name, write_shard
from fct_registry.storage import Storage

DEFAULT_SHARD_ROWS = 100_000
DEFAULT_ROW_GROUP_ROWS = 16_384


class GalleryWriter:
    """``write(batch)`` rows in the gallery schema, then ``close()`` to publish the manifest.

    Holds at most one shard of rows in memory. Every batch is checked (schema, widths, finite
    values) before it is kept, so a gallery never stores what an upgrade would refuse.
    """

    def __init__(
        self,
        storage: Storage,
        family: str,
        *,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ) -> None:
        if shard_rows < 1 or row_group_rows < 1:
            raise GalleryError(
                f"shard_rows and row_group_rows must be positive, got "
                f"{shard_rows} and {row_group_rows}"
            )
        existing = [n for n in storage.list() if n == MANIFEST or n.endswith(".parquet")]
        if existing:
            raise GalleryError(
                f"{storage.uri} already holds a gallery ({existing[0]}, ...); "
                "write to an empty location or delete it first"
            )
        self.storage, self.family = storage, family
        self.shard_rows, self.row_group_rows = shard_rows, row_group_rows
        self.schema: pa.Schema | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._shards: list[ShardInfo] = []
        self._closed = False

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self._closed:
            raise GalleryError("this GalleryWriter is closed; open a new one")
        for piece in batch.to_batches() if isinstance(batch, pa.Table) else [batch]:
            self._check(piece)
            start = 0
            while start < piece.num_rows:
                take = min(piece.num_rows - start, self.shard_rows - self._pending_rows)
                self._pending.append(piece.slice(start, take))
                self._pending_rows += take
                start += take
                if self._pending_rows == self.shard_rows:
                    self._flush()

    def _check(self, batch: pa.RecordBatch) -> None:
        where = f"rows for {self.storage.uri}"
        if self.schema is None:
            gallery_schema.check_columns(batch.schema, where)
            self.schema = batch.schema
        elif batch.schema != self.schema:
            raise SchemaError(
                f"{where}: schema changed from {self.schema} to {batch.schema}; "
                "write one schema per gallery"
            )
        gallery_schema.vectors(batch, gallery_schema.EMBEDDING, where)
        if gallery_schema.SIDE_INFO in batch.schema.names:
            gallery_schema.vectors(batch, gallery_schema.SIDE_INFO, where)
        gallery_schema.int_column(batch, gallery_schema.MODEL_VERSION, where)

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self.schema is not None
        table = pa.Table.from_batches(self._pending, schema=self.schema).combine_chunks()
        groups = table.to_batches(max_chunksize=self.row_group_rows)
        name = shard_name(len(self._shards))
        self._shards.append(write_shard(self.storage, name, self.schema, groups))
        self._pending, self._pending_rows = [], 0

    def close(self, provenance: dict[str, Any] | None = None) -> Manifest:
        """Write the last shard and the manifest (with ``provenance``); returns the manifest."""
        if self._closed:
            raise GalleryError("this GalleryWriter is already closed")
        self._flush()
        if not self._shards:
            raise GalleryError(
                f"no rows were written to {self.storage.uri}; a gallery needs at least one row"
            )
        manifest = Manifest(self.family, tuple(self._shards), provenance)
        self.storage.write_bytes(MANIFEST, manifest.to_json())
        self._closed = True
        return manifest
