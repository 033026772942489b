"""Index images into a gallery: embed them with a family version and its side-info extractor.

FCT's promise rests on what is stored here: with every embedding, the side-info vector of the
same image (from the extractor the version is linked to), so that later upgrades need only the
stored vectors, never the images. Images come from any :mod:`fct_registry.data.image_sources`
source (folders, manifests, tar shards, S3, the prepared safetensors split) and are streamed
by the resumable job in :mod:`fct_registry.gallery.embed_job`; :func:`index_with_registry`
finds both models from a version reference in the MLflow registry (checksums verified by the
``fct`` flavor) and derives each model's image transform from its registered input shape (and,
for an external model, its recorded preprocessing): when the side-info extractor reads other
pixels than the version, every image is decoded once for each, so each model sees the pixels
it was trained and registered with.
"""

from __future__ import annotations

from typing import Any, Unpack

from fct_registry.data.base_image_source import ImageSource
from fct_registry.data.decode import ColorPolicy, ImageTransform
from fct_registry.gallery.embed_job import EmbedModels, EmbedReport, WriteOptions, embed_source
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.indexed_with import IndexedWith, models_for
from fct_registry.registry.flavor import FLAVOR_NAME, load_model
from fct_registry.registry.given import refuse_given
from fct_registry.storage import Storage


def model_input(model_uri: str) -> tuple[list[int], dict[str, Any] | None]:
    """``[C, H, W]`` the registered image model reads and, for an external model, its recorded
    preprocessing (resize, crop, mean, std, colour; mean/std are inside its graph), from its
    MLmodel alone."""
    import mlflow

    conf = mlflow.models.get_model_info(model_uri).flavors.get(FLAVOR_NAME, {})
    shape = conf.get("input_shape")
    if not shape or len(shape) != 3:
        raise GalleryError(
            f"{model_uri} records no image input shape ([C, H, W]); register it with "
            "`fct register` (the fct flavor records it)"
        )
    return [int(v) for v in shape], conf.get("preprocess")


def transform_for(
    model_uri: str,
    *,
    resize: int | None = -1,
    upscale: bool = False,
    color: ColorPolicy = "convert",
    max_pixels: int | None = None,
) -> ImageTransform:
    """How images reach the registered image model ``model_uri``: its input shape, shorter side
    to ``resize`` (-1: an external model's recorded resize, else the input size)."""
    return transform_from(
        *model_input(model_uri), resize=resize, upscale=upscale, color=color, max_pixels=max_pixels
    )


def transform_from(
    shape: list[int],
    recorded: dict[str, Any] | None,
    *,
    resize: int | None = -1,
    upscale: bool = False,
    color: ColorPolicy = "convert",
    max_pixels: int | None = None,
) -> ImageTransform:
    """:func:`transform_for` from what :func:`model_input` read."""
    if resize == -1 and recorded is not None:  # an external model's recorded preprocessing
        resize = int(recorded["resize"])
    return ImageTransform.for_input_shape(
        shape, resize=resize, upscale=upscale, color=color, max_pixels=max_pixels
    )


def index_with_registry(
    client: Any,
    ref: Any,
    source: ImageSource,
    storage: Storage,
    *,
    without_side_info: bool = False,
    resize: int | None = -1,
    upscale: bool = False,
    color: ColorPolicy = "convert",
    max_pixels: int | None = None,
    limit: int | None = None,
    runner: Any = None,
    **write: Unpack[WriteOptions],
) -> tuple[EmbedReport, IndexedWith, ImageTransform]:
    """Load ``ref``'s embedding model and side-info extractor (checksums verified) and index
    ``source``: images are resized (shorter side to ``resize``; -1: the model's input size)
    and centre-cropped to each model's input shape (an external model's recorded ``resize``
    when ``resize`` is -1; :func:`transform_for`); an image over ``max_pixels`` (``None``:
    ``$FCT_MAX_PIXELS`` or 50 MP) is a bad image. Uses MLflow's current registry URI. Returns
    the version's transform."""
    found = models_for(client, ref)
    refuse_given(
        f"version {found.version} of {found.family}",
        client.get_model_version(found.family, str(found.version)).tags,
    )
    if found.side_info_uri is None and not without_side_info:
        raise GalleryError(
            f"{ref.family}@{found.version} has no side-info extractor linked "
            "(fct.side_info tag), so its gallery could only be upgraded by chains "
            "without side-info; register it with `fct register`, or pass "
            "--without-side-info"
        )
    decoding = {"resize": resize, "upscale": upscale, "color": color, "max_pixels": max_pixels}
    transform = transform_for(found.model_uri, **decoding)
    model = load_model(found.model_uri)
    side_model = side_ref = side_transform = None
    if not without_side_info:
        side_model = load_model(found.side_info_uri)
        side_ref = found.side_info_ref
        side_transform = transform_for(found.side_info_uri, **decoding)
    models = EmbedModels(
        found.family,
        found.version,
        model,
        side_model,
        side_ref,
        key=f"{found.model_uri} {found.side_info_uri if side_ref else None}",
        side_info_transform=None if side_transform == transform else side_transform,
    )
    report = embed_source(
        source,
        storage,
        models,
        transform,
        limit=limit,
        runner=runner,
        **write,
    )
    return report, found, transform
