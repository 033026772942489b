"""The streaming job with local ONNX plans: results, provenance, bad shards, resume, S3."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fct_registry._files import sha256_file
from fct_registry.gallery import Gallery, GalleryWriter, make_batch, open_storage
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import (
    CorruptShardError,
    NonFiniteError,
    SchemaError,
    SideInfoError,
)
from fct_registry.gallery.manifest import MANIFEST, Manifest
from fct_registry.gallery.shards import WRITE_OPTIONS
from fct_registry.upgrade import UpgradePlan, job, upgrade_gallery
from fct_registry.upgrade.engines import ray_data
from fct_registry.upgrade.job import DestinationError, UpgradeIncompleteError
from fct_registry.upgrade.runner import OnnxChainRunner
from tests.upgrade.conftest import (
    FAMILY,
    NEW_DIM,
    S3,
    SIDE,
    OnnxChain,
    snapshot,
    synthetic_rows,
    write_gallery,
)


@pytest.fixture(scope="module")
def plan(chains: dict[str, OnnxChain]) -> UpgradePlan:
    return UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chains["1-2"].path], (2, SIDE): []})


def _all(location: Path | str) -> pa.RecordBatch:
    batches = list(Gallery.open(location).batches())
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def test_upgrade_matches_torch_and_records_provenance(
    tmp_path: Path, plan: UpgradePlan, chains: dict[str, OnnxChain]
) -> None:
    rows = synthetic_rows(230)
    write_gallery(tmp_path / "src", rows, shard_rows=100)
    before = snapshot(tmp_path / "src")
    report = upgrade_gallery(
        Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan, batch_size=40
    )
    assert snapshot(tmp_path / "src") == before, "the source must never be touched"
    assert report.rows == 230 and report.upgraded_rows == 230 and report.shards == 3
    out = _all(tmp_path / "dst")
    np.testing.assert_allclose(
        gallery_schema.vectors(out, gallery_schema.EMBEDDING, "t"),
        chains["1-2"].torch(rows.old, rows.side),
        atol=1e-5,
    )
    assert out.column(gallery_schema.ID).to_pylist() == rows.ids
    assert set(out.column(gallery_schema.MODEL_VERSION).to_pylist()) == {2}
    assert np.array_equal(gallery_schema.vectors(out, gallery_schema.SIDE_INFO, "t"), rows.side)

    manifest = Manifest.from_json((tmp_path / "dst" / MANIFEST).read_bytes(), "dst")
    assert manifest.groups == {(2, SIDE): 230}
    prov = manifest.provenance
    assert prov["source"]["manifest_sha256"] == sha256_file(tmp_path / "src" / MANIFEST)
    (chain,) = prov["plan"]["chains"]
    assert chain["from"] == 1 and chain["path"] == [1, 2]
    assert chain["steps"][0]["onnx_sha256"] == sha256_file(chains["1-2"].path)
    for shard in prov["shards"]:
        assert shard["source_sha256"] == sha256_file(tmp_path / "src" / shard["path"])
        assert shard["output_sha256"] == sha256_file(tmp_path / "dst" / shard["path"])
    assert sorted(snapshot(tmp_path / "dst")) == [
        MANIFEST,
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    # row groups follow the batch size (part of the format: resumed runs rely on it)
    assert pq.ParquetFile(tmp_path / "dst" / "part-00000.parquet").metadata.num_row_groups == 3

    again = upgrade_gallery(
        Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan, batch_size=40
    )
    assert again.already_complete and again.upgraded_rows == 0


def test_mixed_gallery_routes_each_version(
    tmp_path: Path, plan: UpgradePlan, chains: dict[str, OnnxChain]
) -> None:
    """Shards of v1 (8-d) are upgraded, shards already at v2 (6-d) pass through unchanged."""
    v1, v2 = (
        synthetic_rows(60, seed=1, prefix="a"),
        synthetic_rows(50, dim=NEW_DIM, seed=2, prefix="b"),
    )
    write_gallery(tmp_path / "v1", v1, shard_rows=30)
    write_gallery(tmp_path / "v2", v2, version=2, shard_rows=30)
    # one gallery made of both: shards side by side, one manifest listing them all
    src = tmp_path / "mixed"
    src.mkdir()
    shards = []
    for part, name in enumerate(["v1", "v2"]):
        m = Gallery.open(tmp_path / name).manifest
        for s in m.shards:
            new = f"{name}-{s.path}"
            (src / new).write_bytes((tmp_path / name / s.path).read_bytes())
            shards.append(type(s)(**{**s.__dict__, "path": new}))
        assert part in (0, 1)
    (src / MANIFEST).write_bytes(Manifest(FAMILY, tuple(shards)).to_json())

    upgrade_gallery(Gallery.open(src), open_storage(tmp_path / "dst"), plan, batch_size=16)
    out = _all(tmp_path / "dst")
    got = gallery_schema.vectors(out, gallery_schema.EMBEDDING, "t")
    np.testing.assert_allclose(got[:60], chains["1-2"].torch(v1.old, v1.side), atol=1e-5)
    assert np.array_equal(got[60:], v2.old)
    assert out.column(gallery_schema.ID).to_pylist() == v1.ids + v2.ids


# --- bad inputs: a clear error, nothing written for that shard ----------------------------------


def tamper(root: Path, shard: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite one shard with ``change`` applied and re-record its checksum in the manifest, so
    only the content (not the checksum) is wrong."""
    path = root / shard
    table = change(pq.read_table(path))
    pq.write_table(table, path, **WRITE_OPTIONS)
    raw = json.loads((root / MANIFEST).read_text())
    for entry in raw["shards"]:
        if entry["path"] == shard:
            entry.update(sha256=sha256_file(path), bytes=path.stat().st_size, rows=table.num_rows)
    (root / MANIFEST).write_text(json.dumps(raw))


def _with_nan(table: pa.Table) -> pa.Table:
    emb = np.stack(table.column(gallery_schema.EMBEDDING).to_pylist()).astype(np.float32)
    emb[3, 2] = np.nan
    return table.set_column(
        table.schema.get_field_index(gallery_schema.EMBEDDING),
        gallery_schema.EMBEDDING,
        gallery_schema.vectors_array(emb),
    )


def _other_extractor(table: pa.Table) -> pa.Table:
    col = pa.array(["tiny-side-info/2"] * table.num_rows, pa.string())
    return table.set_column(
        table.schema.get_field_index(gallery_schema.SIDE_INFO_VERSION),
        gallery_schema.SIDE_INFO_VERSION,
        col,
    )


def _narrow(table: pa.Table) -> pa.Table:
    emb = np.stack(table.column(gallery_schema.EMBEDDING).to_pylist()).astype(np.float32)[:, :5]
    return table.set_column(
        table.schema.get_field_index(gallery_schema.EMBEDDING),
        gallery_schema.EMBEDDING,
        gallery_schema.vectors_array(emb),
    )


def _truncate(root: Path, shard: str) -> None:
    path = root / shard
    path.write_bytes(path.read_bytes()[:-100])


BAD = {
    "nan": (
        lambda root, shard: tamper(root, shard, _with_nan),
        NonFiniteError,
        r"row 3 \(id 'item-00103'\) holds nan",
    ),
    "missing side-info column": (
        lambda root, shard: tamper(
            root, shard, lambda t: t.drop_columns([gallery_schema.SIDE_INFO])
        ),
        SideInfoError,
        "no side_info column",
    ),
    "other extractor": (
        lambda root, shard: tamper(root, shard, _other_extractor),
        SideInfoError,
        "tiny-side-info/2.*reads tiny-side-info/1",
    ),
    "wrong size": (
        lambda root, shard: tamper(root, shard, _narrow),
        SchemaError,
        "5-d, but .* reads 8-d",
    ),
    "truncated": (_truncate, CorruptShardError, "truncated"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_shard_fails_clearly_and_writes_nothing_for_it(
    tmp_path: Path, plan: UpgradePlan, case: str
) -> None:
    damage, error, message = BAD[case]
    write_gallery(tmp_path / "src", synthetic_rows(300), shard_rows=100)
    damage(tmp_path / "src", "part-00001.parquet")
    with pytest.raises(error, match=message) as err:
        upgrade_gallery(
            Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan, batch_size=64
        )
    assert "part-00001.parquet" in str(err.value)
    left = snapshot(tmp_path / "dst")
    assert "part-00001.parquet" not in left and MANIFEST not in left
    assert not any(name.endswith(".fct-tmp") for name in left)
    assert "part-00000.parquet" in left, "shards before the bad one are kept for the rerun"


def test_keep_going_upgrades_the_good_shards_and_lists_the_bad(
    tmp_path: Path, plan: UpgradePlan
) -> None:
    write_gallery(tmp_path / "src", synthetic_rows(300), shard_rows=100)
    tamper(tmp_path / "src", "part-00000.parquet", _with_nan)
    with pytest.raises(UpgradeIncompleteError, match=r"(?s)1 of 3 shards.*part-00000") as err:
        upgrade_gallery(
            Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan, keep_going=True
        )
    assert "rerun the same command" in str(err.value)
    left = snapshot(tmp_path / "dst")
    assert {"part-00001.parquet", "part-00002.parquet"} <= set(left)
    assert "part-00000.parquet" not in left and MANIFEST not in left


def test_destination_must_be_empty_or_this_job(
    tmp_path: Path, plan: UpgradePlan, chains: dict[str, OnnxChain]
) -> None:
    write_gallery(tmp_path / "src", synthetic_rows(50))
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    with pytest.raises(DestinationError, match=r"not empty"):
        upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan)
    with pytest.raises(DestinationError, match=r"overlaps the source"):
        upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "src" / "up"), plan)
    upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "done"), plan)
    other = UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chains["1-2"].path], (2, SIDE): []})
    with pytest.raises(DestinationError, match=r"already holds a gallery"):  # other batch size
        upgrade_gallery(
            Gallery.open(tmp_path / "src"), open_storage(tmp_path / "done"), other, batch_size=7
        )


def test_interrupted_run_resumes_to_identical_bytes(
    tmp_path: Path, plan: UpgradePlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_gallery(tmp_path / "src", synthetic_rows(400), shard_rows=100)
    upgrade_gallery(
        Gallery.open(tmp_path / "src"), open_storage(tmp_path / "clean"), plan, batch_size=32
    )

    calls = {"n": 0}
    real = OnnxChainRunner.__call__

    def flaky(self: OnnxChainRunner, old: np.ndarray, side: np.ndarray | None) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 10:  # mid-way through the third shard
            raise KeyboardInterrupt
        return real(self, old, side)

    monkeypatch.setattr(OnnxChainRunner, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        upgrade_gallery(
            Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan, batch_size=32
        )
    monkeypatch.setattr(OnnxChainRunner, "__call__", real)
    report = upgrade_gallery(
        Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan, batch_size=32
    )
    assert report.skipped_shards == 2 and report.upgraded_rows == 200
    assert snapshot(tmp_path / "clean") == snapshot(tmp_path / "dst")


def test_a_finished_shard_whose_bytes_changed_is_redone(tmp_path: Path, plan: UpgradePlan) -> None:
    write_gallery(tmp_path / "src", synthetic_rows(200), shard_rows=100)
    upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "clean"), plan)
    good = (tmp_path / "src" / "part-00001.parquet").read_bytes()
    good_manifest = (tmp_path / "src" / MANIFEST).read_bytes()
    tamper(tmp_path / "src", "part-00001.parquet", _with_nan)
    with pytest.raises(NonFiniteError):  # shard 0 is left done, with its marker
        upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan)
    (tmp_path / "src" / "part-00001.parquet").write_bytes(good)
    (tmp_path / "src" / MANIFEST).write_bytes(good_manifest)
    out0 = tmp_path / "dst" / "part-00000.parquet"
    damaged = bytearray(out0.read_bytes())
    damaged[100] ^= 0xFF
    out0.write_bytes(bytes(damaged))
    report = upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan)
    assert report.skipped_shards == 0
    assert snapshot(tmp_path / "clean") == snapshot(tmp_path / "dst")


def test_s3_round_trip_gives_the_same_shards(tmp_path: Path, s3: S3, plan: UpgradePlan) -> None:
    rows = synthetic_rows(250)
    write_gallery(tmp_path / "src", rows, shard_rows=100)
    local = upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan)
    write_gallery(s3.uri("g/src"), rows, shard_rows=100)
    remote = upgrade_gallery(Gallery.open(s3.uri("g/src")), open_storage(s3.uri("g/dst")), plan)
    assert [s.sha256 for s in remote.manifest.shards] == [s.sha256 for s in local.manifest.shards]
    keys = sorted(
        o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="g/dst/")["Contents"]
    )
    assert keys == [
        "g/dst/manifest.json",
        "g/dst/part-00000.parquet",
        "g/dst/part-00001.parquet",
        "g/dst/part-00002.parquet",
    ]
    out = _all(s3.uri("g/dst"))
    assert out.column(gallery_schema.ID).to_pylist() == rows.ids
    assert remote.manifest.provenance["source"]["uri"] == s3.uri("g/src")


def test_writer_built_galleries_without_side_info_need_a_chain_without_it(
    tmp_path: Path, chains: dict[str, OnnxChain]
) -> None:
    rows = synthetic_rows(20, dim=NEW_DIM)
    writer = GalleryWriter(open_storage(tmp_path / "src"), FAMILY)
    writer.write(make_batch(rows.ids, rows.old, model_version=3))
    writer.close()
    plan = UpgradePlan.from_onnx(FAMILY, 2, {(3, None): [chains["3-2"].path]})
    upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan)
    np.testing.assert_allclose(
        gallery_schema.vectors(_all(tmp_path / "dst"), gallery_schema.EMBEDDING, "t"),
        chains["3-2"].torch(rows.old, rows.side),
        atol=1e-5,
    )
    needs_side = UpgradePlan.from_onnx(FAMILY, 2, {(3, None): [chains["2-2b"].path]})
    with pytest.raises(SideInfoError, match=r"no side_info column"):
        upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst2"), needs_side)


def test_read_ahead_keeps_order_passes_errors_and_closes_on_early_stop() -> None:
    _ahead = job.read_ahead

    assert list(_ahead(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad batch")

    got = _ahead(failing())
    assert next(got) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(got)

    closed = []

    def source():
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    stream = _ahead(source())
    assert next(stream) == 0
    stream.close()  # the consumer stops early (e.g. its writer failed)
    assert closed == [True]


def test_local_job_runs_the_shared_per_shard_function(
    tmp_path: Path, plan: UpgradePlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every engine upgrades a shard through ``job.upgrade_shard``; the local loop has no copy."""
    assert ray_data.upgrade_shard is job.upgrade_shard
    write_gallery(tmp_path / "src", synthetic_rows(300), shard_rows=100)
    seen: list[str] = []
    real = job.upgrade_shard

    def spy(*args, **kwargs):
        seen.append(args[2].path)
        return real(*args, **kwargs)

    monkeypatch.setattr(job, "upgrade_shard", spy)
    upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan)
    assert seen == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
