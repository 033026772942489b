"""A backfill finds each row's image from its ``source_uri`` (files, tar members, S3 objects,
safetensors rows) and decodes it exactly as ``fct embed`` does; a bad source changes nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.backfill import run as run_module
from fct_registry.backfill.images import ItemImages, split_uri
from fct_registry.backfill.plan import Budget, make_plan, source_uris
from fct_registry.backfill.run import BackfillError, run_backfill
from fct_registry.data.base_image_source import ImageSource
from fct_registry.data.decode import BadImageError, ImageTransform
from fct_registry.data.image_sources import open_source
from fct_registry.errors import DataError
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from tests.backfill.conftest import DIM, SIDE, Setup, write_gallery
from tests.data.images import encode, write_flat, write_imagefolder
from tests.data.test_image_sources import write_tar

# Downscaling 28 -> 24 and grayscale -> RGB: the resize and colour paths of the embedding decode.
TRANSFORM = ImageTransform.for_input_shape([3, 24, 24])


def embedding_path(source: ImageSource, transform: ImageTransform | None) -> dict[str, tuple]:
    """What ``fct embed`` decodes for every item, by id: ``(source_uri, image)``."""
    return {item.id: (item.uri, source.load(item, transform)) for item in source.items()}


def check_same(expected: dict[str, tuple], transform: ImageTransform | None) -> None:
    ids = list(expected)[::-1][:25]  # another order than the listing, with repeats below
    ids += ids[:3]
    got = ItemImages(transform).load(ids, [expected[i][0] for i in ids])
    assert got.dtype == torch.uint8
    assert torch.equal(got, torch.stack([expected[i][1] for i in ids]))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_files_decode_like_the_embedding_path(tmp_path: Path, fmt: str) -> None:
    write_imagefolder(tmp_path / "tree", 30, fmt=fmt)
    source = open_source(str(tmp_path / "tree"))
    check_same(embedding_path(source, TRANSFORM), TRANSFORM)


def test_manifest_tar_and_safetensors_rows(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    images = write_flat(tmp_path / "flat", 30)
    rows = ["id,path"] + [f"m{i},flat/{i:05d}.png" for i in range(30)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    check_same(embedding_path(open_source(str(tmp_path / "manifest.csv")), TRANSFORM), TRANSFORM)

    write_tar(tmp_path / "s-000.tar", images[:20], None)
    write_tar(tmp_path / "s-001.tar", images[20:], None, start=20)
    shards = open_source([str(tmp_path / "s-000.tar"), str(tmp_path / "s-001.tar")])
    expected = embedding_path(shards, TRANSFORM)
    assert expected["s00021"][0] == f"{tmp_path / 's-001.tar'}#s00021.png"
    check_same(expected, TRANSFORM)

    save_file({"images": torch.from_numpy(images[:, None])}, str(tmp_path / "split.safetensors"))
    tensors = open_source(str(tmp_path / "split.safetensors"))
    square = ImageTransform.for_input_shape([1, 28, 28])
    check_same(embedding_path(tensors, square), square)
    check_same(embedding_path(tensors, None), None)
    with pytest.raises(DataError, match=r"item 'split-0000003'.*\[1, 28, 28\].*\[3, 24, 24\]"):
        ItemImages(TRANSFORM).load(["split-0000003"], [f"{tensors.uri}#3"])


def test_split_uri() -> None:
    assert split_uri("/a/b/c.png") == ("file", "/a/b", "c.png")
    assert split_uri("/c.png") == ("file", "/", "c.png")
    assert split_uri("s3://bkt/p/c.jpg") == ("file", "s3://bkt/p", "c.jpg")
    assert split_uri("s3://bkt/s.tar#k/x.png") == ("tar", "s3://bkt/s.tar", "k/x.png")
    assert split_uri("/d/test.safetensors#42") == ("safetensors", "/d/test.safetensors", "42")


def test_bad_sources_name_the_item_and_the_uri(tmp_path: Path) -> None:
    images = write_flat(tmp_path / "flat", 3)
    good = str(tmp_path / "flat" / "00000.png")
    missing = str(tmp_path / "flat" / "gone.png")
    reader = ItemImages(TRANSFORM)
    with pytest.raises(DataError, match=rf"item 'b'.*{missing}.*does not exist"):
        reader.load(["a", "b"], [good, missing])
    (tmp_path / "flat" / "00001.png").write_bytes(encode(images[1])[:60])
    with pytest.raises(BadImageError, match=r"item 'c' \(.*00001\.png\) is a corrupt"):
        reader.load(["c"], [str(tmp_path / "flat" / "00001.png")])
    write_tar(tmp_path / "s.tar", images, None)
    with pytest.raises(DataError, match=r"item 'd'.*s\.tar#nope\.png.*no member 'nope\.png'"):
        reader.load(["d"], [f"{tmp_path / 's.tar'}#nope.png"])
    with pytest.raises(DataError, match=r"item 'e' has no source_uri.*--images FILE"):
        reader.load(["e"], [None])
    with pytest.raises(DataError, match=r"item 'f' comes from the image file.*input shape"):
        ItemImages(None).load(["f"], [good])


def _file_gallery(setup: Setup, tmp_path: Path) -> tuple[Path, list[str], np.ndarray]:
    """The fixture's gallery rows pointing at PNG files of the same pixels (source_uri)."""
    from safetensors.torch import load_file

    images = load_file(str(setup.images))["images"].numpy()
    folder = tmp_path / "pngs"
    folder.mkdir()
    uris = []
    for i, item in enumerate(setup.ids):
        path = folder / f"{item}.png"
        path.write_bytes(encode(images[i, 0]))
        uris.append(str(path))
    gen = np.random.default_rng(1)
    side = gen.normal(0, 1, (len(setup.ids), SIDE)).astype(np.float32)
    root = tmp_path / "fg"
    write_gallery(root, setup.ids, setup.embeddings, side, None, setup.uncertainty, uris=uris)
    return root, uris, images


def test_run_reads_files_and_a_bad_one_changes_nothing(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.upgrade.conftest import snapshot

    root, uris, _ = _file_gallery(setup, tmp_path)
    gallery = Gallery.open(root)
    plan = make_plan(gallery, Budget.parse("50%"), "random", seed=3)
    assert source_uris(gallery, list(plan.ids)) == [uris[setup.ids.index(i)] for i in plan.ids]
    square = ImageTransform.for_input_shape([1, 28, 28])

    # One planned file is corrupt: the run stops, naming it, and the gallery is as before.
    victim = max(plan.ids, key=setup.ids.index)  # last shard: earlier ones are rewritten first
    path = Path(uris[setup.ids.index(victim)])
    saved = path.read_bytes()
    path.write_bytes(saved[:40])
    before = snapshot(root)
    with pytest.raises(
        BackfillError, match=rf"item {victim!r} \({re.escape(str(path))}\).*is unchanged"
    ):
        run_backfill(plan, setup.embed, model_id="m", transform=square, batch_size=8)
    assert snapshot(root) == before
    path.unlink()
    with pytest.raises(
        BackfillError, match=rf"{victim!r} at {re.escape(str(path))}.*does not exist"
    ):
        run_backfill(plan, setup.embed, model_id="m", transform=square, batch_size=8)
    assert snapshot(root) == before

    # Restored: the planned rows hold the new model's embeddings of the files (decoded and
    # embedded 3 at a time, so chunks must line up with the rows).
    path.write_bytes(saved)
    monkeypatch.setattr(run_module, "IMAGE_CHUNK", 3)
    run_backfill(plan, setup.embed, model_id="m", transform=square, batch_size=8)
    got = {}
    for batch in Gallery.open(root).batches():
        emb = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t")
        for k, (item, done) in enumerate(
            zip(
                batch.column(gallery_schema.ID).to_pylist(),
                batch.column(gallery_schema.BACKFILLED).to_pylist(),
                strict=True,
            )
        ):
            got[item] = (done, emb[k])
    assert {i for i, (done, _) in got.items() if done} == set(plan.ids)
    for item in plan.ids:
        np.testing.assert_allclose(got[item][1], setup.new[setup.ids.index(item)], atol=1e-5)
    assert got[plan.ids[0]][1].shape == (DIM,)


def test_tar_shards_are_indexed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tarfile

    images = write_flat(tmp_path / "flat", 12)
    write_tar(tmp_path / "s.tar", images, None)
    expected = embedding_path(open_source(str(tmp_path / "s.tar")), TRANSFORM)
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(k) or real_open(*a, **k))
    reader = ItemImages(TRANSFORM)
    for ids in (["s00001", "s00007"], ["s00011"]):
        got = reader.load(ids, [expected[i][0] for i in ids])
        assert torch.equal(got, torch.stack([expected[i][1] for i in ids]))
    # a local shard: random access (headers only; "r:*" also detects compression), once
    assert len(opened) == 1 and opened[0]["mode"].startswith("r:")


@pytest.mark.services
def test_s3_objects_and_s3_tar_members(tmp_path: Path, s3) -> None:
    images = write_flat(tmp_path / "flat", 10)
    for p in sorted((tmp_path / "flat").glob("*.png")):
        s3.client.put_object(Bucket=s3.bucket, Key=f"imgs/{p.name}", Body=p.read_bytes())
    write_tar(tmp_path / "s.tar", images, None)
    s3.client.put_object(
        Bucket=s3.bucket, Key="shards/s.tar", Body=(tmp_path / "s.tar").read_bytes()
    )
    check_same(embedding_path(open_source(s3.uri("imgs")), TRANSFORM), TRANSFORM)
    check_same(embedding_path(open_source(s3.uri("shards/s.tar")), TRANSFORM), TRANSFORM)
    with pytest.raises(DataError, match=r"item 'x' at s3://.*/imgs/gone\.png.*no such object"):
        ItemImages(TRANSFORM).load(["x"], [s3.uri("imgs/gone.png")])
    shutil.rmtree(tmp_path / "flat")
