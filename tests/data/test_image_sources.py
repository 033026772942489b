"""Image sources: every layout streams the exported pixels in a stable order; every bad input
gets its own error naming the problem and the fix."""

from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.data.base_image_source import SOURCES
from fct_registry.data.decode import ImageTransform, decode
from fct_registry.data.image_sources import open_source
from fct_registry.data.loader import ImageDataset, stream_batches
from fct_registry.errors import ConfigError, DataError
from tests.data.images import encode, fashion_images, write_flat, write_imagefolder

GRAY28 = ImageTransform.for_input_shape([1, 28, 28])
RGB28 = ImageTransform.for_input_shape([3, 28, 28])


def _all(source, transform=GRAY28, **kw) -> tuple[list[str], torch.Tensor, list]:
    ids, images, labels = [], [], []
    for batch in stream_batches(source, transform, batch_size=7, num_workers=kw.pop("w", 0), **kw):
        ids += batch.ids
        images.append(batch.images)
        labels += batch.labels
    return ids, torch.cat(images), labels


def write_tar(path: Path, images: np.ndarray, labels: np.ndarray | None, start: int = 0) -> None:
    with tarfile.open(path, "w") as tar:
        for i, image in enumerate(images):
            members = [(f"s{start + i:05d}.png", encode(image))]
            if labels is not None:
                members.append((f"s{start + i:05d}.cls", str(int(labels[i])).encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_registry_lists_every_source() -> None:
    assert SOURCES.names() == ["folder", "imagefolder", "manifest", "safetensors", "tar"]
    with pytest.raises(ConfigError, match="known: folder, imagefolder"):
        open_source("/tmp", kind="imagefoldr")


# --- layouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_imagefolder_streams_pixels_and_labels_in_order(tmp_path: Path, workers: int) -> None:
    images, labels = write_imagefolder(tmp_path / "tree", 45, classes=3)
    source = open_source(str(tmp_path / "tree"))
    assert source.kind == "imagefolder" and source.classes == ("class-0", "class-1", "class-2")
    ids, got, got_labels = _all(source, w=workers)
    assert ids == sorted(ids) and ids[0].startswith("class-0/")
    assert torch.equal(got[:, 0], torch.from_numpy(images))  # PNG is lossless
    assert got_labels == labels.tolist()
    # Iterating the source directly decodes here, at the native size.
    first_id, first, first_label = next(iter(source))
    assert first_id == ids[0] and first.shape == (1, 28, 28) and first_label == labels[0]


def test_flat_folder_jpeg_and_rgb_copies(tmp_path: Path) -> None:
    gray = write_flat(tmp_path / "flat", 20, fmt="JPEG")
    source = open_source(str(tmp_path / "flat"))
    assert source.kind == "folder" and not source.has_labels
    ids, got, labels = _all(source)
    assert ids == [f"{i:05d}.jpg" for i in range(20)] and labels == [None] * 20
    assert (got[:, 0].int() - torch.from_numpy(gray).int()).abs().float().mean() < 4  # JPEG loss
    write_flat(tmp_path / "rgb", 20, fmt="PNG", rgb=True)
    _, rgb, _ = _all(open_source(str(tmp_path / "rgb")), RGB28)
    assert rgb.shape == (20, 3, 28, 28)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    # RGB copies of gray images convert back to the same gray values (R = G = B).
    write_flat(tmp_path / "png", 20)
    _, png_gray, _ = _all(open_source(str(tmp_path / "png")))
    assert torch.equal(_all(open_source(str(tmp_path / "rgb")))[1], png_gray)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_ids_paths_labels(tmp_path: Path, fmt: str) -> None:
    images = write_flat(tmp_path / "imgs", 12)
    rows = [
        {"id": f"item-{11 - i}", "path": f"imgs/{11 - i:05d}.png", "label": (11 - i) % 4}
        for i in range(12)
    ]
    if fmt == "csv":
        with (tmp_path / "manifest.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, ["id", "path", "label"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "manifest.parquet")
    source = open_source(str(tmp_path))  # the folder's manifest is found
    assert source.kind == "manifest" and source.has_labels
    ids, got, labels = _all(source)
    assert ids == [r["id"] for r in rows] and labels == [r["label"] for r in rows]
    assert torch.equal(got[:, 0], torch.from_numpy(images[::-1].copy()))


def test_tar_shards_local(tmp_path: Path) -> None:
    images, labels = fashion_images(30)
    write_tar(tmp_path / "shard-000.tar", images[:16], labels[:16])
    write_tar(tmp_path / "shard-001.tar", images[16:], labels[16:], start=16)
    for spec in (
        str(tmp_path / "shard-{000..001}.tar"),
        [str(tmp_path / "shard-000.tar"), str(tmp_path / "shard-001.tar")],
        str(tmp_path),
    ):
        source = open_source(spec)
        assert source.kind == "tar" and source.has_labels
        ids, got, got_labels = _all(source, w=2)
        assert ids == [f"s{i:05d}" for i in range(30)]
        assert torch.equal(got[:, 0], torch.from_numpy(images)) and got_labels == labels.tolist()
    # Random access (training) reads members by offset, without the bytes held.
    dataset = ImageDataset(source, GRAY28)
    assert all(item.data is None for item in dataset.items)
    image, label = dataset[17]
    assert torch.equal(image[0], torch.from_numpy(images[17])) and label == labels[17]


def test_safetensors_source_is_the_prepared_split(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    save_file(
        {"images": images, "labels": torch.arange(50) % 3}, str(tmp_path / "test.safetensors")
    )
    source = open_source(str(tmp_path / "test.safetensors"))
    ids, got, labels = _all(source)
    assert ids[0] == "test-0000000" and torch.equal(got, images) and labels[:4] == [0, 1, 2, 0]


def test_ranks_split_the_work_and_cover_everything(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "tree", 40)
    source = open_source(str(tmp_path / "tree"))
    everything = _all(source)[0]
    parts = [_all(source, rank=r, world=3)[0] for r in range(3)]
    assert sorted(i for part in parts for i in part) == sorted(everything)
    assert all(parts) and not set(parts[0]) & set(parts[1])


def test_image_dataset_with_distributed_sampler(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader, DistributedSampler

    _, labels = write_imagefolder(tmp_path / "tree", 30)
    dataset = ImageDataset(open_source(str(tmp_path / "tree")), GRAY28)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=1)
        for x, y in DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2):
            assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
            seen += y.tolist()
    assert sorted(seen) == sorted(labels.tolist())
    assert dataset.labels.tolist() == labels.tolist()
    two = dataset.subset([0, 2])
    assert two.labels.tolist() == [v for v in labels.tolist() if v in (0, 2)]
    assert int(two[len(two) - 1][1]) == 2


def test_resize_and_centre_crop_match_torchvision_and_pillow() -> None:
    from PIL import Image
    from torchvision.transforms import v2

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (30, 20, 3)), np.ones((3, 3, 1))).astype(np.uint8)
    transform = ImageTransform(3, 32, 32, resize=40)
    encoded = {}
    for fmt in ("PNG", "BMP"):  # PNG: the torchvision path; BMP: the Pillow path
        out = io.BytesIO()
        Image.fromarray(smooth).save(out, fmt)
        encoded[fmt] = decode(out.getvalue(), transform, f"x.{fmt.lower()}")
    # The same steps one by one: shorter side 90 -> 40 (antialiased bilinear), centre 32x32.
    expected = v2.functional.resize(
        torch.from_numpy(smooth).permute(2, 0, 1), [60, 40], antialias=True
    )
    expected = v2.functional.center_crop(expected, [32, 32])
    assert torch.equal(encoded["PNG"], expected)
    # Pillow's filter is the same up to rounding.
    assert (encoded["BMP"].int() - expected.int()).abs().max() <= 2


def test_jpeg_paths_agree_and_colour_conversion_matches_pillow(tmp_path: Path) -> None:
    from PIL import Image

    images, _ = fashion_images(20)
    for i in range(20):
        data = encode(images[i], "JPEG")
        fast = decode(data, GRAY28, "x.jpg")  # torchvision.io
        slow = decode(data, None, "x.jpg")  # Pillow, at the native size
        assert torch.equal(fast, slow)
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(colour).save(out, "PNG")
    gray = decode(out.getvalue(), GRAY28, "c.png")
    assert torch.equal(gray[0], torch.from_numpy(np.array(Image.fromarray(colour).convert("L"))))


# --- bad input: each case its own error -------------------------------------------------------


def _fail_on(source, transform=GRAY28, match: str = "") -> str:
    with pytest.raises(DataError, match=match) as err:
        _all(source, transform, w=2)
    return str(err.value)


def test_corrupt_and_truncated_jpeg(tmp_path: Path) -> None:
    write_flat(tmp_path / "f", 10, fmt="JPEG")
    good = (tmp_path / "f" / "00003.jpg").read_bytes()
    (tmp_path / "f" / "00003.jpg").write_bytes(good[: len(good) // 2])  # truncated
    message = _fail_on(
        open_source(str(tmp_path / "f")), match="00003.jpg is a corrupt or truncated JPEG"
    )
    assert "--on-bad-image skip" in message
    (tmp_path / "f" / "00003.jpg").write_bytes(good[:20] + b"\x00" * 50)  # garbage after header
    _fail_on(open_source(str(tmp_path / "f")), match="00003.jpg")


def test_non_image_file(tmp_path: Path) -> None:
    write_flat(tmp_path / "f", 5)
    (tmp_path / "f" / "notes.png").write_text("not an image at all")
    (tmp_path / "f" / "README.md").write_text("ignored: not an image name")
    _fail_on(open_source(str(tmp_path / "f")), match="notes.png is not an image Pillow can read")


def test_unreadable_file(tmp_path: Path) -> None:
    write_flat(tmp_path / "f", 5)
    os.symlink(tmp_path / "gone.png", tmp_path / "f" / "00002b.png")  # a broken link
    _fail_on(open_source(str(tmp_path / "f")), match=r"00002b.png does not exist .*broken link")
    if os.geteuid() != 0:  # root reads anything; the permission case needs a normal user
        os.unlink(tmp_path / "f" / "00002b.png")
        (tmp_path / "f" / "00001.png").chmod(0)
        _fail_on(open_source(str(tmp_path / "f")), match="permission denied")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="does not exist"):
        open_source(str(tmp_path / "missing"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no images under"):
        open_source(str(tmp_path / "docs"))


def test_class_folder_without_images(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "tree", 12)
    (tmp_path / "tree" / "class-9").mkdir()
    (tmp_path / "tree" / "class-9" / "labels.txt").write_text("no images here")
    with pytest.raises(
        DataError, match=r"class folder .*class-9 has no images; add images or remove"
    ):
        open_source(str(tmp_path / "tree"))


def test_mixed_grayscale_and_rgb(tmp_path: Path) -> None:
    images = write_flat(tmp_path / "f", 6)
    rgb = encode(images[2], rgb=True)
    (tmp_path / "f" / "00002.png").write_bytes(rgb)
    # convert (default): the RGB image becomes grayscale for a 1-channel model, and back.
    _, gray, _ = _all(open_source(str(tmp_path / "f")), GRAY28)
    assert torch.equal(gray[:, 0], torch.from_numpy(images))
    _, colour, _ = _all(open_source(str(tmp_path / "f")), RGB28)
    assert colour.shape == (6, 3, 28, 28) and torch.equal(colour[:, 1], colour[:, 2])
    # strict: refused, saying which way it differs.
    strict_gray = ImageTransform(1, 28, 28, resize=28, color="strict")
    _fail_on(
        open_source(str(tmp_path / "f")),
        strict_gray,
        match=r"00002.png is colour \(3 channels\) \(RGB\) but the model reads grayscale",
    )
    strict_rgb = ImageTransform(3, 28, 28, resize=28, color="strict")
    _fail_on(
        open_source(str(tmp_path / "f")),
        strict_rgb,
        match=r"00000.png is grayscale \(1 channel\) \(L\) but the model reads colour",
    )


def test_image_smaller_than_the_crop(tmp_path: Path) -> None:
    write_flat(tmp_path / "f", 4)
    big = ImageTransform.for_input_shape([1, 32, 32])
    _fail_on(
        open_source(str(tmp_path / "f")),
        big,
        match=r"00000.png is 28x28, smaller than the 32x32 crop .*--upscale",
    )
    upscaled = ImageTransform.for_input_shape([1, 32, 32], upscale=True)
    _, got, _ = _all(open_source(str(tmp_path / "f")), upscaled)
    assert got.shape == (4, 1, 32, 32)
    with pytest.raises(ConfigError, match="resize 20 is smaller than the 32x32 crop"):
        ImageTransform(1, 32, 32, resize=20)


def test_manifest_naming_missing_files(tmp_path: Path) -> None:
    write_flat(tmp_path / "imgs", 3)
    (tmp_path / "list.csv").write_text("id,path\na,imgs/00000.png\nb,imgs/nope.png\n")
    message = _fail_on(
        open_source(str(tmp_path / "list.csv")), match="manifest .*list.csv names .*nope.png"
    )
    assert "id 'b'" in message


def test_duplicate_ids(tmp_path: Path) -> None:
    write_flat(tmp_path / "imgs", 3)
    (tmp_path / "list.csv").write_text(
        "id,path\na,imgs/00000.png\nb,imgs/00001.png\na,imgs/00002.png\n"
    )
    with pytest.raises(DataError, match=r"id 'a' appears twice in .*list.csv \(again at line 4\)"):
        _all(open_source(str(tmp_path / "list.csv")))
    images, labels = fashion_images(4)
    write_tar(tmp_path / "a.tar", images, labels)
    write_tar(tmp_path / "b.tar", images, labels)  # the same keys again
    with pytest.raises(DataError, match="id 's00000' appears twice"):
        _all(open_source([str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]))


def test_skip_policy_drops_bad_items_and_says_which(tmp_path: Path) -> None:
    images = write_flat(tmp_path / "f", 30)
    (tmp_path / "f" / "00004.png").write_bytes(b"garbage")
    (tmp_path / "f" / "00021.png").write_bytes(encode(images[21])[:40])
    bad = []
    ids = []
    for batch in stream_batches(
        open_source(str(tmp_path / "f")), GRAY28, batch_size=8, num_workers=2, on_bad_image="skip"
    ):
        ids += batch.ids
        bad += batch.bad
    assert [b.id for b in bad] == ["00004.png", "00021.png"]
    assert ids == [f"{i:05d}.png" for i in range(30) if i not in (4, 21)]
    assert "not an image" in bad[0].reason and "truncated" in bad[1].reason


@pytest.mark.parametrize("workers", [0, 2])
def test_a_side_transform_gives_each_item_its_own_view(tmp_path: Path, workers: int) -> None:
    """Two models that read other pixels (here a 24 crop and a 20 resize): every item decoded
    once per transform, in the same order, each view equal to decoding it alone."""
    write_flat(tmp_path / "f", 19)
    source = open_source(str(tmp_path / "f"))
    crop = ImageTransform.for_input_shape([1, 24, 24], resize=28)
    small = ImageTransform.for_input_shape([3, 20, 20])
    ids, views, sides = [], [], []
    for batch in stream_batches(
        source, crop, batch_size=8, num_workers=workers, side_transform=small
    ):
        ids += batch.ids
        views.append(batch.images)
        sides.append(batch.side_images)
    assert ids == [f"{i:05d}.png" for i in range(19)]
    alone = {t: _all(source, t)[1] for t in (crop, small)}
    assert torch.equal(torch.cat(views), alone[crop])
    assert torch.equal(torch.cat(sides), alone[small])
    assert tuple(alone[small].shape[1:]) == (3, 20, 20)


def test_a_side_transform_reads_each_item_once(tmp_path: Path) -> None:
    """Both views come from one read of the item's bytes (from S3: one GET per image)."""
    write_flat(tmp_path / "f", 11)
    source = open_source(str(tmp_path / "f"))
    reads: list[str] = []
    read = source.read
    source.read = lambda item: reads.append(item.id) or read(item)  # type: ignore[method-assign]
    crop = ImageTransform.for_input_shape([1, 24, 24], resize=28)
    small = ImageTransform.for_input_shape([3, 20, 20])
    ids = []
    for batch in stream_batches(source, crop, batch_size=4, num_workers=0, side_transform=small):
        ids += batch.ids
    assert reads == ids == [f"{i:05d}.png" for i in range(11)]


def test_an_item_bad_in_either_view_is_bad(tmp_path: Path) -> None:
    """A 20x20 image is fine shrunk for one model and too small for a 24 crop without
    --upscale: the item is left out of both views, so rows stay aligned."""
    write_flat(tmp_path / "f", 6)
    from PIL import Image

    Image.new("L", (20, 20)).save(tmp_path / "f" / "00002.png")
    source = open_source(str(tmp_path / "f"))
    small = ImageTransform.for_input_shape([1, 16, 16])
    crop = ImageTransform.for_input_shape([1, 24, 24], resize=28)
    (batch,) = stream_batches(
        source, small, batch_size=8, num_workers=0, on_bad_image="skip", side_transform=crop
    )
    assert [b.id for b in batch.bad] == ["00002.png"]
    assert len(batch) == 5 and batch.images.shape[0] == batch.side_images.shape[0] == 5


# --- S3 ----------------------------------------------------------------------------------------


def _upload(s3, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.client.put_object(
                Bucket=s3.bucket,
                Key=f"{prefix}/{path.relative_to(root).as_posix()}",
                Body=path.read_bytes(),
            )


@pytest.mark.services
def test_s3_sources_match_local(tmp_path: Path, s3) -> None:
    images, labels = write_imagefolder(tmp_path / "tree", 30)
    (tmp_path / "tree" / "class-1" / "zz-sub").mkdir()  # nested folders keep the byte order
    (tmp_path / "tree" / "class-1" / "zz-sub" / "x.png").write_bytes(encode(images[0]))
    (tmp_path / "tree" / "class-1" / "img-0.png").write_bytes(encode(images[1]))
    _upload(s3, tmp_path / "tree", "collections/tree")
    local = _all(open_source(str(tmp_path / "tree")), w=2)
    remote_source = open_source(s3.uri("collections/tree"))
    assert remote_source.kind == "imagefolder"
    remote = _all(remote_source, w=2)
    assert local[0] == remote[0] and torch.equal(local[1], remote[1]) and local[2] == remote[2]
    # tar shards on S3, and a manifest naming s3:// paths
    write_tar(tmp_path / "shard-000.tar", images[:10], labels[:10])
    s3.client.put_object(
        Bucket=s3.bucket, Key="shards/shard-000.tar", Body=(tmp_path / "shard-000.tar").read_bytes()
    )
    ids, got, _ = _all(open_source(s3.uri("shards/shard-{000..000}.tar")))
    assert len(ids) == 10 and torch.equal(got[:, 0], torch.from_numpy(images[:10]))
    ids, _, _ = _all(open_source(s3.uri("shards")))
    assert len(ids) == 10
    # a manifest on S3 naming keys relative to it
    manifest = "id,path,label\nfirst,tree/class-0/" + local[0][0].split("/", 1)[1] + ",0\n"
    s3.client.put_object(Bucket=s3.bucket, Key="collections/list.csv", Body=manifest.encode())
    ids, got, got_labels = _all(open_source(s3.uri("collections/list.csv")))
    assert ids == ["first"] and got_labels == [0] and torch.equal(got[0], local[1][0])


@pytest.mark.services
def test_missing_s3_prefix_and_bucket(s3) -> None:
    with pytest.raises(DataError, match=r"s3://.*/no/such/prefix is empty .*aws s3 ls"):
        open_source(s3.uri("no/such/prefix"))
    with pytest.raises(DataError, match="bucket 'no-such-bucket-fct' does not exist"):
        open_source("s3://no-such-bucket-fct/images")


def test_channel_stats_from_a_bounded_sample(tmp_path: Path) -> None:
    from fct_registry.data.loader import channel_stats, sample_items
    from fct_registry.data.prepared import channel_stats as full_stats

    write_flat(tmp_path / "f", 50, rgb=True)
    source = open_source(str(tmp_path / "f"))
    _, everything, _ = _all(source, RGB28)
    # A sample at least as large as the collection is the collection: same as the full pass.
    mean, std = channel_stats(source, RGB28, sample=100, num_workers=0)
    expected_mean, expected_std = full_stats(everything.numpy())
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5)
    np.testing.assert_allclose(std, expected_std, rtol=1e-4)
    # A smaller sample: that many distinct items, in listing order, the same for a seed.
    picked = [item.id for item in sample_items(source, 10, seed=3)]
    assert len(set(picked)) == 10 and picked == sorted(picked)
    assert picked == [item.id for item in sample_items(source, 10, seed=3)]
