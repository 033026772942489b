"""``--engine ray`` against the local engine: same shard bytes, same manifest, same errors, and
runs interrupted under one engine resumed under the other; local folders and S3 (moto).

One private local Ray (2 CPUs, no dashboard) serves the whole module; skipped when Ray Data is not
installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fct_registry.errors import ConfigError, FctError
from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import CorruptShardError, NonFiniteError, SchemaError
from fct_registry.gallery.manifest import MANIFEST
from fct_registry.upgrade import UpgradePlan
from fct_registry.upgrade.engines import ENGINES, create_engine
from fct_registry.upgrade.job import UpgradeIncompleteError
from fct_registry.upgrade.runner import OnnxChainRunner
from tests.support.services import private_ray
from tests.upgrade.conftest import (
    FAMILY,
    S3,
    SIDE,
    OnnxChain,
    TinyRegistry,
    snapshot,
    synthetic_rows,
    write_gallery,
)
from tests.upgrade.test_job import _all, _narrow, _truncate, _with_nan, tamper

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'ray[data]')")

BATCH = 40


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    """One private local Ray for the module: the engine uses it and leaves it running."""
    yield from private_ray()


@pytest.fixture(scope="module")
def plan(chains: dict[str, OnnxChain]) -> UpgradePlan:
    return UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chains["1-2"].path], (2, SIDE): []})


def _run(engine: str, src: Path | str, dst: Path | str, plan: UpgradePlan, **kw: object):
    return create_engine(engine).run(
        Gallery.open(src), open_storage(dst), plan, batch_size=BATCH, **kw
    )


def _manifest(data: bytes) -> dict:
    return json.loads(data)


def _same_manifest(local: bytes, remote: bytes) -> None:
    """Byte-identical except ``provenance.engine``, which names the engine that ran."""
    a, b = _manifest(local), _manifest(remote)
    assert a["provenance"].pop("engine") == "local"
    assert b["provenance"].pop("engine") == "ray"
    assert a == b
    assert local.replace(b'"engine": "local"', b'"engine": "ray"') == remote


def test_engines_are_registered_and_typos_list_them() -> None:
    assert ENGINES.names() == ["local", "ray"]
    with pytest.raises(ConfigError, match=r"unknown upgrade engine 'rey'; known: local, ray"):
        create_engine("rey")
    with pytest.raises(FctError, match=r"workers must be positive"):
        create_engine("ray", workers=0)


def test_local_folder_output_is_byte_identical(
    tmp_path: Path, plan: UpgradePlan, chains: dict[str, OnnxChain]
) -> None:
    rows = synthetic_rows(330)
    write_gallery(tmp_path / "src", rows, shard_rows=100)  # 4 shards, the last one short
    local = _run("local", tmp_path / "src", tmp_path / "local", plan)
    remote = _run("ray", tmp_path / "src", tmp_path / "ray", plan)

    a, b = snapshot(tmp_path / "local"), snapshot(tmp_path / "ray")
    assert sorted(a) == sorted(b) == [MANIFEST, *(f"part-0000{i}.parquet" for i in range(4))]
    for name in a:
        if name != MANIFEST:
            assert a[name] == b[name], f"{name} differs between engines"
    _same_manifest(a[MANIFEST], b[MANIFEST])
    assert remote.rows == remote.upgraded_rows == 330 and remote.shards == 4
    assert remote.fingerprint == local.fingerprint
    assert remote.cpu_seconds > 0
    # decoded values, against the chain's torch module (not only against the other engine)
    out = _all(tmp_path / "ray")
    assert out.column(gallery_schema.ID).to_pylist() == rows.ids
    np.testing.assert_allclose(
        gallery_schema.vectors(out, gallery_schema.EMBEDDING, "t"),
        chains["1-2"].torch(rows.old, rows.side),
        atol=1e-5,
    )
    again = _run("ray", tmp_path / "src", tmp_path / "ray", plan)
    assert again.already_complete and again.upgraded_rows == 0
    assert snapshot(tmp_path / "ray") == b


def test_s3_output_is_byte_identical(tmp_path: Path, s3: S3, plan: UpgradePlan) -> None:
    rows = synthetic_rows(250)
    write_gallery(tmp_path / "src", rows, shard_rows=100)
    _run("local", tmp_path / "src", tmp_path / "local", plan)
    write_gallery(s3.uri("g/src"), rows, shard_rows=100)
    remote = _run("ray", s3.uri("g/src"), s3.uri("g/ray"), plan)

    keys = sorted(
        o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="g/ray/")["Contents"]
    )
    assert keys == [
        "g/ray/manifest.json",
        "g/ray/part-00000.parquet",
        "g/ray/part-00001.parquet",
        "g/ray/part-00002.parquet",
    ]
    local = snapshot(tmp_path / "local")
    for key in keys[1:]:
        body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        assert body == local[key.removeprefix("g/ray/")]
    got = _manifest(s3.client.get_object(Bucket=s3.bucket, Key=keys[0])["Body"].read())
    want = _manifest(local[MANIFEST])
    assert got["shards"] == want["shards"] and got["groups"] == want["groups"]
    assert got["provenance"]["fingerprint"] == want["provenance"]["fingerprint"]
    assert got["provenance"]["engine"] == "ray"
    assert got["provenance"]["source"]["uri"] == s3.uri("g/src")
    assert remote.manifest is not None and remote.manifest.rows == 250
    assert _all(s3.uri("g/ray")).column(gallery_schema.ID).to_pylist() == rows.ids


BAD = {
    "nan": (lambda root: tamper(root, "part-00001.parquet", _with_nan), NonFiniteError),
    "wrong size": (lambda root: tamper(root, "part-00001.parquet", _narrow), SchemaError),
    "truncated": (lambda root: _truncate(root, "part-00001.parquet"), CorruptShardError),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_shards_raise_the_local_engines_error(
    tmp_path: Path, plan: UpgradePlan, case: str
) -> None:
    damage, error = BAD[case]
    write_gallery(tmp_path / "src", synthetic_rows(300), shard_rows=100)
    damage(tmp_path / "src")
    with pytest.raises(error) as local:
        _run("local", tmp_path / "src", tmp_path / "local", plan)
    with pytest.raises(error) as remote:
        _run("ray", tmp_path / "src", tmp_path / "ray", plan)
    assert type(remote.value) is type(local.value)
    assert str(remote.value) == str(local.value)  # same row, id, file and fix
    left = snapshot(tmp_path / "ray")
    assert "part-00001.parquet" not in left and MANIFEST not in left
    assert not any(name.endswith(".fct-tmp") for name in left)


def test_keep_going_lists_the_same_failures(tmp_path: Path, plan: UpgradePlan) -> None:
    write_gallery(tmp_path / "src", synthetic_rows(300), shard_rows=100)
    tamper(tmp_path / "src", "part-00000.parquet", _with_nan)
    tamper(tmp_path / "src", "part-00002.parquet", _with_nan)
    with pytest.raises(UpgradeIncompleteError) as local:
        _run("local", tmp_path / "src", tmp_path / "local", plan, keep_going=True)
    with pytest.raises(UpgradeIncompleteError) as remote:
        _run("ray", tmp_path / "src", tmp_path / "ray", plan, keep_going=True)
    assert str(remote.value) == str(local.value)
    assert "2 of 3 shards" in str(remote.value)
    a, b = snapshot(tmp_path / "local"), snapshot(tmp_path / "ray")
    assert a["part-00001.parquet"] == b["part-00001.parquet"]
    assert sorted(a) == sorted(b)  # same markers and job file left for the rerun


def test_a_run_interrupted_locally_is_finished_by_ray(
    tmp_path: Path, plan: UpgradePlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same job file and markers: Ray skips the shards the local run finished, redoes the rest,
    and the result is the uninterrupted run's bytes."""
    write_gallery(tmp_path / "src", synthetic_rows(400), shard_rows=100)
    _run("local", tmp_path / "src", tmp_path / "clean", plan)
    calls = {"n": 0}
    real = OnnxChainRunner.__call__

    def flaky(self: OnnxChainRunner, old: np.ndarray, side: np.ndarray | None) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 7:  # in the third shard (3 batches of 40 per 100-row shard)
            raise KeyboardInterrupt
        return real(self, old, side)

    monkeypatch.setattr(OnnxChainRunner, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run("local", tmp_path / "src", tmp_path / "dst", plan)
    monkeypatch.setattr(OnnxChainRunner, "__call__", real)
    report = _run("ray", tmp_path / "src", tmp_path / "dst", plan)
    assert report.skipped_shards == 2 and report.upgraded_rows == 200
    clean, resumed = snapshot(tmp_path / "clean"), snapshot(tmp_path / "dst")
    assert sorted(clean) == sorted(resumed)
    for name in clean:
        if name != MANIFEST:
            assert clean[name] == resumed[name]
    _same_manifest(clean[MANIFEST], resumed[MANIFEST])


def test_output_overlapping_the_source_is_refused(tmp_path: Path, plan: UpgradePlan) -> None:
    from fct_registry.upgrade.job import DestinationError

    write_gallery(tmp_path / "src", synthetic_rows(20))
    with pytest.raises(DestinationError, match=r"overlaps the source"):
        _run("ray", tmp_path / "src", tmp_path / "src" / "up", plan)


@pytest.mark.slow  # the session's tiny MLflow registry (~30 s the first time)
def test_cli_engine_ray_matches_local(
    tmp_path: Path, registry: TinyRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    from fct_registry.cli import main

    write_gallery(tmp_path / "src", synthetic_rows(120), shard_rows=50)
    base = [
        "upgrade",
        "--gallery",
        str(tmp_path / "src"),
        "--to",
        "tiny@2",
        "--batch-size",
        "16",
        "--tracking-uri",
        registry.uri,
        "--no-progress",
        "--json",
    ]
    assert main([*base, "--out", str(tmp_path / "local")]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "local"
    assert main([*base, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["engine"] == "ray" and summary["upgraded_rows"] == 120
    a, b = snapshot(tmp_path / "local"), snapshot(tmp_path / "ray")
    assert {k: v for k, v in a.items() if k != MANIFEST} == {
        k: v for k, v in b.items() if k != MANIFEST
    }
    _same_manifest(a[MANIFEST], b[MANIFEST])

    assert main([*base, "--out", str(tmp_path / "x"), "--ray-address", "auto"]) == 2
    assert "--ray-address only applies to --engine ray" in capsys.readouterr().err
