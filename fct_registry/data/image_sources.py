"""Image sources: collections of image files, streamed as ``(id, image, label or None)``.

One registry, :data:`SOURCES`, of named sources, and one factory, :func:`open_source`, that picks
the source from a path or URI:

* ``imagefolder``: ``ROOT/<class>/**/<image>``, local or ``s3://bucket/prefix``; labels are the
  class folders' indices in sorted order (torchvision's ImageFolder convention).
* ``folder``: every image under ``ROOT`` (any depth), no labels.
* ``manifest``: a CSV or Parquet file with columns ``id,path[,label]``; paths are relative to
  the manifest's folder and stay inside it, or absolute (for a local manifest), or ``s3://`` URIs.
* ``tar``: WebDataset-style tar shards (``key.jpg`` + optional ``key.cls`` per sample), local or
  on S3, read front to back once.
* ``safetensors``: the pipeline's prepared split (uint8 ``[N, C, H, W]`` held in memory); its
  class names come from the ``info.json`` the prepare stage writes beside it.

A source lists :class:`Item` references in a stable order (ids are the relative paths, the
manifest's ids or the tar keys) without reading images, so listing costs memory per directory or
page, not per collection. Bytes are read and decoded later, in DataLoader workers (see
:mod:`fct_registry.data.loader`). Iterating a source directly decodes in this process.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from fct_registry._files import contained_name
from fct_registry._registry import Registry
from fct_registry.data.decode import ImageTransform, decode, is_image_name
from fct_registry.errors import DataError
from fct_registry.storage import Storage, open_storage

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
LABEL_SUFFIXES = (".cls", ".label")


_RELATIVE_FIX = (
    "a relative path stays inside the manifest's folder; write the image's absolute path "
    "(or an s3:// URI) instead"
)


@dataclass(frozen=True, slots=True)
class Item:
    """One image, before it is read: its id, where it lives and its label.

    ``name`` is the file within the source's location (relative path or key); tar samples carry
    their bytes in ``data`` (the shard is read once, front to back) and their place in the shard
    in ``offset``/``size`` (random access for training); prepared splits carry ``row``.
    """

    id: str
    uri: str
    label: int | None = None
    name: str = ""
    data: bytes | None = None
    offset: int = -1
    size: int = -1
    row: int = -1

    def without_data(self) -> Item:
        return Item(
            self.id, self.uri, self.label, self.name, None, self.offset, self.size, self.row
        )


class ImageSource(ABC):
    """A collection of images. Subclasses list :meth:`items` and :meth:`read` their bytes."""

    kind: str
    uri: str
    classes: tuple[str, ...] | None = None  # label names, when labels come from the layout

    @abstractmethod
    def items(self) -> Iterator[Item]:
        """Every item, in the source's stable order (the same on every call)."""

    @property
    @abstractmethod
    def has_labels(self) -> bool: ...

    def read(self, item: Item) -> bytes:
        """The item's encoded bytes (called in DataLoader workers)."""
        if item.data is not None:
            return item.data
        return self.location.read_bytes(item.name)

    location: Storage

    def load(self, item: Item, transform: ImageTransform | None) -> torch.Tensor:
        """The item decoded (and transformed) as uint8 ``[C, H, W]``; BadImageError if not."""
        return decode(self.read(item), transform, item.uri)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor, int | None]]:
        """``(id, uint8 [C, H, W] image at its own size, label)``, decoded here, in order."""
        for item in self.items():
            yield item.id, self.load(item, None), item.label

    def describe(self) -> dict[str, object]:
        # ``classes``: what the labels index, so galleries compare labels by name, not by id
        named = {} if self.classes is None else {"classes": list(self.classes)}
        return {"kind": self.kind, "uri": self.uri, **named}


SOURCES: Registry[ImageSource] = Registry("image source")


# --- folders -----------------------------------------------------------------------------------


def _check_exists(location: Storage) -> tuple[list[str], list[str]]:
    try:
        folders, files = location.children()
    except FileNotFoundError:
        raise DataError(f"{location.uri} does not exist; check the path") from None
    except NotADirectoryError:
        raise DataError(f"{location.uri} is a file, not a folder of images") from None
    if not folders and not files:
        hint = (
            "check the prefix (aws s3 ls " + location.uri + "/)"
            if location.uri.startswith("s3://")
            else "put images in it, or point at the folder that holds them"
        )
        raise DataError(f"{location.uri} is empty (no files or folders); {hint}")
    return folders, files


@SOURCES.register("imagefolder")
class ImageFolderSource(ImageSource):
    """``ROOT/<class>/.../<image>``; label = index of the class folder in sorted order."""

    kind = "imagefolder"

    def __init__(self, uri: str) -> None:
        self.location = open_storage(uri)
        self.uri = self.location.uri
        folders, files = _check_exists(self.location)
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
            if not any(is_image_name(n) for n in self.location.walk(name)):
                raise DataError(
                    f"class folder {self.location.join(name)} has no images; add images or "
                    "remove the folder (every subfolder of the root is a class)"
                )

    @property
    def has_labels(self) -> bool:
        return True

    def items(self) -> Iterator[Item]:
        for label, name in enumerate(self.classes):
            for rel in self.location.walk(name):
                if is_image_name(rel):
                    yield Item(rel, self.location.join(rel), label, rel)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "uri": self.uri, "classes": list(self.classes or ())}


@SOURCES.register("folder")
class FolderSource(ImageSource):
    """Every image under ``ROOT``, at any depth; ids are the relative paths; no labels."""

    kind = "folder"

    def __init__(self, uri: str) -> None:
        self.location = open_storage(uri)
        self.uri = self.location.uri
        _check_exists(self.location)
        if not any(is_image_name(n) for n in self.location.walk()):
            raise DataError(
                f"no images under {self.uri} (looked for {', '.join(_EXT_HINT)} files); "
                "point at the folder that holds them"
            )

    @property
    def has_labels(self) -> bool:
        return False

    def items(self) -> Iterator[Item]:
        for rel in self.location.walk():
            if is_image_name(rel):
                yield Item(rel, self.location.join(rel), None, rel)


_EXT_HINT = (".jpg", ".png", "...")


# --- manifest ----------------------------------------------------------------------------------


class _UniqueIds:
    """Duplicate-id check in 8 bytes of hash per id (a 64-bit blake2b digest): a set of ints
    instead of the strings. A false alarm needs a 64-bit collision (~3e-6 at 10M ids)."""

    def __init__(self, where: str) -> None:
        self.seen: set[int] = set()
        self.where = where

    def add(self, item_id: str, at: str) -> None:
        h = int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "little")
        if h in self.seen:
            raise DataError(
                f"id {item_id!r} appears twice in {self.where} (again at {at}); ids name "
                "gallery rows and must be unique: rename or drop one of them"
            )
        self.seen.add(h)


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
        unique = _UniqueIds(self.uri)
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


# --- tar shards --------------------------------------------------------------------------------


def _expand_braces(pattern: str) -> list[str]:
    """WebDataset's ``shard-{000..009}.tar`` notation: one numeric range, zero-padded."""
    import re

    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    lo, hi = match.group(1), match.group(2)
    width = len(lo)
    return [
        pattern[: match.start()] + f"{i:0{width}d}" + pattern[match.end() :]
        for i in range(int(lo), int(hi) + 1)
    ]


@SOURCES.register("tar")
class TarShardsSource(ImageSource):
    """WebDataset-style shards: members ``<key>.<ext>`` grouped by key (the id); the image is
    the member with an image suffix, the label a ``.cls``/``.label`` member holding an integer."""

    kind = "tar"

    def __init__(self, uris: str | Sequence[str]) -> None:
        raw = [uris] if isinstance(uris, str) else list(uris)
        shards: list[str] = []
        for uri in raw:
            if uri.endswith(".tar") or "{" in uri:
                shards += _expand_braces(uri)
            else:  # a folder or prefix of shards
                location = open_storage(uri)
                _check_exists(location)
                shards += [location.join(n) for n in location.walk() if n.endswith(".tar")]
        if not shards:
            raise DataError(f"no .tar shards found in {', '.join(raw)}")
        self.shards = shards
        self.uri = shards[0] if len(shards) == 1 else f"{shards[0]} (+{len(shards) - 1} shards)"
        self._locations = {}
        for shard in shards:
            folder, _, _name = shard.rpartition("/")
            self._locations[shard] = open_storage(folder or ".")
        first = next(self.items(), None)
        if first is None:
            raise DataError(f"the tar shards {self.uri} hold no images")
        self._labels = first.label is not None

    @property
    def has_labels(self) -> bool:
        return self._labels

    def items(self) -> Iterator[Item]:
        unique = _UniqueIds(self.uri)
        for shard in self.shards:
            for item in self._shard_items(shard):
                unique.add(item.id, f"shard {shard}")
                yield item

    def _shard_items(self, shard: str) -> Iterator[Item]:
        location = self._locations[shard]
        name = shard.rpartition("/")[2]
        try:
            stream = location.open(name)
        except DataError:
            raise DataError(f"tar shard {shard} does not exist or cannot be read") from None
        key, image, label = None, None, None
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    path = PurePosixPath(member.name)
                    stem = str(path.parent / path.name.split(".", 1)[0])
                    if stem != key:
                        if image is not None:
                            yield self._item(shard, key, image, label)
                        key, image, label = stem, None, None
                    fh = tar.extractfile(member)
                    assert fh is not None
                    if is_image_name(member.name):
                        image = (member.name, fh.read(), member.offset_data, member.size)
                    elif member.name.endswith(LABEL_SUFFIXES):
                        label = _parse_label(fh.read(), shard, member.name)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(
                f"tar shard {shard} is corrupt or truncated ({exc}); re-create or re-download it"
            ) from None
        finally:
            stream.close()
        if image is not None:
            yield self._item(shard, key, image, label)

    def _item(self, shard: str, key: str | None, image: tuple, label: int | None) -> Item:
        member, data, offset, size = image
        return Item(
            str(key), f"{shard}#{member}", label, shard, data=data, offset=offset, size=size
        )

    def read(self, item: Item) -> bytes:
        if item.data is not None:
            return item.data
        location = self._locations[item.name]
        return location.read_range(item.name.rpartition("/")[2], item.offset, item.size)


def _parse_label(raw: bytes, shard: str, member: str) -> int:
    try:
        return int(raw.decode().strip())
    except ValueError:
        raise DataError(f"{shard}: {member} holds {raw[:20]!r}, not an integer class id") from None


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

    def load(self, item: Item, transform: ImageTransform | None) -> torch.Tensor:
        image = self.images[item.row]
        if transform is None or tuple(image.shape) == transform.shape:
            return image
        raise DataError(
            f"{self.uri} holds {list(image.shape)} images but the model reads "
            f"{list(transform.shape)}; prepare the data at the model's size"
        )

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
    location = open_storage(uri)
    folders, files = _check_exists(location)
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
            return SOURCES.build("tar", uris=uris)
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
        return SOURCES.build("tar", uris=uri)
    if kind == "manifest" and not uri.lower().endswith((".csv", ".parquet")):
        files = open_storage(uri).children()[1]
        name = next((n for n in MANIFEST_NAMES if n in files), None)
        if name is None:
            raise DataError(f"{uri} holds no {' or '.join(MANIFEST_NAMES)}")
        uri = f"{uri.rstrip('/')}/{name}"
    return SOURCES.build(kind, uri=uri, **options)
