"""Shard files: deterministic Parquet writing and checksum-verified streaming reads.

Writing is deterministic: fixed compression and encodings, one row group per written batch, and
no timestamps anywhere (Parquet's footer records only the schema and the writer's version), so
the same rows and batch boundaries always give the same bytes, which is what lets a resumed
upgrade match an uninterrupted one byte for byte. Reading checks the file's sha256 against the
manifest before any row is used, then streams fixed-size batches, so memory is bounded by the
batch size, never by the shard or the gallery.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from fct_registry._files import sha256_file
from fct_registry.errors import NotFoundError
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import CorruptShardError, GalleryError, SchemaError
from fct_registry.gallery.manifest import GroupKey, ShardInfo
from fct_registry.storage import Storage

WRITE_OPTIONS = {
    # Vectors are left uncompressed: float32 embeddings shrink ~10% under zstd for ~3x the
    # write and read time. Ids, versions and labels compress well.
    "compression": {
        gallery_schema.ID: "zstd",
        gallery_schema.MODEL_VERSION: "zstd",
        gallery_schema.SIDE_INFO_VERSION: "zstd",
        gallery_schema.LABEL: "zstd",
        gallery_schema.SOURCE_URI: "zstd",
    },
    "use_dictionary": [
        gallery_schema.MODEL_VERSION,
        gallery_schema.SIDE_INFO_VERSION,
        gallery_schema.LABEL,
    ],
    "write_statistics": [
        gallery_schema.ID,
        gallery_schema.MODEL_VERSION,
        gallery_schema.SIDE_INFO_VERSION,
        gallery_schema.LABEL,
    ],
    "version": "2.6",
}
"""Parquet writer settings: part of the format (changing them changes every shard's bytes)."""


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_shard(
    storage: Storage,
    name: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    on_batch: Callable[[int, int], None] | None = None,
) -> ShardInfo:
    """Write ``batches`` (each one row group) as shard ``name``, atomically; its ShardInfo.

    If ``batches`` raises, nothing is published under ``name``. ``on_batch(index, rows)`` is
    called after each batch is written to the temporary file (progress, tests' crash points).
    """
    groups: Counter[GroupKey] = Counter()
    rows = 0
    with storage.atomic_file(name) as tmp:
        with tmp.open("wb") as raw:
            sink = _HashingSink(raw)  # the checksum as the bytes go out: no second read
            with pq.ParquetWriter(sink, schema, **WRITE_OPTIONS) as writer:
                for i, batch in enumerate(batches):
                    if batch.schema != schema:
                        raise SchemaError(
                            f"{storage.uri}/{name}: batch {i} has schema "
                            f"{batch.schema}, expected {schema}"
                        )
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    _count(batch, groups)
                    if on_batch is not None:
                        on_batch(i, batch.num_rows)
        info = ShardInfo(
            path=name,
            rows=rows,
            sha256=sink.digest.hexdigest(),
            bytes=sink.size,
            embedding_dim=schema.field(gallery_schema.EMBEDDING).type.list_size,
            side_info_dim=(
                schema.field(gallery_schema.SIDE_INFO).type.list_size
                if gallery_schema.SIDE_INFO in schema.names
                else None
            ),
            groups=dict(groups),
        )
    return info


class _HashingSink:
    """A write-only file for ParquetWriter (which only appends) that hashes what it writes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _count(batch: pa.RecordBatch, groups: Counter[GroupKey]) -> None:
    """Add the batch's rows per (version, extractor) to ``groups``."""
    keys = [gallery_schema.MODEL_VERSION]
    if gallery_schema.SIDE_INFO_VERSION in batch.schema.names:
        keys.append(gallery_schema.SIDE_INFO_VERSION)
    table = pa.Table.from_batches([batch.select(keys)])
    counts = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    sides = (
        counts.column(gallery_schema.SIDE_INFO_VERSION).to_pylist()
        if len(keys) == 2
        else [None] * counts.num_rows
    )
    for version, side, n in zip(
        counts.column(gallery_schema.MODEL_VERSION).to_pylist(),
        sides,
        counts.column("count_all").to_pylist(),
        strict=True,
    ):
        groups[(int(version), side)] += int(n)


class ShardReader:
    """One shard, verified against its manifest entry, read in fixed-size batches.

    Use as a context manager: for S3 the shard is downloaded to a temporary file (disk, not
    memory) and removed on exit.
    """

    def __init__(self, storage: Storage, info: ShardInfo, *, verify: bool = True) -> None:
        self.storage, self.info, self.verify = storage, info, verify
        self.where = f"{storage.uri}/{info.path}"
        self._copy = None
        self._file: pq.ParquetFile | None = None

    def __enter__(self) -> ShardReader:
        self._copy = self.storage.local_copy(self.info.path)
        try:
            path: Path = self._copy.__enter__()
        except NotFoundError:
            self._copy = None
            raise GalleryError(
                f"gallery {self.storage.uri} lists shard {self.info.path} in its manifest, but "
                "the shard is missing; restore it (from a backup, or `dvc pull`), or re-run the "
                "job that wrote the gallery (`fct embed` or `fct upgrade`)"
            ) from None
        try:
            self._open(path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _open(self, path: Path) -> None:
        if self.verify:
            size = path.stat().st_size
            if size != self.info.bytes:
                raise CorruptShardError(
                    f"{self.where} is {size} bytes but the manifest records "
                    f"{self.info.bytes}: truncated or replaced; restore it "
                    "from a backup or re-index it with `fct embed`"
                )
            got = sha256_file(path)
            if got != self.info.sha256:
                raise CorruptShardError(
                    f"{self.where} has sha256 {got[:12]}…, but the manifest "
                    f"records {self.info.sha256[:12]}…: the file is corrupt "
                    "or was modified; restore it or re-index it"
                )
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptShardError(
                f"{self.where} is not a readable Parquet file ({exc}); "
                "restore it or re-index it with `fct embed`"
            ) from None
        rows = self._file.metadata.num_rows
        if rows != self.info.rows:
            raise CorruptShardError(
                f"{self.where} has {rows} rows but the manifest records "
                f"{self.info.rows}; restore the shard or the manifest"
            )
        gallery_schema.check_columns(self._file.schema_arrow, self.where)

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._copy is not None:
            self._copy.__exit__(None, None, None)
            self._copy = None

    @property
    def schema(self) -> pa.Schema:
        assert self._file is not None, "use ShardReader as a context manager"
        return self._file.schema_arrow

    def batches(
        self, batch_size: int, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        assert self._file is not None, "use ShardReader as a context manager"
        try:
            yield from self._file.iter_batches(
                batch_size=batch_size, columns=columns, use_threads=False
            )
        except (pa.ArrowException, OSError) as exc:
            raise CorruptShardError(
                f"{self.where} could not be decoded ({exc}); restore it or "
                "re-index it with `fct embed`"
            ) from None


def regroup(
    rows: Iterable[pa.RecordBatch], schema: pa.Schema, row_group_rows: int
) -> Iterator[pa.RecordBatch]:
    """Row groups of exactly ``row_group_rows`` (the last one shorter): the same boundaries
    whatever the DataLoader's batches were, so a resumed shard has the same bytes."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in rows:
        pending.append(batch)
        count += batch.num_rows
        while count >= row_group_rows:
            table = pa.Table.from_batches(pending, schema=schema)
            yield table.slice(0, row_group_rows).combine_chunks().to_batches()[0]
            rest = table.slice(row_group_rows)
            pending = rest.combine_chunks().to_batches() if rest.num_rows else []
            count -= row_group_rows
    if count:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]
