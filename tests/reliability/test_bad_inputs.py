"""Bad input refused with a clean error (rc 2, one line, no traceback): duplicate ids and empty
galleries (upgrade and search), images that do not fit the model or are not safetensors, and a
malformed version reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from fct_registry.cli import main
from fct_registry.errors import FctError
from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery.errors import GalleryError
from fct_registry.registry.refs import parse_ref
from fct_registry.upgrade import UpgradePlan, upgrade_gallery
from tests.upgrade.conftest import FAMILY, SIDE, OnnxChain, Rows, synthetic_rows, write_gallery


@pytest.fixture(scope="module")
def plan(chains: dict[str, OnnxChain]) -> UpgradePlan:
    return UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chains["1-2"].path], (2, SIDE): []})


def _with_duplicates(n: int, duplicated: int) -> Rows:
    rows = synthetic_rows(n)
    ids = list(rows.ids)
    for i in range(duplicated):  # row 2i+1 repeats the id of row 2i
        ids[2 * i + 1] = ids[2 * i]
    return Rows(ids, rows.old, rows.side, rows.labels)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_duplicate_ids_refused_by_upgrade_and_search_listed_and_capped(
    tmp_path: Path, plan: UpgradePlan, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    write_gallery(src, _with_duplicates(120, duplicated=13), shard_rows=50)
    with pytest.raises(
        GalleryError, match=r"13 ids on more than one row .*'item-00000' x2.*and 3 more"
    ):
        upgrade_gallery(Gallery.open(src), open_storage(tmp_path / "out"), plan, batch_size=40)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    rc, text = _cli(
        ["search", "--gallery", str(src), "--query-gallery", str(src), "--exclude-self"], capsys
    )
    assert rc == 2 and "13 ids on more than one row" in text and "Traceback" not in text
    assert text.count(" x2") == 10  # capped


def test_empty_gallery_refused_by_upgrade_and_search(
    tmp_path: Path, plan: UpgradePlan, capsys: pytest.CaptureFixture[str]
) -> None:
    # The writer refuses to write no rows; a gallery emptied by hand (0 shards) is what remains.
    empty = tmp_path / "empty"
    write_gallery(empty, synthetic_rows(3))
    manifest = json.loads((empty / "manifest.json").read_text())
    manifest.update(shards=[], groups=[], rows=0, versions={})
    (empty / "manifest.json").write_text(json.dumps(manifest))
    (empty / "part-00000.parquet").unlink()
    assert Gallery.open(empty).manifest.rows == 0
    with pytest.raises(GalleryError, match="is empty"):
        upgrade_gallery(Gallery.open(empty), open_storage(tmp_path / "out"), plan, batch_size=40)
    ok = tmp_path / "ok"
    write_gallery(ok, synthetic_rows(20))
    for argv in (
        ["search", "--gallery", str(empty), "--query-gallery", str(ok)],
        ["search", "--gallery", str(ok), "--query-gallery", str(empty)],
    ):
        rc, text = _cli(argv, capsys)
        assert rc == 2 and "is empty" in text and "Traceback" not in text


@pytest.mark.parametrize("text", ["fashion@-1", "fashion@-x", "fashion@", "@1", "fashion@0"])
def test_malformed_reference_refused(text: str) -> None:
    with pytest.raises(FctError, match="bad version reference"):
        parse_ref(text)


def test_upgrade_to_negative_version_is_a_malformed_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(10))
    (tmp_path / "mlflow.db").touch()
    rc, text = _cli(
        ["upgrade", "--gallery", str(tmp_path / "g"), "--to", "fashion@-1", "--out", "o",
         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        capsys,
    )  # fmt: skip
    assert rc == 2 and "bad version reference 'fashion@-1'" in text


def test_embed_refuses_a_npy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((4, 1, 28, 28), np.uint8))
    (tmp_path / "mlflow.db").touch()  # the file is refused before the store is opened
    store = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    rc, text = _cli(
        ["embed", "--model", "fashion@1", "--images", str(images), "--out", "o", *store], capsys
    )
    assert rc == 2 and "NumPy file" in text and "Traceback" not in text
    renamed = tmp_path / "images.safetensors"
    images.rename(renamed)  # a NumPy file under a safetensors name
    rc, text = _cli(
        ["embed", "--model", "fashion@1", "--images", str(renamed), "--out", "o", *store], capsys
    )
    assert rc == 2 and "Traceback" not in text and "safetensors" in text


@pytest.mark.slow
def test_embed_refuses_images_of_another_shape(
    registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    images = tmp_path / "rgb.safetensors"
    save_file({"images": torch.zeros((4, 3, 32, 32), dtype=torch.uint8)}, str(images))
    rc, text = _cli(
        ["embed", "--model", "tiny@1", "--images", str(images), "--out", str(tmp_path / "g"),
         "--device", "cpu", "--tracking-uri", registry.uri],
        capsys,
    )  # fmt: skip
    assert rc == 2 and "holds [3, 32, 32] images but the model reads [1, 28, 28]" in text
    assert "Traceback" not in text
