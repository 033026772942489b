"""The gallery's Arrow schema, and the checks every batch passes before its numbers are used.

One row per indexed item:

* ``id`` (string): the item's identifier.
* ``embedding`` (``fixed_size_list<float32, d>``): the item embedded by ``model_version``.
* ``side_info`` (``fixed_size_list<float32, d_s>``, optional): FCT side-info; upgrades never
  change it.
* ``model_version`` (int32): the family version that produced ``embedding``.
* ``side_info_version`` (string, nullable): the extractor's ref, e.g. ``fashion-side-info/1``.
* ``label`` (int64, optional): the class id when known (evaluation, search accuracy).
* ``uncertainty`` (float32, nullable, optional): the log-variance an uncertainty-aware
  transformation predicted for the row's embedding (written by upgrades through one; null for
  rows embedded by the model itself). Partial backfills re-embed the most uncertain rows first.
* ``backfilled`` (bool, optional): the row was re-embedded from its image by a partial backfill.
* ``source_uri`` (string, optional): where the image was read from (a path, ``s3://`` URI,
  ``shard.tar#member`` or ``file.safetensors#row``), so a later backfill can find it again.

Embeddings are fixed-size lists so a shard's vectors are one contiguous float32 buffer: read into
NumPy without a copy, and their width is part of the schema. Other columns are carried through
upgrades unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fct_registry.gallery.errors import NonFiniteError, SchemaError, SideInfoError

ID = "id"
EMBEDDING = "embedding"
SIDE_INFO = "side_info"
MODEL_VERSION = "model_version"
SIDE_INFO_VERSION = "side_info_version"
LABEL = "label"
UNCERTAINTY = "uncertainty"
BACKFILLED = "backfilled"
SOURCE_URI = "source_uri"
REQUIRED = (ID, EMBEDDING, MODEL_VERSION)


def uncertainty_field() -> pa.Field:
    return pa.field(UNCERTAINTY, pa.float32())


def backfilled_field() -> pa.Field:
    return pa.field(BACKFILLED, pa.bool_())


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def gallery_schema(
    embedding_dim: int,
    side_info_dim: int | None = None,
    *,
    labels: bool = False,
    source_uris: bool = False,
) -> pa.Schema:
    """The schema ``fct embed`` writes (``side_info_dim=None``: a gallery without side-info)."""
    fields = [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(EMBEDDING, vector_type(embedding_dim), nullable=False),
    ]
    if side_info_dim is not None:
        fields.append(pa.field(SIDE_INFO, vector_type(side_info_dim), nullable=False))
    fields += [
        pa.field(MODEL_VERSION, pa.int32(), nullable=False),
        pa.field(SIDE_INFO_VERSION, pa.string()),
    ]
    if labels:
        fields.append(pa.field(LABEL, pa.int64()))
    if source_uris:
        fields.append(pa.field(SOURCE_URI, pa.string()))
    return pa.schema(fields)


def vectors_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A ``[N, d]`` float matrix as a fixed-size-list column (one buffer, no per-row objects)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise SchemaError(f"vectors must be a 2-D [N, d] array, got shape {matrix.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def make_batch(
    ids: Sequence[str],
    embeddings: np.ndarray,
    *,
    model_version: int,
    side_info: np.ndarray | None = None,
    side_info_version: str | None = None,
    labels: np.ndarray | None = None,
    source_uris: Sequence[str] | None = None,
) -> pa.RecordBatch:
    """One batch in the gallery schema, from NumPy arrays (rows in the same order)."""
    n = len(ids)
    if (
        len(embeddings) != n
        or (side_info is not None and len(side_info) != n)
        or (labels is not None and len(labels) != n)
        or (source_uris is not None and len(source_uris) != n)
    ):
        raise SchemaError(
            f"{n} ids but {len(embeddings)} embeddings"
            + (f", {len(side_info)} side-info rows" if side_info is not None else "")
            + (f", {len(labels)} labels" if labels is not None else "")
            + (f", {len(source_uris)} source URIs" if source_uris is not None else "")
            + "; pass one row per item in every array"
        )
    schema = gallery_schema(
        int(embeddings.shape[1]),
        None if side_info is None else int(side_info.shape[1]),
        labels=labels is not None,
        source_uris=source_uris is not None,
    )
    columns: list[pa.Array] = [pa.array(list(ids), pa.string()), vectors_array(embeddings)]
    if side_info is not None:
        columns.append(vectors_array(side_info))
    columns += [
        pa.array(np.full(n, model_version, dtype=np.int32)),
        pa.array([side_info_version] * n, pa.string()),
    ]
    if labels is not None:
        columns.append(pa.array(np.asarray(labels, dtype=np.int64)))
    if source_uris is not None:
        columns.append(pa.array(list(source_uris), pa.string()))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


# --- checks ------------------------------------------------------------------------------------


def check_columns(schema: pa.Schema, where: str) -> None:
    """Required columns exist with usable types (embedding widths are checked by the reader)."""
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        raise SchemaError(
            f"{where}: missing column(s) {', '.join(missing)} (has: "
            f"{', '.join(schema.names)}); write galleries with `fct embed` or "
            "fct_registry.gallery.GalleryWriter"
        )
    if not pa.types.is_integer(schema.field(MODEL_VERSION).type):
        raise SchemaError(
            f"{where}: column {MODEL_VERSION} is {schema.field(MODEL_VERSION).type}, "
            "expected an integer family version"
        )


def vectors(
    batch: pa.RecordBatch,
    column: str,
    where: str,
    *,
    dim: int | None = None,
    what: str | None = None,
) -> np.ndarray:
    """Column ``column`` as a float32 ``[N, d]`` matrix, checked: present, no nulls, uniform
    width ``dim`` (when given), every value finite. Zero-copy for float32 fixed-size lists."""
    what = what or column
    if column not in batch.schema.names:
        if column == SIDE_INFO:
            raise SideInfoError(
                f"{where}: no {SIDE_INFO} column, but {what} reads side-info; "
                "re-index the gallery with `fct embed` (it stores side-info)"
            )
        raise SchemaError(f"{where}: missing column {column}; write galleries with `fct embed`")
    arr = batch.column(column)
    n = len(arr)
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise SchemaError(
            f"{where}: {column} is null in row {first}{_id_of(batch, first)}; "
            "every row needs a vector: re-embed the item or drop the row"
        )
    kind = arr.type
    if pa.types.is_fixed_size_list(kind):
        width = kind.list_size
        values = arr.flatten()
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if n else (dim or 0)
        bad = np.flatnonzero(lengths != width)
        if bad.size:
            row = int(bad[0])
            raise SchemaError(
                f"{where}: {column} rows have different lengths ({width} in row 0, "
                f"{int(lengths[row])} in row {row}{_id_of(batch, row)}); one "
                "embedding model gives one width: re-embed the odd rows"
            )
        values = arr.flatten()
    else:
        raise SchemaError(
            f"{where}: column {column} is {kind}, expected a list of float32 "
            "(fixed_size_list<float32, d>)"
        )
    if not pa.types.is_floating(values.type):
        raise SchemaError(f"{where}: column {column} holds {values.type}, expected float32")
    if dim is not None and width != dim:
        raise SchemaError(
            f"{where}: {column} vectors are {width}-d, but {what} reads {dim}-d; "
            "the rows were not embedded with the model the manifest names: "
            "re-index the shard"
        )
    matrix = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    matrix = matrix.reshape(n, width)
    finite = np.isfinite(matrix)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        bad_value = matrix[row][~finite[row]][0]
        raise NonFiniteError(
            f"{where}: {column} of row {row}{_id_of(batch, row)} holds "
            f"{bad_value}; NaN and infinite values would spread through the "
            "chain: re-embed the item or drop the row"
        )
    return matrix


def int_column(batch: pa.RecordBatch, column: str, where: str) -> np.ndarray:
    arr = batch.column(column)
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise SchemaError(
            f"{where}: {column} is null in row {first}{_id_of(batch, first)}; set "
            "it to the family version that embedded the row"
        )
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _id_of(batch: pa.RecordBatch, row: int) -> str:
    if ID not in batch.schema.names:
        return ""
    return f" (id {batch.column(ID)[row].as_py()!r})"
