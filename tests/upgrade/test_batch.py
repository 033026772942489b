"""``upgrade_batch``: routing by (version, extractor), pass-through, and every bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import NonFiniteError, SchemaError, SideInfoError
from fct_registry.gallery.schema import make_batch, vectors_array
from fct_registry.upgrade.batch import BatchPlan, GroupRunner, upgrade_batch
from fct_registry.upgrade.runner import OnnxChainRunner
from tests.upgrade.conftest import FAMILY, NEW_DIM, SIDE, OnnxChain, synthetic_rows


@pytest.fixture(scope="module")
def plan(chains: dict[str, OnnxChain]) -> BatchPlan:
    """v1 -> v3 through 1-2 then 2-2b; v2 -> v3 through 2-2b; v3 rows are already there."""
    return BatchPlan(
        FAMILY,
        3,
        NEW_DIM,
        {
            (1, SIDE): GroupRunner(
                OnnxChainRunner([chains["1-2"].path, chains["2-2b"].path]), "1->3"
            ),
            (2, SIDE): GroupRunner(OnnxChainRunner([chains["2-2b"].path]), "2->3"),
            (3, SIDE): GroupRunner(None, "3"),
        },
    )


def _batch(n: int = 10, version: int = 1, seed: int = 0, **kw: object) -> pa.RecordBatch:
    rows = synthetic_rows(n, dim=8 if version == 1 else NEW_DIM, seed=seed)
    return make_batch(
        rows.ids,
        rows.old,
        model_version=version,
        side_info=rows.side,
        side_info_version=kw.get("side_info_version", SIDE),
        labels=rows.labels,
    )


def test_upgrades_embeddings_and_keeps_everything_else(
    plan: BatchPlan, chains: dict[str, OnnxChain]
) -> None:
    batch = _batch(12)
    out = upgrade_batch(batch, plan)
    old = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t")
    side = gallery_schema.vectors(batch, gallery_schema.SIDE_INFO, "t")
    want = chains["2-2b"].torch(chains["1-2"].torch(old, side), side)
    np.testing.assert_allclose(
        gallery_schema.vectors(out, gallery_schema.EMBEDDING, "t"), want, atol=1e-5
    )
    assert out.schema.field(gallery_schema.EMBEDDING).type == pa.list_(pa.float32(), NEW_DIM)
    assert out.column(gallery_schema.MODEL_VERSION).to_pylist() == [3] * 12
    assert out.schema.field(gallery_schema.MODEL_VERSION).type == pa.int32()
    for col in (
        gallery_schema.ID,
        gallery_schema.SIDE_INFO,
        gallery_schema.SIDE_INFO_VERSION,
        gallery_schema.LABEL,
    ):
        assert out.column(col).equals(batch.column(col))


def test_mixed_versions_match_a_row_by_row_loop(plan: BatchPlan) -> None:
    """Oracle: each row upgraded alone through its own route."""
    # A batch has one embedding width: v2 and v3 rows (both 6-d) interleaved.
    v2, v3 = _batch(5, version=2, seed=2), _batch(5, version=3, seed=3)
    mixed = pa.Table.from_batches([v2, v3]).combine_chunks().to_batches()[0]
    order = np.array([0, 5, 1, 6, 2, 7, 3, 8, 4, 9])
    mixed = mixed.take(pa.array(order))
    out = upgrade_batch(mixed, plan)
    got = gallery_schema.vectors(out, gallery_schema.EMBEDDING, "t")
    for i in range(mixed.num_rows):
        alone = upgrade_batch(mixed.slice(i, 1), plan)
        assert np.array_equal(
            gallery_schema.vectors(alone, gallery_schema.EMBEDDING, "t")[0], got[i]
        )
    assert out.column(gallery_schema.ID).to_pylist() == mixed.column(gallery_schema.ID).to_pylist()
    v3_rows = [i for i in range(10) if mixed.column(gallery_schema.MODEL_VERSION)[i].as_py() == 3]
    assert np.array_equal(
        got[v3_rows], gallery_schema.vectors(mixed, gallery_schema.EMBEDDING, "t")[v3_rows]
    )


def test_empty_batch(plan: BatchPlan) -> None:
    out = upgrade_batch(_batch(3).slice(0, 0), plan)
    assert (
        out.num_rows == 0 and out.schema.field(gallery_schema.EMBEDDING).type.list_size == NEW_DIM
    )


def test_wrong_embedding_size(plan: BatchPlan) -> None:
    bad = _batch(4, version=2)  # 6-d rows claiming to be v1, whose chain reads 8-d
    bad = bad.set_column(
        bad.schema.get_field_index(gallery_schema.MODEL_VERSION),
        gallery_schema.MODEL_VERSION,
        pa.array([1] * 4, pa.int32()),
    )
    with pytest.raises(SchemaError, match=r"embedding vectors are 6-d, but .* reads 8-d"):
        upgrade_batch(bad, plan, "part-7")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", [gallery_schema.EMBEDDING, gallery_schema.SIDE_INFO])
def test_non_finite_values_name_the_row(plan: BatchPlan, column: str, value: float) -> None:
    batch = _batch(6)
    matrix = gallery_schema.vectors(batch, column, "t").copy()
    matrix[4, 1] = value
    batch = batch.set_column(batch.schema.get_field_index(column), column, vectors_array(matrix))
    with pytest.raises(NonFiniteError, match=r"row 4 \(id 'item-00004'\)"):
        upgrade_batch(batch, plan)


def test_missing_side_info_column(plan: BatchPlan) -> None:
    batch = _batch(3)
    batch = batch.drop_columns([gallery_schema.SIDE_INFO])
    with pytest.raises(SideInfoError, match=r"no side_info column.*re-index"):
        upgrade_batch(batch, plan)


def test_missing_required_column(plan: BatchPlan) -> None:
    with pytest.raises(SchemaError, match=r"missing column.*model_version"):
        upgrade_batch(_batch(3).drop_columns([gallery_schema.MODEL_VERSION]), plan)


def test_side_info_from_another_extractor(plan: BatchPlan) -> None:
    with pytest.raises(SideInfoError, match=r"tiny-side-info/9.*reads tiny-side-info/1"):
        upgrade_batch(_batch(3, side_info_version="tiny-side-info/9"), plan)


def test_version_without_a_route(plan: BatchPlan) -> None:
    batch = _batch(3)
    batch = batch.set_column(
        batch.schema.get_field_index(gallery_schema.MODEL_VERSION),
        gallery_schema.MODEL_VERSION,
        pa.array([7, 7, 7], pa.int32()),
    )
    with pytest.raises(SchemaError, match=r"tiny@7.*manifest does not list"):
        upgrade_batch(batch, plan)


def test_null_embedding(plan: BatchPlan) -> None:
    batch = _batch(3)
    col = pa.array([[0.0] * 8, None, [0.0] * 8], pa.list_(pa.float32(), 8))
    batch = batch.set_column(
        batch.schema.get_field_index(gallery_schema.EMBEDDING), gallery_schema.EMBEDDING, col
    )
    with pytest.raises(SchemaError, match=r"null in row 1"):
        upgrade_batch(batch, plan)


def test_variable_length_lists_are_accepted_when_uniform(
    plan: BatchPlan, chains: dict[str, OnnxChain]
) -> None:
    batch = _batch(3)
    lists = batch.column(gallery_schema.EMBEDDING).cast(pa.list_(pa.float32()))
    as_lists = batch.set_column(
        batch.schema.get_field_index(gallery_schema.EMBEDDING), gallery_schema.EMBEDDING, lists
    )
    assert upgrade_batch(as_lists, plan).equals(upgrade_batch(batch, plan))
    ragged = pa.array([[0.0] * 8, [0.0] * 7, [0.0] * 8], pa.list_(pa.float32()))
    bad = batch.set_column(
        batch.schema.get_field_index(gallery_schema.EMBEDDING), gallery_schema.EMBEDDING, ragged
    )
    with pytest.raises(SchemaError, match=r"different lengths.*row 1"):
        upgrade_batch(bad, plan)
