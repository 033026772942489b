"""Binary COPY encoding of gallery batches, built column-wise with Arrow (no per-row Python).

pgvector's binary format is big-endian float4, so float32 vectors go in bit for bit. Measured
against psycopg 3's ``Copy.write_row`` with the ``pgvector`` package's dumper
(``benchmarks/bench_pgvector.py --only codec``, docs/pgvector.md): as fast within the noise of a
shared 2-CPU machine (hand / psycopg 3 = 0.86 to 1.24 at 128-d), so this codec and psycopg2 stay.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fct_registry.gallery import schema as gallery_schema

SOURCE_URI = "source_uri"


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)


_COPY_TRAILER = struct.pack("!h", -1)


_NULL = struct.pack("!i", -1)


def _fixed(values: np.ndarray) -> pa.Array:
    """Rows of a uint8 ``[n, w]`` matrix as a binary array (one value per row)."""
    values = np.ascontiguousarray(values, dtype=np.uint8)
    n, width = values.shape
    arr = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(values.reshape(-1))]
    )
    return arr.cast(pa.binary())


def _vector_field(matrix: np.ndarray) -> pa.Array:
    """pgvector's binary send format with COPY's length word: len, dim (int16), 0, floats BE."""
    n, d = matrix.shape
    out = np.empty((n, 8 + 4 * d), dtype=np.uint8)
    out[:, :8] = np.frombuffer(struct.pack("!ihh", 4 + 4 * d, d, 0), dtype=np.uint8)
    out[:, 8:] = np.ascontiguousarray(matrix, dtype=">f4").view(np.uint8).reshape(n, 4 * d)
    return _fixed(out)


def _scalar_field(values: np.ndarray, fmt: str, valid: np.ndarray | None = None) -> pa.Array:
    """Fixed-width binary values (``fmt``: a big-endian NumPy type) with COPY's length word;
    NULL where ``valid`` is False."""
    width = np.dtype(fmt).itemsize
    out = np.empty((len(values), 4 + width), dtype=np.uint8)
    out[:, :4] = np.frombuffer(struct.pack("!i", width), dtype=np.uint8)
    out[:, 4:] = np.ascontiguousarray(values, dtype=fmt).view(np.uint8).reshape(-1, width)
    arr = _fixed(out)
    if valid is not None and not valid.all():
        arr = pc.if_else(pa.array(valid), arr, pa.scalar(_NULL, pa.binary()))
    return arr


def _text_field(values: pa.Array) -> pa.Array:
    values = values.cast(pa.string())
    lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False)
    prefix = _fixed(lengths.astype(">i4").view(np.uint8).reshape(-1, 4))
    joined = pc.binary_join_element_wise(prefix, values.cast(pa.binary()), b"")
    return joined.fill_null(pa.scalar(_NULL, pa.binary()))


def _concat(fields: list[pa.Array]) -> memoryview:
    """Each row's field count and fields, rows back to back: the join's data buffer itself."""
    n = len(fields[0])
    count = _fixed(np.tile(np.frombuffer(struct.pack("!h", len(fields)), np.uint8), (n, 1)))
    rows = pc.binary_join_element_wise(count, *fields, b"")
    offsets_buf, data_buf = rows.buffers()[1], rows.buffers()[2]
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[rows.offset : rows.offset + n + 1]
    return memoryview(data_buf)[int(offsets[0]) : int(offsets[-1])]


class _Stream(io.RawIOBase):
    """A read-only file over a few buffers, so COPY sends them without joining them first."""

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self._parts = [memoryview(p).cast("B") for p in parts]
        self._i = self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = []
        while self._i < len(self._parts) and (size < 0 or size > 0):
            part = self._parts[self._i][self._pos :]
            take = part if size < 0 else part[:size]
            out.append(bytes(take))
            self._pos += len(take)
            size -= len(take) if size > 0 else 0
            if self._pos >= len(self._parts[self._i]):
                self._i, self._pos = self._i + 1, 0
        return b"".join(out)


COPY_COLUMNS = (
    gallery_schema.ID, gallery_schema.EMBEDDING, gallery_schema.SIDE_INFO,
    gallery_schema.MODEL_VERSION, gallery_schema.SIDE_INFO_VERSION, SOURCE_URI,
    gallery_schema.LABEL,
    gallery_schema.UNCERTAINTY, gallery_schema.BACKFILLED,
)  # fmt: skip


OPTIONAL_COLUMNS = {gallery_schema.UNCERTAINTY: "real", gallery_schema.BACKFILLED: "boolean"}
"""Partial-backfill columns: null unless the rows have them. Tables written before they existed
lack them; readers and the view then see NULLs (:func:`_select_optional`)."""


def encode_copy(batch: pa.RecordBatch, source_uri: str | None, where: str) -> list[Any]:
    """The parts of one binary COPY stream (header, rows, trailer) for a gallery batch, built
    column-wise.

    Vectors are checked finite first (pgvector refuses NaN, and a half-written batch would be
    rolled back anyway): the error names the row. ``source_uri`` fills rows without one.
    """
    n = batch.num_rows
    names = batch.schema.names
    emb = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, where)
    fields = [_text_field(batch.column(gallery_schema.ID)), _vector_field(emb)]
    if gallery_schema.SIDE_INFO in names:
        fields.append(_vector_field(gallery_schema.vectors(batch, gallery_schema.SIDE_INFO, where)))
    else:
        fields.append(pa.array([_NULL] * n, pa.binary()))
    fields.append(
        _scalar_field(gallery_schema.int_column(batch, gallery_schema.MODEL_VERSION, where), ">i4")
    )
    side_v = (
        batch.column(gallery_schema.SIDE_INFO_VERSION)
        if gallery_schema.SIDE_INFO_VERSION in names
        else None
    )
    fields.append(_text_field(side_v if side_v is not None else pa.nulls(n, pa.string())))
    src = batch.column(SOURCE_URI) if SOURCE_URI in names else pa.nulls(n, pa.string())
    if source_uri is not None:
        src = pc.fill_null(src.cast(pa.string()), source_uri)
    fields.append(_text_field(src))
    for column, fmt, dtype in (
        (gallery_schema.LABEL, ">i8", np.int64),
        (gallery_schema.UNCERTAINTY, ">f4", np.float32),
        (gallery_schema.BACKFILLED, "u1", np.uint8),
    ):
        if column in names:
            values = batch.column(column).cast(pa.from_numpy_dtype(dtype))  # bool -> 0/1
            valid = values.is_valid().to_numpy(zero_copy_only=False)
            filled = values.fill_null(0).to_numpy(zero_copy_only=False)
            fields.append(_scalar_field(filled, fmt, valid))
        else:
            fields.append(pa.array([_NULL] * n, pa.binary()))
    return [COPY_HEADER, _concat(fields), _COPY_TRAILER]


def copy_in(cur: Any, table: str, batch: pa.RecordBatch, source_uri: str | None, where: str):
    parts = encode_copy(batch, source_uri, where)
    cur.copy_expert(
        f"COPY {table} ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT binary)",
        _Stream(parts),
        size=1 << 20,
    )
