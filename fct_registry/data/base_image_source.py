"""The contract of every image source: :class:`Item`, :class:`ImageSource` and the registry of
named sources, :data:`SOURCES`. The sources themselves are in :mod:`fct_registry.data.image_sources`
(folders, manifests, prepared splits, and the factory) and :mod:`fct_registry.data.tar_shards`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from fct_registry._registry import Registry
from fct_registry.data.decode import ImageTransform, decode
from fct_registry.errors import DataError
from fct_registry.storage import Storage, open_storage


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
    location: Storage

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

    def load(self, item: Item, transform: ImageTransform | None) -> torch.Tensor:
        """The item decoded (and transformed) as uint8 ``[C, H, W]``; BadImageError if not."""
        return self.load_views(item, (transform,))[0]

    def load_views(
        self, item: Item, transforms: Sequence[ImageTransform | None]
    ) -> tuple[torch.Tensor, ...]:
        """The item through each of ``transforms`` (e.g. a version's preprocessing and its
        side-info extractor's), its bytes read once: from S3, one GET per image, not two."""
        data = self.read(item)
        return tuple(decode(data, t, item.uri) for t in transforms)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor, int | None]]:
        """``(id, uint8 [C, H, W] image at its own size, label)``, decoded here, in order."""
        for item in self.items():
            yield item.id, self.load(item, None), item.label

    def describe(self) -> dict[str, object]:
        # ``classes``: what the labels index, so galleries compare labels by name, not by id
        named = {} if self.classes is None else {"classes": list(self.classes)}
        return {"kind": self.kind, "uri": self.uri, **named}


SOURCES: Registry[ImageSource] = Registry("image source")


def open_root(uri: str) -> tuple[Storage, list[str], list[str]]:
    """The folder or prefix ``uri`` and its ``(folders, files)``; DataError when it is missing,
    a file, or empty."""
    location = open_storage(uri)
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
    return location, folders, files


class UniqueIds:
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
