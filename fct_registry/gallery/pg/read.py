"""Reading a gallery table back as gallery-schema Arrow batches, in id order."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.pg.catalogue import TableInfo
from fct_registry.gallery.pg.codec import COPY_HEADER, SOURCE_URI
from fct_registry.gallery.pg.tables import filled_optional

READ_BATCH = 8192


def read_batches(
    conn: Any, info: TableInfo, *, batch_size: int = READ_BATCH, after: str | None = None
) -> Iterator[pa.RecordBatch]:
    """The table's rows in id order, ``batch_size`` at a time (keyset paging: each page is an
    index range scan, however deep), as gallery-schema batches plus ``source_uri``.

    Vectors come through a binary COPY of fixed-width rows (parsed as one NumPy block, no
    per-row objects); the text columns of the same page through an ordinary query.
    """
    d, ds = info.embedding_dim, info.side_info_dim
    vec_cols = f"embedding{', side_info' if ds else ''}"
    width = 2 + 8 + 4 * d + ((8 + 4 * ds) if ds else 0)
    with conn.cursor() as cur:
        optional = filled_optional(cur, info.table)
    text_cols = ", ".join(["id, model_version, side_info_version, source_uri, label", *optional])
    schema = gallery_schema.gallery_schema(d, ds, labels=info.labels).append(
        pa.field(SOURCE_URI, pa.string())
    )
    for column in optional:
        schema = schema.append(
            gallery_schema.uncertainty_field()
            if column == gallery_schema.UNCERTAINTY
            else gallery_schema.backfilled_field()
        )
    last = after
    while True:
        where, params = ("WHERE id > %s", (last,)) if last is not None else ("", ())
        page = f"FROM {info.table} {where} ORDER BY id LIMIT {int(batch_size)}"
        with conn.cursor() as cur:
            text, vecs = io.BytesIO(), io.BytesIO()
            cur.copy_expert(
                cur.mogrify(
                    f"COPY (SELECT {text_cols} {page}) TO STDOUT WITH (FORMAT csv)", params
                ).decode(),
                text,
            )
            if not text.getbuffer().nbytes:
                return
            cur.copy_expert(
                cur.mogrify(
                    f"COPY (SELECT {vec_cols} {page}) TO STDOUT WITH (FORMAT binary)", params
                ).decode(),
                vecs,
            )
        meta = _read_csv(text, optional)
        n = meta.num_rows
        raw = np.frombuffer(vecs.getbuffer(), dtype=np.uint8)[len(COPY_HEADER) : -2]
        if raw.size != n * width:
            raise GalleryError(
                f"{info.table}: the page after id {last!r} changed while it was read "
                "(is the table written to?); rerun"
            )
        raw = raw.reshape(n, width)
        columns: dict[str, pa.Array] = {
            gallery_schema.ID: meta.column(gallery_schema.ID).combine_chunks(),
            gallery_schema.EMBEDDING: gallery_schema.vectors_array(
                _be_floats(raw[:, 10 : 10 + 4 * d])
            ),
        }
        if ds:
            start = 10 + 4 * d + 8
            columns[gallery_schema.SIDE_INFO] = gallery_schema.vectors_array(
                _be_floats(raw[:, start : start + 4 * ds])
            )
        columns[gallery_schema.MODEL_VERSION] = meta.column(
            gallery_schema.MODEL_VERSION
        ).combine_chunks()
        columns[gallery_schema.SIDE_INFO_VERSION] = meta.column(
            gallery_schema.SIDE_INFO_VERSION
        ).combine_chunks()
        if info.labels:
            columns[gallery_schema.LABEL] = meta.column(gallery_schema.LABEL).combine_chunks()
        columns[SOURCE_URI] = meta.column(SOURCE_URI).combine_chunks()
        for column in optional:
            columns[column] = meta.column(column).combine_chunks()
        yield pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)
        last = columns[gallery_schema.ID][-1].as_py()
        if n < batch_size:
            return


def _be_floats(block: np.ndarray) -> np.ndarray:
    """Big-endian float4 bytes ``[n, 4 d]`` (a strided view) as a float32 ``[n, d]`` matrix."""
    return np.ascontiguousarray(block).view(">f4").astype(np.float32)


def _read_csv(data: io.BytesIO, optional: list[str]) -> pa.Table:
    """COPY's CSV of the text columns: an unquoted empty field is NULL, a quoted one is ''.
    ``real`` prints its shortest exact digits (PostgreSQL >= 12), so float32 reads back bit for
    bit; booleans print as t/f."""
    from pyarrow import csv

    names = [
        gallery_schema.ID,
        gallery_schema.MODEL_VERSION,
        gallery_schema.SIDE_INFO_VERSION,
        SOURCE_URI,
        gallery_schema.LABEL,
        *optional,
    ]
    types = {
        gallery_schema.ID: pa.string(),
        gallery_schema.MODEL_VERSION: pa.int32(),
        gallery_schema.SIDE_INFO_VERSION: pa.string(),
        SOURCE_URI: pa.string(),
        gallery_schema.LABEL: pa.int64(),
        gallery_schema.UNCERTAINTY: pa.float32(),
        gallery_schema.BACKFILLED: pa.bool_(),
    }
    data.seek(0)
    return csv.read_csv(
        data,
        read_options=csv.ReadOptions(column_names=names, use_threads=False),
        parse_options=csv.ParseOptions(newlines_in_values=True),
        convert_options=csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
