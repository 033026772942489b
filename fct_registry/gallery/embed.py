"""Index images into a gallery: embed them with a family version and its side-info extractor.

FCT's promise rests on what is stored here: with every embedding, the side-info vector of the
same image (from the extractor the version is linked to), so that later upgrades need only the
stored vectors, never the images. :func:`embed_to_gallery` is the pure core (modules in, gallery
out); :func:`index_with_registry` finds both models from a version reference in the MLflow
registry (checksums verified by the ``fct`` flavor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.manifest import Manifest
from fct_registry.gallery.schema import make_batch
from fct_registry.gallery.storage import Storage
from fct_registry.gallery.writer import DEFAULT_ROW_GROUP_ROWS, DEFAULT_SHARD_ROWS, GalleryWriter
from fct_registry.registry import tags as T
from fct_registry.registry.flavor import load_model
from fct_registry.resolver.load import load_graph
from fct_registry.training.embed import embed_images

if TYPE_CHECKING:
    import torch
    from torch import nn

CHUNK_ROWS = 8192
"""Images embedded per step before their rows are handed to the writer (bounds memory)."""


@dataclass(frozen=True)
class Images:
    """Items to index: uint8 images ``[N, C, H, W]``, their ids, and labels when known."""

    images: torch.Tensor
    ids: Sequence[str]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        import torch

        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise GalleryError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{list(self.images.shape)}"
            )
        if len(self.ids) != len(self.images) or (
            self.labels is not None and len(self.labels) != len(self.images)
        ):
            raise GalleryError(
                f"{len(self.images)} images but {len(self.ids)} ids"
                + ("" if self.labels is None else f" and {len(self.labels)} labels")
                + "; pass one per image"
            )
        if len(set(self.ids)) != len(self.ids):
            raise GalleryError("ids must be unique; a search result names items by id")


def load_images(path: Path, *, id_prefix: str | None = None, limit: int | None = None) -> Images:
    """A safetensors file holding ``images`` (uint8 [N, C, H, W]) and optionally ``labels``,
    e.g. the pipeline's ``outputs/data/test.safetensors``. Ids are ``<prefix><row>``."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise GalleryError(
            f"{path} not found; prepare the data first (`dvc repro prepare`) or "
            "pass --images FILE.safetensors"
        )
    tensors = load_file(str(path))
    if "images" not in tensors:
        raise GalleryError(
            f"{path} has no 'images' tensor (has: {', '.join(tensors)}); store "
            "uint8 [N, C, H, W] images under the key 'images'"
        )
    images = tensors["images"][:limit]
    labels = tensors.get("labels")
    prefix = f"{Path(path).stem}-" if id_prefix is None else id_prefix
    ids = [f"{prefix}{i:07d}" for i in range(len(images))]
    return Images(images, ids, None if labels is None else labels[:limit].numpy())


def embed_to_gallery(
    items: Images,
    storage: Storage,
    *,
    family: str,
    version: int,
    model: nn.Module,
    side_info_model: nn.Module | None,
    side_info_ref: str | None,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> Manifest:
    """Embed ``items`` with ``model`` (and ``side_info_model``) and write the gallery.

    ``model`` and ``side_info_model`` take float images in [0, 1] (the flavor's image models do
    their own normalisation). ``side_info_model=None`` writes a gallery without side-info, which
    only chains that read none can upgrade.
    """
    import torch

    if (side_info_model is None) != (side_info_ref is None):
        raise GalleryError("pass both side_info_model and side_info_ref, or neither")
    dev = torch.device(device)
    writer = GalleryWriter(storage, family, shard_rows=shard_rows, row_group_rows=row_group_rows)
    for start in range(0, len(items.images), CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, len(items.images))
        chunk = items.images[start:stop]
        emb = embed_images(model, chunk, dev, batch_size=batch_size).numpy()
        side = (
            None
            if side_info_model is None
            else embed_images(side_info_model, chunk, dev, batch_size=batch_size).numpy()
        )
        writer.write(
            make_batch(
                items.ids[start:stop],
                emb,
                model_version=version,
                side_info=side,
                side_info_version=side_info_ref,
                labels=None if items.labels is None else items.labels[start:stop],
            )
        )
    return writer.close()


@dataclass(frozen=True)
class IndexedWith:
    """Which registered models a gallery was indexed with."""

    family: str
    version: int
    model_uri: str
    side_info_ref: str | None
    side_info_uri: str | None


def models_for(client: Any, ref: Any) -> IndexedWith:
    """Resolve a version reference (``fashion@3``, ``fashion@production``) to the embedding
    model and the side-info extractor its ``fct.side_info`` tag links to."""

    graph = load_graph(client, ref.family)
    version = graph.version_of(ref)
    side_ref = graph.nodes[version].side_info
    side_uri = None
    if side_ref:
        name, side_version = T.parse_model_ref(side_ref)
        side_uri = f"models:/{name}/{side_version}"
    return IndexedWith(ref.family, version, f"models:/{ref.family}/{version}", side_ref, side_uri)


def index_with_registry(
    client: Any,
    ref: Any,
    items: Images,
    storage: Storage,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    without_side_info: bool = False,
) -> tuple[Manifest, IndexedWith]:
    """Load ``ref``'s embedding model and side-info extractor (checksums verified) and index
    ``items``. Uses MLflow's current registry URI for the downloads."""

    found = models_for(client, ref)
    if found.side_info_uri is None and not without_side_info:
        raise GalleryError(
            f"{ref.family}@{found.version} has no side-info extractor linked "
            "(fct.side_info tag), so its gallery could only be upgraded by chains "
            "without side-info; register it with `fct register`, or pass "
            "--without-side-info"
        )
    model = load_model(found.model_uri)
    side_model = None
    side_ref = None
    if not without_side_info:
        side_model = load_model(found.side_info_uri)
        side_ref = found.side_info_ref
    manifest = embed_to_gallery(
        items,
        storage,
        family=found.family,
        version=found.version,
        model=model,
        side_info_model=side_model,
        side_info_ref=side_ref,
        device=device,
        batch_size=batch_size,
        shard_rows=shard_rows,
    )
    return manifest, found
