"""A gallery (or image collection) from an untrusted source cannot make fct read or write outside
the root it names: shard paths in manifests, names in job markers and S3 keys are plain relative
names, refused when read (naming the field) and again where they become a path or a key.

Also: a manifest whose totals disagree with its shards is refused, and a deleted shard is
reported naming the gallery and the fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fct_registry._files import UnsafePathError, contained_name
from fct_registry.backfill.run import JOB_FILE as BACKFILL_JOB
from fct_registry.backfill.run import _clean as clean_backfill
from fct_registry.cli import main
from fct_registry.data.image_sources import open_source
from fct_registry.errors import DataError
from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery.errors import GalleryError, ManifestError
from fct_registry.gallery.manifest import MANIFEST, ShardInfo
from fct_registry.gallery.shards import write_shard
from fct_registry.storage import LocalStorage, S3Storage
from fct_registry.upgrade import UpgradePlan, upgrade_gallery
from tests.upgrade.conftest import FAMILY, S3, SIDE, OnnxChain, synthetic_rows, write_gallery

SHARD = "part-00000.parquet"


@pytest.fixture(scope="module")
def plan(chains: dict[str, OnnxChain]) -> UpgradePlan:
    return UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chains["1-2"].path], (2, SIDE): []})


def _gallery(root: Path) -> None:
    write_gallery(root, synthetic_rows(30), shard_rows=30)  # one shard: part-00000.parquet


def _rename_shard(manifest: Path, path: str) -> None:
    """Point ``shards[0].path`` at ``path``, keeping everything else (checksums included)."""
    raw = json.loads(manifest.read_text())
    raw["shards"][0]["path"] = path
    manifest.write_text(json.dumps(raw))


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, (captured.out + captured.err).strip()


def _upgrade_argv(src: str, out: str, tmp_path: Path) -> list[str]:
    (tmp_path / "mlflow.db").touch()  # the manifest is refused before the store is opened
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return ["upgrade", "--gallery", src, "--to", f"{FAMILY}@2", "--out", out, "--tracking-uri",
            store, "--no-progress"]  # fmt: skip


def _one_line_error(rc: int, text: str, *needles: str) -> None:
    assert rc == 2, text
    assert len(text.splitlines()) == 1 and text.startswith("error: "), text
    assert "Traceback" not in text
    for needle in needles:
        assert needle in text, text


# --- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["part-00000.parquet", "sub/part-1.parquet", "a.b/c..d", "..x", "x..", ".hidden"]
)
def test_plain_relative_names_pass(name: str) -> None:
    assert contained_name(name, "f") == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "is empty"),
        ("/etc/passwd", "absolute"),
        ("//host/x", "absolute"),
        ("..", "climbs out"),
        ("../x.parquet", "climbs out"),
        ("a/../../x", "climbs out"),
        ("a/..", "climbs out"),
        ("./x", ". segment"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\\..\\b", "backslash"),
        ("a\0b", "control character"),
        ("a\nb", "control character"),
        (None, "NoneType"),
        (7, "int"),
    ],
)
def test_names_leaving_their_root_are_refused_naming_the_field(name: object, reason: str) -> None:
    with pytest.raises(UnsafePathError, match=rf"^where: shards\[2\]\.path .*{reason}"):
        contained_name(name, "shards[2].path", where="where")


def test_a_plain_name_may_be_refused_folders() -> None:
    assert contained_name("item-1", "id", folders=False) == "item-1"
    with pytest.raises(UnsafePathError, match="a / where a plain name belongs"):
        contained_name("a/b", "id", folders=False)


# --- at manifest parse time --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/tmp/x/part-00000.parquet", "absolute"), ("../x/part-00000.parquet", "climbs out"),
     ("a/./part-00000.parquet", ". segment"), ("", "is empty")],
)  # fmt: skip
def test_manifest_refuses_an_unsafe_shard_path_naming_the_field(
    tmp_path: Path, path: str, reason: str
) -> None:
    _gallery(tmp_path / "g")
    _rename_shard(tmp_path / "g" / MANIFEST, path)
    with pytest.raises(ManifestError, match=rf"shards\[0\]\.path .*{reason}.*untrusted source"):
        Gallery.open(tmp_path / "g")


def test_manifest_refuses_a_shard_that_is_not_parquet(tmp_path: Path) -> None:
    _gallery(tmp_path / "g")
    _rename_shard(tmp_path / "g" / MANIFEST, MANIFEST)  # would overwrite the output's manifest
    with pytest.raises(ManifestError, match=r"shards\[0\]\.path 'manifest.json' is not a .parquet"):
        Gallery.open(tmp_path / "g")


def test_a_job_marker_naming_an_outside_path_is_refused() -> None:
    entry = {"path": "/tmp/elsewhere.parquet", "rows": 0, "sha256": "0", "bytes": 0,
             "embedding_dim": 8, "side_info_dim": None, "groups": []}  # fmt: skip
    with pytest.raises(UnsafePathError, match=r"output\.path '/tmp/elsewhere.parquet' is an abs"):
        ShardInfo.from_dict(entry, "output")


# --- fct upgrade and fct search through the CLI ------------------------------------------------


def test_upgrade_refuses_an_absolute_shard_path_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _gallery(tmp_path / "src")
    target = tmp_path / "elsewhere" / "PWNED.parquet"  # outside --out
    _rename_shard(tmp_path / "src" / MANIFEST, str(target))
    rc, text = _cli(_upgrade_argv(str(tmp_path / "src"), str(tmp_path / "out"), tmp_path), capsys)
    _one_line_error(rc, text, "shards[0].path", "is an absolute path", str(tmp_path / "src"))
    assert not target.exists() and not target.parent.exists()
    assert not (tmp_path / "out").exists()


def test_upgrade_refuses_a_dotdot_shard_path_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _gallery(tmp_path / "src")
    evil = tmp_path / "evilsrc"  # the source shard, moved beside the gallery
    evil.mkdir()
    shutil.move(tmp_path / "src" / SHARD, evil / SHARD)
    _rename_shard(tmp_path / "src" / MANIFEST, f"../evilsrc/{SHARD}")
    out = tmp_path / "o" / "out"
    rc, text = _cli(_upgrade_argv(str(tmp_path / "src"), str(out), tmp_path), capsys)
    _one_line_error(rc, text, "shards[0].path '../evilsrc/part-00000.parquet' climbs out")
    assert not (tmp_path / "o" / "evilsrc").exists(), "written beside --out"
    assert not out.exists()


def test_search_refuses_to_read_outside_the_gallery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _gallery(tmp_path / "gallery")
    (tmp_path / "evilsrc").mkdir()
    shutil.move(tmp_path / "gallery" / SHARD, tmp_path / "evilsrc" / SHARD)  # a valid shard
    _rename_shard(tmp_path / "gallery" / MANIFEST, f"../evilsrc/{SHARD}")
    _gallery(tmp_path / "queries")
    for argv in (
        ["search", "--gallery", str(tmp_path / "gallery"), "--query-gallery",
         str(tmp_path / "queries")],
        ["search", "--gallery", str(tmp_path / "queries"), "--query-gallery",
         str(tmp_path / "gallery")],
    ):  # fmt: skip
        rc, text = _cli(argv, capsys)
        _one_line_error(rc, text, "shards[0].path", "climbs out", "manifest.json")


# --- the library, past the CLI -----------------------------------------------------------------


def test_upgrade_library_writes_nothing_outside_out(tmp_path: Path, plan: UpgradePlan) -> None:
    _gallery(tmp_path / "src")
    (tmp_path / "evilsrc").mkdir()
    shutil.move(tmp_path / "src" / SHARD, tmp_path / "evilsrc" / SHARD)
    _rename_shard(tmp_path / "src" / MANIFEST, f"../evilsrc/{SHARD}")
    out = tmp_path / "o" / "out"
    with pytest.raises(ManifestError, match=r"shards\[0\]\.path"):
        upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(out), plan, batch_size=16)
    assert not (tmp_path / "o").exists()


def test_storage_refuses_names_outside_its_root_even_if_a_caller_did_not_check(
    tmp_path: Path,
) -> None:
    """Defence in depth: the storage layer checks every name itself."""
    storage = LocalStorage(tmp_path / "out")
    outside = tmp_path / "outside.parquet"
    for name in ("../outside.parquet", str(outside)):
        with pytest.raises(UnsafePathError, match="file name"):
            storage.write_bytes(name, b"x")
        for call in (storage.exists, storage.read_bytes, storage.sha256, storage.delete):
            with pytest.raises(UnsafePathError):
                call(name)
        with pytest.raises(UnsafePathError), storage.local_copy(name):
            pass
    _gallery(tmp_path / "copy")  # a real shard's rows, to write under a bad name
    source = Gallery.open(tmp_path / "copy")
    with source.shard(source.manifest.shards[0]) as reader, pytest.raises(UnsafePathError):
        write_shard(storage, "../outside.parquet", reader.schema, reader.batches(16))
    assert not outside.exists() and not (tmp_path / "out").exists()
    s3 = S3Storage("s3://bucket/prefix/up")  # no request is made: the key is refused first
    for name in ("../evil2/part-00000.parquet", "/tmp/x.parquet", "a//b.parquet"):
        with pytest.raises(UnsafePathError, match=r"s3://bucket/prefix/up: object name"):
            s3._key(name)


# --- S3 to local, local to S3 ------------------------------------------------------------------


def test_s3_manifest_naming_a_local_file_is_refused(
    s3: S3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _gallery(tmp_path / "src")
    target = tmp_path / "PWNED.parquet"
    _rename_shard(tmp_path / "src" / MANIFEST, str(target))
    for name in (MANIFEST, SHARD):
        s3.client.put_object(
            Bucket=s3.bucket, Key=f"src/{name}", Body=(tmp_path / "src" / name).read_bytes()
        )
    # The shard also where a naive join of prefix and absolute path would look for it.
    s3.client.put_object(
        Bucket=s3.bucket, Key=f"src/{target}", Body=(tmp_path / "src" / SHARD).read_bytes()
    )
    out = tmp_path / "out"
    rc, text = _cli(_upgrade_argv(s3.uri("src"), str(out), tmp_path), capsys)
    _one_line_error(rc, text, f"{s3.uri('src')}/manifest.json", "shards[0].path", "absolute")
    assert not target.exists() and not out.exists()


def test_local_manifest_cannot_write_outside_an_s3_out(
    s3: S3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _gallery(tmp_path / "src")
    (tmp_path / "evil2").mkdir()
    shutil.copy(tmp_path / "src" / SHARD, tmp_path / "evil2" / SHARD)
    _rename_shard(tmp_path / "src" / MANIFEST, f"../evil2/{SHARD}")
    rc, text = _cli(_upgrade_argv(str(tmp_path / "src"), s3.uri("prefix/up"), tmp_path), capsys)
    _one_line_error(rc, text, "shards[0].path '../evil2/part-00000.parquet' climbs out")
    listed = s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    assert [o["Key"] for o in listed] == []


# --- image locations ---------------------------------------------------------------------------


def test_image_locations_refuse_names_outside_their_root(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    images = LocalStorage(tmp_path / "images")
    for call in (images.read_bytes, images.open):
        with pytest.raises(UnsafePathError, match=r"file name '\.\./secret\.png' climbs out"):
            call("../secret.png")
    with pytest.raises(UnsafePathError, match="absolute"):
        images.read_range(str(tmp_path / "secret.png"), 0, 1)
    with pytest.raises(UnsafePathError, match="object name"):
        S3Storage("s3://b/images")._key("../other/x.png")


def test_s3_listing_refuses_a_key_that_is_not_a_plain_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    location = S3Storage("s3://b/images")
    page = {"Contents": [{"Key": "images/ok.png"}, {"Key": "images/../../etc/x.png"}]}
    monkeypatch.setattr(location, "_pages", lambda prefix, delimiter=None: iter([page]))
    walked = location.walk()
    assert next(walked) == "ok.png"
    with pytest.raises(UnsafePathError, match=r"object key '../../etc/x.png' climbs out"):
        next(walked)


def test_image_manifest_relative_path_stays_in_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "manifest.csv").write_text("id,path\na,a.png\nb,../secret.png\n")
    items = open_source(str(folder / "manifest.csv")).items()
    assert next(items).id == "a"
    with pytest.raises(UnsafePathError, match=r"line 3 path '../secret.png' climbs out.*absolute"):
        next(items)


def test_image_manifest_on_s3_cannot_name_local_files(s3: S3, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    body = f"id,path\na,a.png\nb,{secret}\n".encode()
    s3.client.put_object(Bucket=s3.bucket, Key="m/manifest.csv", Body=body)
    items = open_source(s3.uri("m/manifest.csv")).items()
    assert next(items).id == "a"
    with pytest.raises(
        DataError, match=r"line 3: path .* is a local file, but the manifest is on S3"
    ):
        next(items)


# --- totals and missing shards -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("rows", 31), ("versions", {"1": 31}), ("groups", []), ("rows", None)],
)
def test_manifest_totals_must_agree_with_its_shards(
    tmp_path: Path, key: str, value: object
) -> None:
    _gallery(tmp_path / "g")
    raw = json.loads((tmp_path / "g" / MANIFEST).read_text())
    if value is None:
        del raw[key]
    else:
        raw[key] = value
    (tmp_path / "g" / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=rf"'{key}' total.*restore it"):
        Gallery.open(tmp_path / "g")


def test_manifest_totals_in_another_order_are_accepted(tmp_path: Path) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(30), shard_rows=10)
    raw = json.loads((tmp_path / "g" / MANIFEST).read_text())
    raw["groups"] = list(reversed(raw["groups"]))
    (tmp_path / "g" / MANIFEST).write_text(json.dumps(raw))
    assert Gallery.open(tmp_path / "g").manifest.rows == 30


def test_a_deleted_shard_names_the_gallery_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(30), shard_rows=10)
    (tmp_path / "g" / "part-00001.parquet").unlink()
    gallery = Gallery.open(tmp_path / "g")
    with pytest.raises(GalleryError, match=r"gallery .*/g lists shard part-00001.parquet"):
        list(gallery.batches())
    rc, text = _cli(
        ["search", "--gallery", str(tmp_path / "g"), "--query-gallery", str(tmp_path / "g")],
        capsys,
    )
    _one_line_error(
        rc, text, f"gallery {tmp_path / 'g'} lists shard part-00001.parquet", "is missing",
        "restore it", "re-run the job that wrote the gallery",
    )  # fmt: skip


def test_a_backfill_job_file_in_the_gallery_cannot_delete_outside_it(tmp_path: Path) -> None:
    """``fct backfill run`` works in place and, once done, deletes the shards its job file says
    it replaced: a job file shipped with the gallery must not name files elsewhere."""
    _gallery(tmp_path / "g")
    victim = tmp_path / "victim.parquet"
    victim.write_bytes(b"keep me")
    storage = open_storage(tmp_path / "g")
    job = {"replaced": {"../victim.parquet": "x.parquet"}}
    storage.write_bytes(BACKFILL_JOB, json.dumps(job).encode())
    with pytest.raises(UnsafePathError, match=r"file name '\.\./victim\.parquet' climbs out"):
        clean_backfill(storage, Gallery.open(tmp_path / "g").manifest, job)
    assert victim.read_bytes() == b"keep me"


def test_a_deleted_shard_on_s3_names_the_gallery_and_the_fix(s3: S3) -> None:
    write_gallery(s3.uri("g"), synthetic_rows(30), shard_rows=10)
    s3.client.delete_object(Bucket=s3.bucket, Key="g/part-00001.parquet")
    gallery = Gallery.open(s3.uri("g"))
    with pytest.raises(GalleryError, match=r"gallery s3://.*/g lists shard part-00001.parquet.*"):
        list(gallery.batches())
    with pytest.raises(GalleryError, match=r"part-00001.parquet .*is missing; restore it"):
        gallery.check_usable()
