"""Decode one image file into the uint8 ``[C, H, W]`` tensor a family version reads.

:class:`ImageTransform` is what a version expects (channels and input size, from its registered
``input_shape``) plus how to get there: resize the shorter side, then centre-crop. JPEG and 8-bit
PNG files are decoded by ``torchvision.io`` (libjpeg-turbo/libpng: about 4x faster than Pillow on
small images) and resized with torch's antialiased bilinear filter (PIL's filter); everything
else, and every file torchvision refuses, goes through Pillow (JPEG ``draft`` mode decodes big
JPEGs at a reduced scale), whose errors say what is wrong. Both paths convert colour the same
way (ITU-R 601 luma with Pillow's integer rounding). Every way an input can be unusable raises
:class:`BadImageError`, whose message names the item and the fix; the loaders hand these to the
``on_bad_image`` policy instead of letting them escape a worker.

Pixel limit: a few hundred KB of PNG can declare 20000x20000 pixels and take gigabytes to decode
(torchvision has no guard; Pillow's ``MAX_IMAGE_PIXELS`` covers only Pillow). So width x height
is read from the file's header first (PNG's IHDR and JPEG's SOF here, Pillow's lazy ``open`` for
the rest) and an image over ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, or the
``FCT_MAX_PIXELS`` environment variable; ``--max-pixels`` on the commands) is a bad image before
a pixel is decoded.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from fct_registry.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)  # fmt: skip
"""Files with these suffixes (any case) are images; other files are ignored by folder sources."""

# torchvision 0.29 (pinned with torch) deprecates its image decoders in favour of TorchCodec and
# warns on every call; they are the fast path here until the pin moves.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
)

ColorPolicy = Literal["convert", "strict"]
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"RIFF", "WEBP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}

DEFAULT_MAX_PIXELS = 50_000_000
"""Width x height above which an image is refused unread (50 MP: a 7071x7071 image, ~150 MB of
RGB pixels once decoded); 0 means no limit."""
MAX_PIXELS_ENV = "FCT_MAX_PIXELS"
"""Environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (commands' ``--max-pixels``
overrides both)."""


def default_max_pixels() -> int:
    """The pixel limit when none is given: ``$FCT_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a pixel count; set it to a whole number such as "
            f"{DEFAULT_MAX_PIXELS} (0: no limit), or unset it"
        )
    return value


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


class BadImageError(DataError):
    """One input cannot be used: unreadable, not an image, corrupt, wrong colour or too small."""


@dataclass(frozen=True)
class ImageTransform:
    """From a decoded image to the version's input: ``channels`` x ``height`` x ``width``.

    * ``resize``: target of the shorter side before cropping (``None``: no resizing). Images are
      only enlarged with ``upscale``; otherwise one smaller than the crop is a bad image.
    * crop: the centre ``height`` x ``width`` window.
    * ``color``: ``convert`` turns grayscale into RGB (or RGB into grayscale, ITU-R 601 luma)
      when the image has other channels than the version; ``strict`` refuses such images.
    * ``max_pixels``: an image whose header declares more pixels (width x height) is a bad image,
      refused before decoding (0: no limit; default: :func:`default_max_pixels`).
    """

    channels: int
    height: int
    width: int
    resize: int | None = None
    upscale: bool = False
    color: ColorPolicy = "convert"
    max_pixels: int = field(default_factory=default_max_pixels)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"images have 1 or 3 channels, got {self.channels}")
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"crop size must be positive, got {self.height}x{self.width}")
        if self.resize is not None and self.resize < max(self.height, self.width):
            raise ConfigError(
                f"resize {self.resize} is smaller than the {self.height}x{self.width} crop; "
                f"set resize to at least {max(self.height, self.width)}"
            )
        if self.color not in ("convert", "strict"):
            raise ConfigError(f"color must be 'convert' or 'strict', got {self.color!r}")
        if self.max_pixels < 0:
            raise ConfigError(
                f"max_pixels must be 0 (no limit) or more, got {self.max_pixels}; pass a "
                f"pixel count such as {DEFAULT_MAX_PIXELS}"
            )

    @classmethod
    def for_input_shape(
        cls,
        input_shape: list[int] | tuple[int, ...],
        *,
        resize: int | None = -1,
        upscale: bool = False,
        color: ColorPolicy = "convert",
        max_pixels: int | None = None,
    ) -> ImageTransform:
        """The transform for a model whose spec says ``input_shape = [C, H, W]``; ``resize=-1``
        (default) resizes the shorter side to the crop's longer side, as at training time;
        ``max_pixels=None``: :func:`default_max_pixels`."""
        c, h, w = (int(v) for v in input_shape)
        resize = max(h, w) if resize == -1 else resize
        if max_pixels is None:
            return cls(c, h, w, resize, upscale, color)
        return cls(c, h, w, resize, upscale, color, max_pixels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def record(self) -> dict[str, object]:
        """What a gallery's provenance records (and a resumed job must match). ``max_pixels``
        is recorded only when it is not the default, so jobs and galleries fingerprinted before
        the limit existed still match."""
        record: dict[str, object] = {
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "resize": self.resize,
            "upscale": self.upscale,
            "color": self.color,
        }
        if self.max_pixels != DEFAULT_MAX_PIXELS:
            record["max_pixels"] = self.max_pixels
        return record


def decode(
    data: bytes, transform: ImageTransform | None, what: str, *, max_pixels: int | None = None
) -> torch.Tensor:
    """``data`` (an encoded image file) as uint8 ``[C, H, W]`` after ``transform`` (``None``:
    at its own size, grayscale as 1 channel and anything else as RGB).

    ``max_pixels``: default ``transform.max_pixels``, or :func:`default_max_pixels` without a
    transform; the header's width x height is checked against it before anything is decoded.
    Raises :class:`BadImageError` naming ``what`` (the item's id or URI) and the fix.
    """
    from PIL import Image, UnidentifiedImageError

    if max_pixels is None:
        max_pixels = transform.max_pixels if transform is not None else default_max_pixels()
    size = header_size(data)
    if size is None and data[:3] in (b"\xff\xd8\xff", b"\x89PN"):
        size = _pillow_size(data)  # an odd JPEG/PNG header: ask Pillow (still no decoding)
    if size is not None:
        check_pixels(size, max_pixels, what)
        if transform is not None:  # torchvision only with a header read: its decoder has no guard
            fast = _decode_torchvision(data, transform, what)
            if fast is not None:
                return fast
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:  # beyond Pillow's hard limit (2x its own)
        raise BadImageError(
            f"{what} declares too many pixels for Pillow to open ({exc}); shrink the image, "
            "or pass --on-bad-image skip to leave such images out"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        known = next((fmt for sig, fmt in _SIGNATURES if data.startswith(sig)), None)
        if known:  # the header says what it is, but Pillow cannot parse it: cut short or damaged
            raise BadImageError(
                f"{what} is a corrupt or truncated {known} file ({len(data)} bytes); "
                "re-export or re-download it, or remove it"
            ) from None
        head = data[:16]
        hint = "an empty file" if not data else f"starts with {head!r}"
        raise BadImageError(
            f"{what} is not an image Pillow can read ({hint}); remove it, or "
            "re-export it as JPEG or PNG"
        ) from None
    check_pixels(img.size, max_pixels, what)  # before load(): nothing decoded yet
    try:
        if transform is not None and transform.resize is not None and img.format == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 scale when that still covers the resize target.
            w, h = img.size
            scale = transform.resize / min(w, h)
            if scale <= 0.5:
                img.draft(img.mode, (max(1, int(w * scale)), max(1, int(h * scale))))
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow: truncated/corrupt data
        raise BadImageError(
            f"{what} is a corrupt or truncated {img.format or 'image'} file ({exc}); "
            "re-export or re-download it, or remove it"
        ) from None
    if transform is None:
        native = ImageTransform(1 if img.mode in _GRAY_MODES else 3, 1, 1)
        img = _to_channels(img, native, what)
    else:
        img = _to_channels(img, transform, what)
        img = _resize(img, transform, what)
    array = torch.from_numpy(np.array(img))  # a writable copy, owned by the tensor
    if array.ndim == 2:
        return array.unsqueeze(0)
    return array.permute(2, 0, 1).contiguous()


def check_pixels(size: tuple[int, int], max_pixels: int, what: str) -> None:
    """Refuse a ``(width, height)`` over ``max_pixels`` (0: no limit) as a bad image."""
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise BadImageError(
            f"{what} is {w}x{h} pixels ({w * h / 1e6:.1f} MP), over the {max_pixels:,}-pixel "
            f"limit (checked before decoding); shrink it, raise the limit (--max-pixels N or "
            f"{MAX_PIXELS_ENV}=N, 0: none), or pass --on-bad-image skip to leave such images out"
        )


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG or JPEG file from its header (PNG's IHDR, the JPEG frame
    header after any APP/EXIF segments), without decoding; ``None`` for other formats or a
    header that cannot be parsed (those files go through Pillow, which reads its own header)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None  # not at a marker: a damaged file, for Pillow to judge
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in _JPEG_SOF:
            if at + 9 > end:
                return None
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return width, height
        if marker in (0xD9, 0xDA):  # end of image or scan data before a frame header: damaged
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _pillow_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from Pillow's header parse; ``None`` when it cannot tell."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data)).size
    except Exception:  # any failure: the Pillow path reports it properly
        return None


_KINDS = {1: "grayscale (1 channel)", 3: "colour (3 channels)"}


def _refuse_colour(what: str, have: int, mode: str, transform: ImageTransform) -> BadImageError:
    return BadImageError(
        f"{what} is {_KINDS[have]} ({mode}) but the model reads "
        f"{_KINDS[transform.channels]} images; convert it, or pass --color convert "
        f"(color: convert) to convert such images automatically"
    )


def _decode_torchvision(data: bytes, transform: ImageTransform, what: str) -> torch.Tensor | None:
    """JPEG/8-bit PNG through torchvision.io; ``None``: leave this file to Pillow."""
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    if not (is_jpeg or data[:8] == b"\x89PNG\r\n\x1a\n"):
        return None
    if is_jpeg and b"\xff\xd9" not in data[-64:]:
        return None  # no end-of-image marker: libjpeg would pad a truncated file silently
    from torchvision.io import ImageReadMode, decode_image

    try:
        decoded = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED
        )
    except RuntimeError:
        return None
    if decoded.dtype != torch.uint8 or decoded.ndim != 3 or decoded.shape[0] not in (1, 2, 3, 4):
        return None
    # Small images: NumPy's per-call cost is a fraction of torch's; the steps are views.
    img = decoded.numpy()
    have = 1 if img.shape[0] <= 2 else 3
    if have != transform.channels and transform.color == "strict":
        raise _refuse_colour(what, have, ("L", "LA", "RGB", "RGBA")[img.shape[0] - 1], transform)
    img = img[:1] if have == 1 else img[:3]  # alpha is dropped, as Pillow's convert does
    if transform.channels == 1 and have == 3:
        r, g, b = img.astype(np.int32)
        img = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[None]
    elif transform.channels == 3 and have == 1:
        img = np.broadcast_to(img, (3, *img.shape[1:]))
    h, w = int(img.shape[1]), int(img.shape[2])
    if transform.resize is not None and (transform.upscale or min(w, h) > transform.resize):
        scale = transform.resize / min(w, h)
        size = (max(transform.height, round(h * scale)), max(transform.width, round(w * scale)))
        if size != (h, w):
            from torchvision.transforms.v2 import InterpolationMode
            from torchvision.transforms.v2.functional import resize

            tensor = torch.from_numpy(np.ascontiguousarray(img))
            img = resize(tensor, list(size), InterpolationMode.BILINEAR, antialias=True).numpy()
            h, w = size
    if w < transform.width or h < transform.height:
        raise _too_small(what, w, h, transform)
    top, left = (h - transform.height) // 2, (w - transform.width) // 2
    crop = img[:, top : top + transform.height, left : left + transform.width]
    return torch.from_numpy(np.array(crop, copy=True, order="C"))


def _too_small(what: str, w: int, h: int, transform: ImageTransform) -> BadImageError:
    return BadImageError(
        f"{what} is {w}x{h}, smaller than the {transform.width}x{transform.height} crop the "
        "model reads; pass --upscale (upscale: true) to enlarge small images, or "
        "--on-bad-image skip to leave them out"
    )


def _to_channels(img, transform: ImageTransform, what: str):
    gray = img.mode in _GRAY_MODES
    if img.mode == "P":  # palette: grayscale only if every palette entry is a gray
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        gray = False
    have = 1 if gray else 3
    if have != transform.channels and transform.color == "strict":
        raise _refuse_colour(what, have, img.mode, transform)
    if transform.channels == 1:
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit/float gray to 8-bit
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            from PIL import Image

            return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
        return img if img.mode == "L" else img.convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def _resize(img, transform: ImageTransform, what: str):
    from PIL import Image

    w, h = img.size
    if transform.resize is not None and (transform.upscale or min(w, h) > transform.resize):
        scale = transform.resize / min(w, h)
        size = (max(transform.width, round(w * scale)), max(transform.height, round(h * scale)))
        if size != (w, h):
            img = img.resize(size, Image.BILINEAR, reducing_gap=None)
        w, h = img.size
    if w < transform.width or h < transform.height:
        raise _too_small(what, w, h, transform)
    left, top = (w - transform.width) // 2, (h - transform.height) // 2
    if (w, h) != (transform.width, transform.height):
        img = img.crop((left, top, left + transform.width, top + transform.height))
    return img
