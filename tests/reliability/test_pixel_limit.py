"""The pixel limit: an image whose header declares more than ``max_pixels`` is a bad image,
refused before a pixel is decoded, in every decoder path (torchvision's PNG/JPEG, Pillow's other
formats, tar shards, the backfill's image lookup) and through ``fct embed``'s CLI.

The fixture is a valid 20000x20000 1-bit PNG of ~50 KB (zlib-compressed zero rows, made in a
fraction of a second): decoding it would take 400 MB of uint8 pixels before any resize.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fct_registry.backfill.images import ItemImages
from fct_registry.cli import embed as embed_cli
from fct_registry.cli import main
from fct_registry.data import decode as decode_module
from fct_registry.data.decode import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    BadImageError,
    ImageTransform,
    decode,
    header_size,
)
from fct_registry.data.image_sources import open_source
from fct_registry.errors import ConfigError
from fct_registry.gallery.embed_job import SKIPPED_REPORT
from tests.data.images import encode, write_flat
from tests.reliability.test_embed_lease import _argv, _no_registry

GRAY28 = ImageTransform(1, 28, 28)
SIDE = 20_000


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def huge_png(width: int = SIDE, height: int = SIDE) -> bytes:
    """A valid 1-bit grayscale PNG of ``width`` x ``height`` zero pixels, compressed."""
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    rows_per_step = 1000
    body = b"".join(
        packer.compress(row * min(rows_per_step, height - y))
        for y in range(0, height, rows_per_step)
    )
    body += packer.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def huge() -> bytes:
    data = huge_png()
    assert len(data) < 200_000  # tiny on disk
    return data


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fail any decode of an image bigger than 10 MP (torchvision's or Pillow's); records the
    sizes of what torchvision was asked to decode."""
    import torchvision.io
    from PIL import Image

    seen: list[int] = []
    real_decode, real_load = torchvision.io.decode_image, Image.Image.load

    def guarded_decode(data, *args, **kwargs):
        seen.append(int(data.numel()))
        if data.numel() > 1000 and data[:4].tolist() == [0x89, 0x50, 0x4E, 0x47]:
            size = header_size(bytes(data[:64].tolist()))
            assert size is None or size[0] * size[1] <= 10_000_000, "decoded a huge image"
        return real_decode(data, *args, **kwargs)

    def guarded_load(self):
        assert self.size[0] * self.size[1] <= 10_000_000, "Pillow decoded a huge image"
        return real_load(self)

    monkeypatch.setattr(torchvision.io, "decode_image", guarded_decode)
    monkeypatch.setattr(Image.Image, "load", guarded_load)
    return seen


# --- the header reader, against Pillow's ---------------------------------------------------------


def _pil_save(array: np.ndarray, mode: str, fmt: str, **kw) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, format=fmt, **kw)
    return out.getvalue()


def test_header_size_matches_pillow_on_many_files() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for w, h in [(1, 1), (28, 28), (31, 17), (640, 3), (300, 1201)]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for mode in ("L", "RGB", "RGBA", "P", "I;16", "1"):
            files.append(_pil_save(rgb, mode, "PNG"))
        files.append(_pil_save(rgb, "RGB", "PNG", optimize=True))
        for mode, kw in [
            ("RGB", {}),
            ("L", {}),
            ("RGB", {"progressive": True}),
            ("RGB", {"quality": 20, "subsampling": 2}),
            ("CMYK", {}),
            ("RGB", {"exif": Image.Exif().tobytes(), "icc_profile": b"\0" * 5000}),
        ]:
            files.append(_pil_save(rgb, mode, "JPEG", **kw))
    for data in files:  # the oracle: Pillow's own header parse
        assert header_size(data) == Image.open(io.BytesIO(data)).size
    assert header_size(huge_png(SIDE, 7)) == (SIDE, 7)
    gray = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    for fmt in ("BMP", "GIF", "WEBP", "TIFF"):  # Pillow's path reads these headers
        assert header_size(_pil_save(gray, "L", fmt)) is None
    assert header_size(b"\x89PNG\r\n\x1a\n\0\0") is None  # cut short
    assert header_size(b"\xff\xd8\xff\xe0\x00") is None


# --- decode(): every path refuses before decoding -------------------------------------------------


def test_huge_png_is_refused_before_decoding(huge: bytes, no_decoding: list[int]) -> None:
    for transform in (GRAY28, ImageTransform(3, 224, 224, resize=256), None):
        with pytest.raises(BadImageError, match=rf"huge.png is {SIDE}x{SIDE} pixels") as err:
            decode(huge, transform, "huge.png")
        assert "--max-pixels" in str(err.value) and "--on-bad-image skip" in str(err.value)
    assert no_decoding == []  # torchvision was never handed the file


def test_pillow_formats_are_checked_before_load(no_decoding: list[int]) -> None:
    """BMP goes through Pillow: its header gives the size; refused before ``load()``, whether
    over our limit only (60 MP) or over Pillow's own bomb limit too (400 MP)."""
    small = _pil_save(np.zeros((2, 2), np.uint8), "L", "BMP")
    for w, h in [(10_000, 6_000), (SIDE, SIDE)]:
        data = bytearray(small)
        data[18:22], data[22:26] = w.to_bytes(4, "little"), h.to_bytes(4, "little")
        with pytest.raises(BadImageError, match=r"huge\.bmp") as err:
            decode(bytes(data), GRAY28, "huge.bmp")
        assert "pixels" in str(err.value) and "--on-bad-image skip" in str(err.value)


def test_limit_is_configurable_and_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    png = encode(np.zeros((28, 28), np.uint8))  # 784 pixels
    assert decode(png, ImageTransform(1, 28, 28, max_pixels=784), "a.png").shape == (1, 28, 28)
    with pytest.raises(BadImageError, match="over the 783-pixel limit"):
        decode(png, ImageTransform(1, 28, 28, max_pixels=783), "a.png")
    assert decode(png, ImageTransform(1, 28, 28, max_pixels=0), "a.png").shape == (1, 28, 28)
    with pytest.raises(BadImageError, match="over the 100-pixel limit"):
        decode(png, None, "a.png", max_pixels=100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "500")
    assert ImageTransform(1, 28, 28).max_pixels == 500
    with pytest.raises(BadImageError, match="over the 500-pixel limit"):
        decode(png, None, "a.png")  # no transform: the environment's limit
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MAX_PIXELS_ENV}='lots' is not a pixel count"):
        ImageTransform(1, 28, 28)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    with pytest.raises(ConfigError, match="max_pixels must be 0"):
        ImageTransform(1, 28, 28, max_pixels=-1)


def test_default_limit_keeps_the_recorded_transform() -> None:
    """Jobs fingerprinted before the limit existed still match: the default is not recorded."""
    assert "max_pixels" not in GRAY28.record()
    assert ImageTransform(1, 28, 28, max_pixels=10).record()["max_pixels"] == 10
    assert ImageTransform.for_input_shape([1, 28, 28]).max_pixels == DEFAULT_MAX_PIXELS
    assert ImageTransform.for_input_shape([1, 28, 28], max_pixels=7).max_pixels == 7


def test_parser_copies_match_the_decoder() -> None:
    assert embed_cli.DEFAULT_MAX_PIXELS == decode_module.DEFAULT_MAX_PIXELS
    assert embed_cli.MAX_PIXELS_ENV == decode_module.MAX_PIXELS_ENV


# --- sources and the backfill lookup ---------------------------------------------------------


def test_tar_shard_member_is_refused(tmp_path: Path, huge: bytes, no_decoding) -> None:
    shard = tmp_path / "train-000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, data in [("a", encode(np.zeros((28, 28), np.uint8))), ("b", huge)]:
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = open_source(str(shard))
    items = list(source.items())
    assert source.load(items[0], GRAY28).shape == (1, 28, 28)
    with pytest.raises(BadImageError, match=f"{SIDE}x{SIDE} pixels"):
        source.load(items[1], GRAY28)


def test_backfill_image_lookup_is_refused(tmp_path: Path, huge: bytes, no_decoding) -> None:
    (tmp_path / "huge.png").write_bytes(huge)
    images = ItemImages(GRAY28)
    with pytest.raises(BadImageError, match=rf"item 'x' .*{SIDE}x{SIDE} pixels"):
        images.load(["x"], [str(tmp_path / "huge.png")])


# --- fct embed ----------------------------------------------------------------------------------


def test_fct_embed_refuses_or_skips_a_huge_image(
    tmp_path: Path, huge: bytes, no_decoding, monkeypatch, capsys
) -> None:
    images = tmp_path / "flat"
    write_flat(images, 6)
    (images / "00003.png").write_bytes(huge)
    _no_registry(monkeypatch)
    assert main(_argv(images, tmp_path / "fail")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"00003.png is {SIDE}x{SIDE} pixels" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "fail" / "manifest.json").exists()

    out = tmp_path / "skip"
    assert main(_argv(images, out, "--on-bad-image", "skip")) == 0
    skipped = [json.loads(line) for line in (out / SKIPPED_REPORT).read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["00003.png"] and "pixels" in skipped[0]["reason"]
    assert json.loads((out / "manifest.json").read_text())["shards"][0]["rows"] == 4  # 5 + 1 rows
    assert all(n < len(huge) for n in no_decoding)  # only the small files were decoded


def test_fct_embed_max_pixels_flag_and_env(tmp_path: Path, monkeypatch, capsys) -> None:
    images = tmp_path / "flat"
    write_flat(images, 3)  # 28x28 = 784 pixels each
    _no_registry(monkeypatch)
    assert main(_argv(images, tmp_path / "a", "--max-pixels", "783")) == 2
    assert "over the 783-pixel limit" in capsys.readouterr().err
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    assert main(_argv(images, tmp_path / "b")) == 2
    assert "over the 100-pixel limit" in capsys.readouterr().err
    assert main(_argv(images, tmp_path / "c", "--max-pixels", "0")) == 0  # the flag wins
    assert main(_argv(images, tmp_path / "d", "--max-pixels", "-3")) == 2
    assert "--max-pixels must be 0 (no limit) or a pixel count" in capsys.readouterr().err
    (tmp_path / "p.json").write_text("{}")
    plan = ["backfill", "run", "--plan", str(tmp_path / "p.json")]
    assert main([*plan, "--max-pixels", "-3"]) == 2
    assert "--max-pixels must be 0 (no limit) or a pixel count" in capsys.readouterr().err
