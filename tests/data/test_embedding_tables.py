"""The embedding-table reader and the prepare/import pair (no training, no registry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from fct_registry.config import EmbeddingTablesConfig
from fct_registry.data.embedding_tables import import_table, order_of, prepare_tables, read_table
from fct_registry.data.prepared import load_prepared
from fct_registry.errors import DataError


def _parquet(path: Path, ids: list, vectors: np.ndarray, labels: list | None = None) -> str:
    columns = {"id": pa.array(ids), "vector": pa.array([list(map(float, v)) for v in vectors])}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    pq.write_table(pa.table(columns), path)
    return str(path)


def test_alignment_matches_a_plain_loop(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"item-{i}" for i in range(50)]
    vectors = rng.normal(size=(50, 4))
    shuffle = rng.permutation(50)
    table = read_table(
        _parquet(tmp_path / "t.parquet", [ids[i] for i in shuffle], vectors[shuffle]), "t"
    )
    order = order_of(table, np.asarray(ids, dtype=object), "t", "reference")
    expected = np.stack([vectors[ids.index(i)] for i in ids])  # the loop: look each id up
    np.testing.assert_allclose(table.vectors[order], expected.astype(np.float32))


def test_safetensors_and_parquet_read_alike(tmp_path: Path) -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_file(
        {"id": np.array([7, 8, 9]), "vector": vectors, "label": np.array([0, 1, 0])},
        str(tmp_path / "t.safetensors"),
    )
    a = read_table(tmp_path / "t.safetensors", "a")
    b = read_table(_parquet(tmp_path / "t.parquet", [7, 8, 9], vectors, [0, 1, 0]), "b")
    assert a.ids.tolist() == b.ids.tolist() == ["7", "8", "9"]
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: save_file({"vector": np.zeros((2, 3), np.float32)}, str(p)), "no tensor id"),
        (lambda p: p.write_text("not a table"), "cannot read"),
        (
            lambda p: save_file(
                {"id": np.array([1, 2]), "vector": np.zeros((3, 3), np.float32)}, str(p)
            ),
            "give one per row",
        ),
    ],
)
def test_unreadable_tables_name_the_fix(write, message: str, tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    write(path)
    with pytest.raises(DataError, match=message) as err:
        read_table(path, "versions.1.source.embeddings.train")
    assert str(err.value).startswith("versions.1.source.embeddings.train: ")
    assert "\n" not in str(err.value)


def test_other_formats_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,vector\n")
    with pytest.raises(DataError, match="convert it to one of them"):
        read_table(tmp_path / "t.csv", "t")


def _family(tmp_path: Path, labels: bool) -> tuple[dict, dict]:
    rng = np.random.default_rng(1)
    tables, widths = {}, {}
    for where, dim in (("side_info", 3), ("versions.1", 4)):
        cfg = {}
        for split, n in (("train", 6), ("test", 4)):
            path = tmp_path / f"{where}-{split}.parquet"
            y = rng.integers(0, 2, n).tolist() if labels else None
            ids = [f"{split}{i}" for i in range(n)]
            cfg[split] = _parquet(path, ids, rng.normal(size=(n, dim)), y)
        if labels and where == "versions.1":  # the same items carry the same labels
            for split in ("train", "test"):
                side = pq.read_table(tables["side_info"].model_dump()[split])
                t = pq.read_table(cfg[split]).set_column(2, "label", side.column("label"))
                pq.write_table(t, cfg[split])
        tables[where] = EmbeddingTablesConfig(**cfg)
        widths[where] = ("dim" if where == "side_info" else "embedding_dim", dim)
    return tables, widths


def test_a_table_changed_after_prepare_is_refused(tmp_path: Path) -> None:
    tables, widths = _family(tmp_path, labels=True)
    prepare_tables(tables, widths, tmp_path / "data")
    vectors, record = import_table(
        tables["versions.1"], tmp_path / "data", "versions.1", *widths["versions.1"]
    )
    assert vectors["train"].shape == (6, 4) and record["tables"]["test"]["rows"] == 4
    _parquet(Path(tables["versions.1"].train), [f"train{i}" for i in range(6)], np.zeros((6, 4)))
    with pytest.raises(DataError, match="changed since the prepare stage read it; rerun"):
        import_table(tables["versions.1"], tmp_path / "data", "versions.1", *widths["versions.1"])


def test_unlabelled_tables_prepare_but_scoring_asks_for_labels(tmp_path: Path) -> None:
    tables, widths = _family(tmp_path, labels=False)
    info = prepare_tables(tables, widths, tmp_path / "data")
    assert info["classes"] == [] and not info["test"]["labelled"]
    with pytest.raises(DataError, match="add one to the tables"):
        load_prepared(tmp_path / "data", "test")
