"""Writing and reading galleries: deterministic bytes, manifests, and refusing damaged shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fct_registry.gallery import Gallery, GalleryWriter, make_batch, open_storage
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import CorruptShardError, GalleryError, ManifestError
from fct_registry.gallery.manifest import MANIFEST
from tests.upgrade.conftest import S3, SIDE, snapshot, synthetic_rows, write_gallery


def _read_all(location: str | Path) -> pa.Table:
    return pa.Table.from_batches(list(Gallery.open(location).batches(batch_size=50)))


def test_writer_shards_and_manifest(tmp_path: Path) -> None:
    rows = synthetic_rows(250)
    manifest = write_gallery(tmp_path / "g", rows, shard_rows=100)
    assert [s.path for s in manifest.shards] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [s.rows for s in manifest.shards] == [100, 100, 50]
    assert manifest.groups == {(1, SIDE): 250} and manifest.rows == 250
    assert manifest.shards[0].embedding_dim == 8 and manifest.shards[0].side_info_dim == 4
    table = _read_all(tmp_path / "g")
    assert table.column(gallery_schema.ID).to_pylist() == rows.ids
    got = gallery_schema.vectors(
        table.combine_chunks().to_batches()[0], gallery_schema.EMBEDDING, "t"
    )
    assert np.array_equal(got, rows.old)


def test_writing_is_deterministic(tmp_path: Path) -> None:
    rows = synthetic_rows(130)
    write_gallery(tmp_path / "a", rows, shard_rows=60)
    write_gallery(tmp_path / "b", rows, shard_rows=60)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_manifest_counts_groups_per_version_and_extractor(tmp_path: Path) -> None:
    writer = GalleryWriter(open_storage(tmp_path / "g"), "tiny", shard_rows=10)
    rows = synthetic_rows(8)
    writer.write(
        make_batch(
            rows.ids[:5],
            rows.old[:5],
            model_version=1,
            side_info=rows.side[:5],
            side_info_version=SIDE,
        )
    )
    writer.write(
        make_batch(
            rows.ids[5:],
            rows.old[5:],
            model_version=2,
            side_info=rows.side[5:],
            side_info_version=None,
        )
    )
    manifest = writer.close()
    assert manifest.groups == {(1, SIDE): 5, (2, None): 3}
    assert Gallery.open(tmp_path / "g").manifest == manifest


def test_writer_refuses_bad_rows_and_a_used_location(tmp_path: Path) -> None:
    rows = synthetic_rows(3)
    emb = rows.old.copy()
    emb[1, 1] = np.nan
    writer = GalleryWriter(open_storage(tmp_path / "g"), "tiny")
    with pytest.raises(GalleryError, match=r"row 1"):
        writer.write(make_batch(rows.ids, emb, model_version=1))
    write_gallery(tmp_path / "h", rows)
    with pytest.raises(GalleryError, match=r"already holds a gallery"):
        GalleryWriter(open_storage(tmp_path / "h"), "tiny")


def test_no_manifest_is_not_a_gallery(tmp_path: Path) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(10))
    (tmp_path / "g" / MANIFEST).unlink()
    with pytest.raises(ManifestError, match=r"has no manifest.json.*fct embed"):
        Gallery.open(tmp_path / "g")


def test_invalid_manifest(tmp_path: Path) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(10))
    (tmp_path / "g" / MANIFEST).write_text("{not json")
    with pytest.raises(ManifestError, match=r"not a valid gallery manifest"):
        Gallery.open(tmp_path / "g")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_shard_is_refused_before_any_row_is_read(tmp_path: Path, damage: str) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(200), shard_rows=100)
    shard = tmp_path / "g" / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    shard.write_bytes(bytes(data))
    gallery = Gallery.open(tmp_path / "g")
    with pytest.raises(CorruptShardError, match=r"part-00001.parquet"):
        list(gallery.batches())


def test_s3_gallery_reads_back(s3: S3) -> None:
    rows = synthetic_rows(120)
    write_gallery(s3.uri("g"), rows, shard_rows=50)
    assert _read_all(s3.uri("g")).column(gallery_schema.ID).to_pylist() == rows.ids
