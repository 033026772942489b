"""Add side-info to a gallery indexed without it (``fct gallery add-side-info``).

A deployment adopted as it runs has a gallery of embeddings and no side-info: it can be upgraded
only through chains that read none (``fct-no-side-info``), which close less of the gap to the
new version. This job reads each row's image once more (the ``source_uri`` ``fct embed``
recorded) with the small side-info extractor the version is linked to, copies the row's
embedding as it is (the backbone is not run), and writes a new gallery whose rows carry
side-info, so later upgrades can use the chains that read it.

It is the indexing job of :mod:`fct_registry.gallery.embed_job` over a source whose items are
the gallery's rows (:class:`GalleryRows`) with the embeddings taken from the gallery
(:class:`GalleryEmbeddings`): the same shards, markers, lease, kill-and-resume and
``on_bad_image`` policy as ``fct embed``; the input gallery is never modified.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

import numpy as np
import torch

from fct_registry.data.base_image_source import ImageSource, Item
from fct_registry.data.decode import BadImageError, ImageTransform
from fct_registry.data.tar_shards import TarMembers
from fct_registry.errors import DataError
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.embed import model_input, transform_from
from fct_registry.gallery.embed_job import EmbedModels, EmbedReport, WriteOptions, embed_source
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.indexed_with import models_for
from fct_registry.gallery.reader import Gallery
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.flavor import load_model
from fct_registry.registry.refs import VersionRef
from fct_registry.storage import Storage, open_storage

SOURCE_KIND = "gallery"


class GalleryRows(ImageSource):
    """The rows of a gallery as an image source: item ``row`` is the row's position in the
    gallery, ``uri`` the image it was indexed from (a file or object, ``shard.tar#member`` or
    ``split.safetensors#row``, as ``fct embed`` records them)."""

    kind = SOURCE_KIND

    def __init__(self, gallery: Gallery) -> None:
        self.gallery, self.uri = gallery, gallery.uri
        with gallery.shard(gallery.manifest.shards[0]) as reader:
            names = reader.schema.names
        if gallery_schema.SOURCE_URI not in names:
            raise GalleryError(
                f"{gallery.uri} records no {gallery_schema.SOURCE_URI} per row, so its images "
                "cannot be found again; re-index the images with `fct embed` (it records them, and "
                "stores side-info)"
            )
        self._labels = gallery_schema.LABEL in names
        self.classes = gallery.manifest.classes
        self._tars = TarMembers()  # per process: member offsets

    @property
    def has_labels(self) -> bool:
        return self._labels

    def items(self) -> Iterator[Item]:
        columns = [gallery_schema.ID, gallery_schema.SOURCE_URI] + (
            [gallery_schema.LABEL] if self._labels else []
        )
        row = 0
        for batch in self.gallery.batches(65_536, columns):
            data = batch.to_pydict()
            labels = data.get(gallery_schema.LABEL) or [None] * batch.num_rows
            for item_id, uri, label in zip(
                data[gallery_schema.ID], data[gallery_schema.SOURCE_URI], labels, strict=True
            ):
                yield Item(str(item_id), uri or "", label, row=row)
                row += 1

    def describe(self) -> dict[str, object]:
        return super().describe() | {"manifest_sha256": self.gallery.manifest_sha256}

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers and Ray: no caches
        return self.__dict__ | {"_tars": TarMembers()}

    def load_views(
        self, item: Item, transforms: Sequence[ImageTransform | None]
    ) -> tuple[torch.Tensor, ...]:
        base, _, fragment = item.uri.rpartition("#")
        if base.endswith(".safetensors") and fragment.isdigit():
            return tuple(self._tensor_row(item, base, int(fragment), t) for t in transforms)
        return super().load_views(item, transforms)  # read() refuses a row without a URI

    def read(self, item: Item) -> bytes:
        if not item.uri:
            raise DataError(f"row {item.id!r} records no source image; re-index it with fct embed")
        base, _, member = item.uri.rpartition("#")
        try:
            if base.endswith(".tar") and member:
                return self._tars.read(base, member)
            folder, _, name = item.uri.rpartition("/")
            return open_storage(folder or ".").read_bytes(name)
        except DataError as exc:
            raise DataError(
                f"the image of row {item.id!r} ({item.uri}) cannot be read: {exc}"
            ) from None

    def _tensor_row(
        self, item: Item, path: str, row: int, transform: ImageTransform | None
    ) -> torch.Tensor:
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                images = f.get_slice("images")
                if row >= images.get_shape()[0]:
                    raise DataError(f"{path} has no row {row}")
                image = images[row : row + 1][0]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"the image of row {item.id!r} ({item.uri}) cannot be read: {exc}"
            ) from None
        if transform is not None and tuple(image.shape) != transform.shape:
            raise BadImageError(
                f"{item.uri} is {list(image.shape)} but the side-info extractor reads "
                f"{list(transform.shape)}"
            )
        return image


class GalleryEmbeddings:
    """The embedding column of a gallery by row number, one shard in memory at a time (rows
    are asked for in order); checksums verified as each shard is read."""

    def __init__(self, gallery: Gallery) -> None:
        self.uri, self.key = gallery.uri, gallery.manifest_sha256
        self.dim = gallery.manifest.shards[0].embedding_dim
        self._shards = gallery.manifest.shards
        self._starts = list(np.cumsum([0] + [s.rows for s in self._shards[:-1]]))
        self._gallery: Gallery | None = gallery
        self._cached: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_gallery": None, "_cached": None}

    def take(self, rows: Sequence[int]) -> np.ndarray:
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for i, row in enumerate(rows):
            shard = bisect.bisect_right(self._starts, row) - 1
            out[i] = self._shard(shard)[row - self._starts[shard]]
        return out

    def _shard(self, index: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != index:
            if self._gallery is None:
                self._gallery = Gallery.open(self.uri)
            info = self._shards[index]
            with self._gallery.shard(info) as reader:
                parts = [
                    gallery_schema.vectors(
                        b, gallery_schema.EMBEDDING, f"{self.uri}/{info.path}", dim=self.dim
                    )
                    for b in reader.batches(65_536, [gallery_schema.EMBEDDING])
                ]
            self._cached = (index, np.concatenate(parts) if parts else np.empty((0, self.dim)))
        return self._cached[1]


@dataclass(frozen=True)
class SideInfoAdded:
    gallery: str
    family: str
    version: int
    side_info_ref: str
    side_info_uri: str


def add_side_info(
    client: Any,
    gallery_uri: str,
    storage: Storage,
    *,
    side_info: str | None = None,
    **write: Unpack[WriteOptions],
) -> tuple[EmbedReport, SideInfoAdded]:
    """Write into ``storage`` the gallery at ``gallery_uri`` with side-info added (module
    docstring). ``side_info``: the extractor (``<family>-side-info/<n>``); default: the one
    the gallery's version is linked to in the registry (``fct.side_info`` tag)."""
    gallery = Gallery.open(gallery_uri)
    if storage.uri.rstrip("/") == gallery.uri.rstrip("/"):
        raise GalleryError(
            f"--out is the gallery itself ({gallery.uri}); write to a new location (the "
            "gallery being served is never modified)"
        )
    gallery.check_usable()
    manifest = gallery.manifest
    stored = sorted({s for _, s in manifest.groups if s})
    if stored:
        raise GalleryError(
            f"{gallery.uri} already stores side-info ({', '.join(stored)}); nothing to add "
            "(upgrade it with `fct upgrade`)"
        )
    versions = sorted(manifest.versions)
    if len(versions) != 1:
        raise GalleryError(
            f"{gallery.uri} holds rows of versions {versions}; add side-info to a gallery of "
            "one version (upgrade it to one version first, or split it)"
        )
    family, version = manifest.family, versions[0]
    side_ref, side_uri = _extractor(client, family, version, side_info)
    transform = _transform(manifest.provenance, side_uri)
    models = EmbedModels(
        family,
        version,
        None,
        load_model(side_uri),
        side_ref,
        key=f"{gallery.manifest_sha256} {side_uri}",
        stored=GalleryEmbeddings(gallery),
    )
    report = embed_source(
        GalleryRows(gallery),
        storage,
        models,
        transform,
        **write,
    )
    return report, SideInfoAdded(gallery.uri, family, version, side_ref, side_uri)


def _extractor(client: Any, family: str, version: int, given: str | None) -> tuple[str, str]:
    """``(reference, models:/ URI)`` of the side-info extractor to index with."""
    if given is None:
        found = models_for(client, VersionRef(family, version=version))
        if found.side_info_ref is None or found.side_info_uri is None:
            raise GalleryError(
                f"{family}@{version} has no side-info extractor linked (fct.side_info tag); "
                f"name one with --side-info {fct_tags.side_info_model_name(family)}/N"
            )
        return found.side_info_ref, found.side_info_uri
    try:
        name, number = fct_tags.parse_model_ref(given)
    except ValueError:
        name, number = "", 0
    if name != fct_tags.side_info_model_name(family):
        raise GalleryError(
            f"--side-info {given} is not an extractor of {family}; use "
            f"{fct_tags.side_info_model_name(family)}/N"
        )
    return given, f"models:/{name}/{number}"


def _transform(provenance: dict[str, Any] | None, side_uri: str) -> ImageTransform:
    """An external extractor's own preprocessing (:func:`transform_from`: the pixels its
    side-info was computed from in the pipeline); for a trained one, the preprocessing the
    gallery was indexed with (its provenance) at the extractor's input shape, else its
    defaults."""
    shape, preprocess = model_input(side_uri)
    if preprocess is not None:
        return transform_from(shape, preprocess)
    recorded = (provenance or {}).get("transform")
    if isinstance(recorded, dict) and [
        recorded.get("channels"),
        recorded.get("height"),
        recorded.get("width"),
    ] == list(shape):
        try:
            return ImageTransform(**recorded)
        except TypeError:
            pass
    return ImageTransform.for_input_shape(shape)
