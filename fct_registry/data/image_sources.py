"""Image sources: collections of image files, streamed as ``(id, image, label or None)``.

One registry, :data:`SOURCES`, of named sources, and one factory, :func:`open_source`, that picks
the source from a path or URI:

* ``imagefolder``: ``ROOT/<class>/**/<image>``, local or ``s3://bucket/prefix``; labels are the
  class folders' indices in sorted order (torchvision's ImageFolder convention).
* ``folder``: every image under ``ROOT`` (any depth), no labels.
* ``manifest``: a CSV or Parquet file with columns ``id,path[,label]``; paths are relative to
  the manifest's folder and stay inside it, or absolute (for a local manifest), or ``s3://`` URIs.
* ``tar``: WebDataset-style tar shards (``key.jpg`` + optional ``key.cls`` per sample), local or
  on S3, read front to back once (:mod:`fct_registry.data.tar_shards`).
* ``safetensors``: the pipeline's prepared split (uint8 ``[N, C, H, W]`` held in memory); its
  class names come from the ``info.json`` the prepare stage writes beside it.

A source lists :class:`Item` references in a stable order (ids are the relative paths, the
manifest's ids or the tar keys) without reading images, so listing costs memory per directory or
page, not per collection. Bytes are read and decoded later, in DataLoader workers (see
:mod:`fct_registry.data.loader`). Iterating a source directly decodes in this process.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from fct_registry._files import contained_name
from fct_registry.data.base_image_source import (
    SOURCES,
    ImageSource,
    Item,
    UniqueIds,
    open_root,
)
from fct_registry.data.decode import ImageTransform, is_image_name
from fct_registry.data.tar_shards import TarShardsSource
from fct_registry.errors import DataError
from fct_registry.storage import open_storage

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
_RELATIVE_FIX = (
    "a relative path stays inside the manifest's folder; write the image's absolute path "
    "(or an s3:// URI) instead"
)
_EXT_HINT = (".jpg", ".png", "...")

# --- folders -----------------------------------------------------------------------------------


class _TreeSource(ImageSource):
    """Images found by walking a folder or prefix; ids are their relative paths."""

    def __init__(self, uri: str) -> None:
        self.location, folders, files = open_root(uri)
        self.uri = self.location.uri
        self._check(folders, files)

    def _check(self, folders: list[str], files: list[str]) -> None:
        """Refuse a layout this kind cannot read, before any work (and keep what it names)."""

    def _images(self, sub: str = "", label: int | None = None) -> Iterator[Item]:
        for rel in self.location.walk(sub):
            if is_image_name(rel):
                yield Item(rel, self.location.join(rel), label, rel)


@SOURCES.register("imagefolder")
class ImageFolderSource(_TreeSource):
    """``ROOT/<class>/.../<image>``; label = index of the class folder in sorted order."""

    kind = "imagefolder"

    def _check(self, folders: list[str], files: list[str]) -> None:
        stray = [f for f in files if is_image_name(f)]
        if stray:
            raise DataError(
                f"{self.uri} mixes images at the top ({stray[0]}, ...) with class folders; "
                "an ImageFolder tree keeps every image in a class folder (move them), or read "
                "it as a plain folder without labels (kind: folder)"
            )
        if not folders:
            raise DataError(
                f"{self.uri} has no class folders; an ImageFolder tree is ROOT/<class>/<image>"
            )
        self.classes = tuple(folders)
        for name in self.classes:  # fail before any work, not after hours of embedding
            if next(self._images(name), None) is None:
                raise DataError(
                    f"class folder {self.location.join(name)} has no images; add images or "
                    "remove the folder (every subfolder of the root is a class)"
                )

    has_labels = True

    def items(self) -> Iterator[Item]:
        for label, name in enumerate(self.classes or ()):
            yield from self._images(name, label)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "uri": self.uri, "classes": list(self.classes or ())}


@SOURCES.register("folder")
class FolderSource(_TreeSource):
    """Every image under ``ROOT``, at any depth; ids are the relative paths; no labels."""

    kind = "folder"

    def _check(self, folders: list[str], files: list[str]) -> None:
        if next(self._images(), None) is None:
            raise DataError(
                f"no images under {self.uri} (looked for {', '.join(_EXT_HINT)} files); "
                "point at the folder that holds them"
            )

    has_labels = False

    def items(self) -> Iterator[Item]:
        return self._images()


# --- manifest ----------------------------------------------------------------------------------


@SOURCES.register("manifest")
class ManifestSource(ImageSource):
    """A CSV or Parquet manifest ``id,path[,label]``; paths relative to its folder."""

    kind = "manifest"

    def __init__(self, uri: str) -> None:
        folder, _, name = uri.rstrip("/").rpartition("/")
        self.location = open_storage(folder or ".")
        self.name, self.uri = name, self.location.join(name)
        if not name.endswith((".csv", ".parquet")):
            raise DataError(f"manifest {self.uri} must be a .csv or .parquet file")
        try:
            self.raw = self.location.read_bytes(name)
        except DataError:
            raise DataError(f"manifest {self.uri} does not exist or cannot be read") from None
        header = self._columns()
        missing = [c for c in ("id", "path") if c not in header]
        if missing:
            raise DataError(
                f"manifest {self.uri} lacks column(s) {', '.join(missing)} (has: "
                f"{', '.join(header) or 'none'}); write a header row id,path[,label]"
            )
        self._labels = "label" in header
        if next(self._rows(), None) is None:
            raise DataError(f"manifest {self.uri} lists no images; add rows id,path[,label]")

    def _columns(self) -> list[str]:
        if self.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                return pq.ParquetFile(io.BytesIO(self.raw)).schema_arrow.names
            except Exception as exc:
                raise DataError(f"manifest {self.uri} is not a Parquet file ({exc})") from None
        reader = csv.reader(io.StringIO(self.raw.decode("utf-8-sig", errors="replace")))
        return [c.strip() for c in next(reader, [])]

    def _rows(self) -> Iterator[tuple[int, dict]]:
        if self.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            row = 1
            for batch in pq.ParquetFile(io.BytesIO(self.raw)).iter_batches(batch_size=4096):
                for record in batch.to_pylist():
                    yield row, record
                    row += 1
            return
        text = io.StringIO(self.raw.decode("utf-8-sig", errors="replace"))
        for line, record in enumerate(csv.DictReader(text, skipinitialspace=True), start=2):
            yield line, {k.strip(): v for k, v in record.items() if k is not None}

    @property
    def has_labels(self) -> bool:
        return self._labels

    def items(self) -> Iterator[Item]:
        unique = UniqueIds(self.uri)
        what = "row" if self.name.endswith(".parquet") else "line"
        for line, record in self._rows():
            at = f"{what} {line}"
            item_id, path = record.get("id"), record.get("path")
            if not item_id or not path:
                raise DataError(f"{self.uri} {at}: empty id or path; fill both in or drop the row")
            unique.add(str(item_id), at)
            label = None
            if self._labels:
                raw = record.get("label")
                try:
                    label = int(raw)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise DataError(
                        f"{self.uri} {at}: label {raw!r} is not an integer class id; "
                        "write integer labels (0, 1, ...) or drop the label column"
                    ) from None
            path = str(path)
            if path.startswith("s3://"):
                yield Item(str(item_id), path, label, path)
            elif Path(path).is_absolute():
                if self.uri.startswith("s3://"):  # remote data naming this machine's files
                    raise DataError(
                        f"{self.uri} {at}: path {path!r} is a local file, but the manifest is on "
                        "S3; name images by s3:// URIs or paths relative to the manifest"
                    )
                yield Item(str(item_id), path, label, path)
            else:
                contained_name(path, f"{at} path", where=self.uri, fix=_RELATIVE_FIX)
                yield Item(str(item_id), self.location.join(path), label, path)

    def read(self, item: Item) -> bytes:
        if item.name.startswith("s3://") or Path(item.name).is_absolute():
            folder, _, name = item.name.rpartition("/")
            location = open_storage(folder)
        else:
            location, name = self.location, item.name
        try:
            return location.read_bytes(name)
        except DataError as exc:
            raise DataError(
                f"manifest {self.uri} names {item.uri} (id {item.id!r}), which cannot be read: "
                f"{exc}"
            ) from None


# --- prepared safetensors ----------------------------------------------------------------------


@SOURCES.register("safetensors")
class TensorSource(ImageSource):
    """A safetensors file of uint8 ``images [N, C, H, W]`` (and optionally ``labels``), held in
    memory as today; ids ``<prefix><row:07d>`` (default prefix: the file's stem and a dash)."""

    kind = "safetensors"

    def __init__(self, uri: str, *, id_prefix: str | None = None) -> None:
        from safetensors.torch import load_file

        path = Path(uri)
        if not path.is_file():
            raise DataError(
                f"{path} not found; prepare the data first (`dvc repro prepare`) or pass a "
                "folder, manifest, tar shards or s3:// prefix of images"
            )
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # SafetensorError (not a safetensors file), OSError
            raise DataError(
                f"cannot read {path} as safetensors ({type(exc).__name__}: {exc}); pass a "
                "safetensors file holding uint8 `images` [N, C, H, W], or a folder of images"
            ) from None
        if "images" not in tensors:
            raise DataError(
                f"{path} has no 'images' tensor (has: {', '.join(tensors)}); store uint8 "
                "[N, C, H, W] images under the key 'images'"
            )
        self.images = tensors["images"]
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise DataError(
                f"{path}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{list(self.images.shape)}"
            )
        labels = tensors.get("labels")
        self.labels = None if labels is None else labels.to(torch.int64)
        self.prefix = f"{path.stem}-" if id_prefix is None else id_prefix
        self.uri = str(path.absolute())
        self.classes = _prepared_classes(path.with_name("info.json"), self.labels)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def items(self) -> Iterator[Item]:
        for row in range(len(self.images)):
            label = None if self.labels is None else int(self.labels[row])
            yield Item(f"{self.prefix}{row:07d}", f"{self.uri}#{row}", label, row=row)

    def load_views(
        self, item: Item, transforms: Sequence[ImageTransform | None]
    ) -> tuple[torch.Tensor, ...]:
        image = self.images[item.row]
        for transform in transforms:
            if transform is not None and tuple(image.shape) != transform.shape:
                raise DataError(
                    f"{self.uri} holds {list(image.shape)} images but the model reads "
                    f"{list(transform.shape)}; prepare the data at the model's size"
                )
        return (image,) * len(transforms)

    def read(self, item: Item) -> bytes:
        raise DataError(f"{self.uri}: rows of a safetensors file are tensors, not files")


def _prepared_classes(info: Path, labels: torch.Tensor | None) -> tuple[str, ...] | None:
    """The class names in the prepare stage's ``info.json``, when it names every label; else
    None (the labels stay bare ids: a file beside it may be anything)."""
    if labels is None or not info.is_file():
        return None
    try:
        classes = json.loads(info.read_text()).get("classes")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return None
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        return None
    return tuple(classes)


# --- the factory -------------------------------------------------------------------------------


def detect_kind(uri: str) -> str:
    """The source kind a path or URI holds (see module docstring)."""
    lower = uri.lower().rstrip("/")
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(".tar") or "{" in lower:
        return "tar"
    if lower.endswith((".csv", ".parquet")):
        return "manifest"
    _, folders, files = open_root(uri)
    for name in MANIFEST_NAMES:
        if name in files:
            return "manifest"
    if any(is_image_name(f) for f in files):
        return "folder"
    if files and all(f.endswith(".tar") for f in files) and not folders:
        return "tar"
    return "imagefolder" if folders else "folder"


def open_source(uri: str | Sequence[str], kind: str = "auto", **options: object) -> ImageSource:
    """Open the images at ``uri``: a folder, ``s3://bucket/prefix``, a manifest (``.csv``,
    ``.parquet``), tar shard(s) or a ``.safetensors`` file; ``kind`` forces one of
    :data:`SOURCES` (``auto``: detected). Several URIs are read as tar shards."""
    if not isinstance(uri, str):
        uris = [str(u) for u in uri]
        if len(uris) != 1:
            if kind not in ("auto", "tar"):
                raise DataError(f"several inputs are read as tar shards, not as {kind!r}")
            return SOURCES.build(TarShardsSource.kind, uris=uris)
        uri = uris[0]
    uri = str(uri)
    if uri.lower().endswith((".npy", ".npz")):
        raise DataError(
            f"{uri} is a NumPy file, not images; pass a folder of image files, a manifest, tar "
            "shards, or a .safetensors file holding uint8 `images` [N, C, H, W] (convert with "
            "safetensors.numpy.save_file({'images': array}, 'images.safetensors'))"
        )
    if kind == "auto":
        kind = detect_kind(uri)
    SOURCES.check(kind)
    if kind == "tar":
        return SOURCES.build(TarShardsSource.kind, uris=uri)
    if kind == "manifest" and not uri.lower().endswith((".csv", ".parquet")):
        files = open_storage(uri).children()[1]
        name = next((n for n in MANIFEST_NAMES if n in files), None)
        if name is None:
            raise DataError(f"{uri} holds no {' or '.join(MANIFEST_NAMES)}")
        uri = f"{uri.rstrip('/')}/{name}"
    return SOURCES.build(kind, uri=uri, **options)
