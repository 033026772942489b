"""Writing a whole gallery into a new table, then indexing and swapping it in."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.manifest import GroupKey
from fct_registry.gallery.pg.catalogue import (
    TableInfo,
    check_name_free,
    ensure_metadata,
    table_name,
)
from fct_registry.gallery.pg.codec import copy_in
from fct_registry.gallery.pg.connection import connect
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.lock import lock_gallery
from fct_registry.gallery.pg.tables import (
    DEFAULT_DISTANCE,
    HnswParams,
    build_index,
    check_distance,
    count_rows,
    create_table,
    swap,
)


def write_gallery(
    loc: PgLocation,
    batches: Iterator[pa.RecordBatch],
    *,
    family: str,
    source_uri: str,
    rows: int,
    groups: dict[GroupKey, int],
    embedding_dim: int,
    side_info_dim: int | None,
    labels: bool,
    distance: str = DEFAULT_DISTANCE,
    provenance: dict[str, Any] | None = None,
    hnsw: HnswParams | None = None,
    index: bool = True,
) -> tuple[TableInfo, float]:
    """Load ``batches`` into a new table, index it, check the count, then swap the view.

    One transaction for the rows (nothing is visible until it commits, so a failure leaves no
    half gallery), then the index, then the swap. A gallery of this name that exists keeps its
    old table (``fct gallery rollback``). Returns the table and the index build's seconds.
    ``index=False``: no HNSW index (exact search only, e.g. a gallery that is only upgraded).
    """
    check_distance(distance)
    versions = sorted({v for v, _ in groups})
    tag = uuid.uuid4().hex
    name = table_name(loc.gallery, versions[0] if len(versions) == 1 else "mixed", tag)
    info = TableInfo(
        name, loc.gallery, family, rows, embedding_dim, side_info_dim, labels, distance,
        groups, provenance,
    )  # fmt: skip
    with contextlib.closing(connect(loc)) as conn:
        ensure_metadata(conn)
        check_name_free(conn, loc)
        lock_gallery(conn, loc, then="retry once it has finished")
        with conn.cursor() as cur:
            create_table(cur, info)
            written = 0
            for batch in batches:
                where = f"{source_uri} rows {written}..{written + batch.num_rows}"
                if batch.column(gallery_schema.EMBEDDING).type != gallery_schema.vector_type(
                    embedding_dim
                ):
                    gallery_schema.vectors(
                        batch, gallery_schema.EMBEDDING, where, dim=embedding_dim
                    )
                copy_in(cur, name, batch, source_uri, where)
                written += batch.num_rows
        conn.commit()
        index_seconds = build_index(conn, name, distance, hnsw) if index else 0.0
        got = count_rows(conn, name)
        if got != rows:
            raise GalleryError(
                f"{loc.uri}: {got} rows were loaded into {name} but the source has {rows}; "
                "the view was not swapped"
            )
        swap(conn, loc, name)
    return info, index_seconds
