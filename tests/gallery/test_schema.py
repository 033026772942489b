"""Gallery batches: construction and the checks run before any number is used."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import NonFiniteError, SchemaError


def test_make_batch_is_zero_copy_readable() -> None:
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    batch = gallery_schema.make_batch(
        ["a", "b", "c"],
        emb,
        model_version=2,
        side_info=emb[:, :2],
        side_info_version="f-side-info/1",
        labels=np.array([0, 1, 0]),
    )
    assert batch.schema.equals(gallery_schema.gallery_schema(4, 2, labels=True))
    assert np.array_equal(gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t", dim=4), emb)
    # a slice reads its own rows (Arrow offsets honoured)
    assert np.array_equal(
        gallery_schema.vectors(batch.slice(1, 2), gallery_schema.EMBEDDING, "t"), emb[1:]
    )


def test_lengths_must_agree() -> None:
    with pytest.raises(SchemaError, match=r"2 ids but 3 embeddings"):
        gallery_schema.make_batch(["a", "b"], np.zeros((3, 4), np.float32), model_version=1)


def test_float64_vectors_are_read_as_float32() -> None:
    col = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(6, dtype=np.float64)), 3)
    batch = pa.RecordBatch.from_arrays([col], names=[gallery_schema.EMBEDDING])
    assert gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t").dtype == np.float32


def test_non_float_vectors_are_refused() -> None:
    col = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(6, dtype=np.int32)), 3)
    batch = pa.RecordBatch.from_arrays([col], names=[gallery_schema.EMBEDDING])
    with pytest.raises(SchemaError, match=r"expected float32"):
        gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t")


def test_infinite_value_is_reported_with_the_row() -> None:
    emb = np.zeros((3, 2), np.float32)
    emb[2, 0] = np.inf
    batch = gallery_schema.make_batch(["a", "b", "c"], emb, model_version=1)
    with pytest.raises(NonFiniteError, match=r"row 2 \(id 'c'\) holds inf"):
        gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "shard")
