"""Copying galleries between Parquet (local or S3) and pgvector, either way."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError, SchemaError
from fct_registry.gallery.manifest import Manifest
from fct_registry.gallery.pg.catalogue import served
from fct_registry.gallery.pg.connection import connect, driver_errors
from fct_registry.gallery.pg.location import PgLocation, is_pg_url, redact
from fct_registry.gallery.pg.read import READ_BATCH, read_batches
from fct_registry.gallery.pg.tables import DEFAULT_DISTANCE, HnswParams
from fct_registry.gallery.pg.write import write_gallery
from fct_registry.gallery.reader import Gallery
from fct_registry.gallery.writer import GalleryWriter
from fct_registry.storage import open_storage


@dataclass(frozen=True)
class CopyReport:
    source: str
    destination: str
    rows: int
    seconds: float
    index_seconds: float = 0.0
    table: str | None = None


def copy_gallery(
    source: str,
    dest: str,
    *,
    distance: str | None = None,
    hnsw: HnswParams | None = None,
    batch_size: int = READ_BATCH,
    index: bool = True,
    row_source: str | None = None,
) -> CopyReport:
    """Copy a gallery between Parquet (local or S3) and pgvector, either way (or between two
    databases). Vectors, ids, versions, extractors and labels are copied bit for bit; into
    pgvector the gallery gets a new table, an HNSW index and its view swapped last.
    ``row_source`` fills ``source_uri`` of rows that have none (default: the source's URI)."""
    if not is_pg_url(source) and not is_pg_url(dest):
        raise GalleryError(
            "one side of a copy must be a postgresql:// URL (Parquet to Parquet: copy the folder)"
        )
    loc = PgLocation.parse(source if is_pg_url(source) else dest)
    with driver_errors(loc, f"copying {redact(source)} to {redact(dest)}"):
        return _copy(source, dest, distance, hnsw, batch_size, index, row_source)


def _copy(
    source: str,
    dest: str,
    distance: str | None,
    hnsw: HnswParams | None,
    batch_size: int,
    index: bool,
    row_source: str | None,
) -> CopyReport:
    start = time.perf_counter()
    if is_pg_url(source):
        src_loc = PgLocation.parse(source)
        conn = connect(src_loc, autocommit=True)
        try:
            info = served(conn, src_loc)
            batches = read_batches(conn, info, batch_size=batch_size)
            if is_pg_url(dest):
                return _into_pg(
                    dest, batches, src_loc.uri, info.manifest(), info.labels,
                    distance or info.distance, hnsw, start, index, row_source,
                )  # fmt: skip
            storage = open_storage(dest)
            writer = GalleryWriter(storage, info.family)
            for batch in batches:
                writer.write(batch)
            classes = info.manifest().classes  # kept, so its labels stay comparable by name
            manifest = writer.close(
                None
                if classes is None
                else {"source": {"uri": src_loc.uri, "classes": list(classes)}}
            )
            return CopyReport(src_loc.uri, storage.uri, manifest.rows, time.perf_counter() - start)
        finally:
            conn.close()
    gallery = Gallery.open(source)
    with gallery.shard(gallery.manifest.shards[0]) as reader:
        labels = gallery_schema.LABEL in reader.schema.names
    return _into_pg(
        dest, gallery.batches(batch_size), gallery.uri, gallery.manifest, labels,
        distance or DEFAULT_DISTANCE, hnsw, start, index, row_source,
    )  # fmt: skip


def _into_pg(
    dest: str,
    batches: Iterator[pa.RecordBatch],
    source_uri: str,
    manifest: Manifest,
    labels: bool,
    distance: str,
    hnsw: HnswParams | None,
    start: float,
    index: bool = True,
    row_source: str | None = None,
) -> CopyReport:
    loc = PgLocation.parse(dest)
    dims = {s.embedding_dim for s in manifest.shards}
    side_dims = {s.side_info_dim for s in manifest.shards}
    if len(dims) != 1 or len(side_dims) != 1:
        raise SchemaError(
            f"{source_uri} holds embeddings of several widths ({sorted(dims)}) or side-info "
            "of several widths; a pgvector table has one: upgrade it to one version first"
        )
    info, index_seconds = write_gallery(
        loc,
        batches,
        family=manifest.family,
        source_uri=row_source or source_uri,
        rows=manifest.rows,
        groups=manifest.groups,
        embedding_dim=dims.pop(),
        side_info_dim=side_dims.pop(),
        labels=labels,
        distance=distance,
        provenance=manifest.provenance,
        hnsw=hnsw,
        index=index,
    )
    seconds = time.perf_counter() - start
    return CopyReport(source_uri, loc.uri, info.rows, seconds, index_seconds, info.table)
