"""Where a backfill finds an item's image: the row's ``source_uri``, the one lookup every backfill
goes through.

``fct embed --images`` records in every gallery row where its image was read, and an upgrade
carries that column through unchanged. :class:`ItemImages` reads it back in any of the forms the
image sources of :mod:`fct_registry.data.image_sources` write:

* a file: a local path or ``s3://bucket/key`` (folders, ImageFolder trees, manifests);
* ``SHARD.tar#MEMBER``: a member of a WebDataset-style tar shard, local or on S3. Each shard's
  member offsets are indexed once (a local shard by seeking over its headers, an S3 shard in one
  streamed pass), then members are read by range;
* ``FILE.safetensors#ROW``: a row of a prepared split (uint8 ``[N, C, H, W]``), read by slice.

Files and tar members are decoded with the same :class:`~fct_registry.data.decode.ImageTransform`
as ``fct embed`` (resize the shorter side, centre-crop, colour conversion), so a backfilled row
equals what embedding the image with the new version gives. Rows without a ``source_uri``
(galleries written from arrays, or before the column existed) fall back to a safetensors file
(``--images FILE``) whose row number ends the item id (``test-0000042`` is row 42), as the
safetensors image source names rows. Every failure names the item's id and its URI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from fct_registry.data.decode import BadImageError, ImageTransform, decode
from fct_registry.data.tar_shards import TarMembers
from fct_registry.errors import DataError
from fct_registry.storage import Storage, open_storage

_ROW = re.compile(r"(\d+)$")
_TAR = ".tar#"
_SAFETENSORS = ".safetensors#"


def split_uri(uri: str) -> tuple[str, str, str]:
    """``(kind, container, name)``: ``("safetensors", FILE, ROW)``, ``("tar", SHARD, MEMBER)``
    or ``("file", FOLDER, NAME)``."""
    for marker, kind in ((_SAFETENSORS, "safetensors"), (_TAR, "tar")):
        at = uri.find(marker)
        if at >= 0:
            cut = at + len(marker) - 1
            return kind, uri[:cut], uri[cut + 1 :]
    folder, _, name = uri.rpartition("/")
    return "file", folder if folder or not uri.startswith("/") else "/", name


class ItemImages:
    """Loads items' images as uint8 ``[N, C, H, W]`` from their ``source_uri``.

    ``transform``: what the new version reads (from its registered input shape); ``None``
    leaves images at their own size (safetensors rows only, in practice). ``fallback``: the
    safetensors file for rows without a ``source_uri``. One instance caches S3/local locations
    and tar indexes (:class:`~fct_registry.data.tar_shards.TarMembers`), so a run indexes each
    tar shard once.
    """

    def __init__(self, transform: ImageTransform | None, fallback: str | None = None) -> None:
        self.transform = transform
        self.fallback = str(fallback) if fallback else None
        self._locations: dict[str, Storage] = {}
        self._tars = TarMembers()

    # -- checks before any work ----------------------------------------------------------------

    def check(self, ids: Sequence[str], uris: Sequence[str | None]) -> None:
        """Fail before anything is written when a row cannot even be looked up: no
        ``source_uri`` and no fallback, an id without a row number, or a file to decode with
        no transform (reading and decoding errors come later, per item)."""
        for item, uri in zip(ids, uris, strict=True):
            if uri is None:
                if self.fallback is None:
                    raise DataError(
                        f"item {item!r} has no source_uri (the gallery was not indexed with "
                        "`fct embed --images`); pass --images FILE, the safetensors file it was "
                        "indexed from"
                    )
                _row_of_id(item, self.fallback)
            elif split_uri(uri)[0] != "safetensors" and self.transform is None:
                raise DataError(
                    f"item {item!r} comes from the image file {uri}, but the new version "
                    "records no input shape [C, H, W] to decode it to; register it with "
                    "`fct register` (or give --model a spec.json with input_shape)"
                )

    # -- loading -------------------------------------------------------------------------------

    def load(self, ids: Sequence[str], uris: Sequence[str | None]) -> torch.Tensor:
        """The items' images, in the order of ``ids`` (``uris[i]`` is ``ids[i]``'s)."""
        self.check(ids, uris)
        images: list[torch.Tensor | None] = [None] * len(ids)
        by_file: dict[str, list[tuple[int, int]]] = {}  # safetensors file -> (position, row)
        for k, (item, uri) in enumerate(zip(ids, uris, strict=True)):
            if uri is None:
                assert self.fallback is not None
                by_file.setdefault(self.fallback, []).append((k, _row_of_id(item, self.fallback)))
                continue
            kind, container, name = split_uri(uri)
            if kind == "safetensors":
                if not name.isdigit():
                    raise DataError(f"item {item!r}: {uri} does not end in a row number")
                by_file.setdefault(container, []).append((k, int(name)))
            else:
                data = self._read(item, uri, kind, container, name)
                images[k] = decode(data, self.transform, f"item {item!r} ({uri})")
        for path, wanted in by_file.items():
            rows = _safetensors_rows(path, [r for _, r in wanted], ids, [k for k, _ in wanted])
            for (k, _), image in zip(wanted, rows, strict=True):
                images[k] = self._fit(ids[k], path, image)
        if not images:
            shape = self.transform.shape if self.transform else (1, 1, 1)
            return torch.empty((0, *shape), dtype=torch.uint8)
        shapes = {tuple(i.shape) for i in images if i is not None}
        if len(shapes) > 1:
            raise DataError(
                f"the planned items' images have several sizes ({sorted(shapes)}) and no "
                "transform makes them one; the new version must record its input shape"
            )
        return torch.stack([i for i in images if i is not None])

    def _fit(self, item: str, path: str, image: torch.Tensor) -> torch.Tensor:
        if self.transform is None or tuple(image.shape) == self.transform.shape:
            return image
        raise DataError(
            f"item {item!r}: {path} holds {list(image.shape)} images but the new version reads "
            f"{list(self.transform.shape)}; prepare the data at the model's size"
        )

    def _location(self, folder: str) -> Storage:
        if folder not in self._locations:
            self._locations[folder] = open_storage(folder or ".")
        return self._locations[folder]

    def _read(self, item: str, uri: str, kind: str, container: str, name: str) -> bytes:
        try:
            if kind == "file":
                return self._location(container).read_bytes(name)
            return self._tars.read(container, name)
        except BadImageError:
            raise
        except DataError as exc:
            raise DataError(
                f"cannot read the image of item {item!r} at {uri}: {exc}; restore it, or "
                "re-plan without this item"
            ) from None


def _row_of_id(item: str, path: str) -> int:
    m = _ROW.search(item)
    if m is None:
        raise DataError(
            f"item id {item!r} has no source_uri and does not end in a row number of "
            f"{Path(path).name}; galleries indexed from a safetensors file name rows "
            "<prefix><row>"
        )
    return int(m.group(1))


def _safetensors_rows(
    source: str, rows: list[int], ids: Sequence[str], positions: list[int]
) -> torch.Tensor:
    """uint8 rows ``rows`` of ``source``'s ``images`` (one contiguous read, then a gather)."""
    from safetensors import safe_open

    path = Path(source)
    first = ids[positions[0]] if positions else "?"
    if not path.is_file():
        raise DataError(
            f"cannot read the image of item {first!r}: {path} not found; pass the safetensors "
            "file the gallery was indexed from (--images FILE, e.g. outputs/data/test.safetensors)"
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            if "images" not in set(fh.keys()):
                raise DataError(f"{path} has no 'images' tensor; store uint8 [N, C, H, W] images")
            images = fh.get_slice("images")
            n = images.get_shape()[0]
            bad = [(r, ids[k]) for r, k in zip(rows, positions, strict=True) if r >= n]
            if bad:
                raise DataError(
                    f"item {bad[0][1]!r} is row {bad[0][0]}, beyond the {n} images of {path}; "
                    "the gallery was indexed from another file: pass that one"
                )
            lo, hi = min(rows), max(rows) + 1
            block = images[lo:hi]
    except DataError:
        raise
    except Exception as exc:  # SafetensorError: not a safetensors file
        raise DataError(
            f"cannot read {path} as safetensors ({type(exc).__name__}: {exc}); pass the "
            "safetensors file the gallery was indexed from"
        ) from None
    return block[torch.tensor(rows) - lo].contiguous()


def item_images(
    ids: Sequence[str],
    source: str | Path | None = None,
    uris: Sequence[str | None] | None = None,
    transform: ImageTransform | None = None,
) -> torch.Tensor:
    """uint8 images ``[len(ids), C, H, W]`` of the items ``ids``, in that order: from their
    ``uris`` (``source_uri`` values; ``None`` entries, or no ``uris``, read ``source``)."""
    reader = ItemImages(transform, str(source) if source else None)
    return reader.load(ids, list(uris) if uris is not None else [None] * len(ids))
