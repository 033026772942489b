"""Torch loaders over image sources: decoding in DataLoader workers, bounded memory.

Two ways in, one decoding path (:class:`DecodedItems`):

* :func:`stream_batches` (indexing a gallery, one pass in order): the source's item listing runs
  in the main process and *is* the DataLoader's batch sampler, so workers receive item
  references (tar samples with their bytes), read and decode them, and batches come back in
  the listing's order. Nothing is listed ahead beyond the DataLoader's prefetch
  (``prefetch_factor`` batches per worker). Several ranks (``rank``/``world``) each take every
  ``world``-th batch.
* :class:`ImageDataset` (training, random access): a map-style dataset over the materialised
  item list (references only, never pixels), so ``DistributedSampler``/shuffling work as for any
  dataset; ``__getitem__`` decodes in the worker.

:func:`channel_stats` estimates the normalisation statistics from a bounded, seeded sample
(reservoir sampling over the listing), never from a float copy of a whole split.

A second transform (``side_transform``) decodes each item a second time for a model that reads
other pixels than the first (a side-info extractor with its own resize or crop): a batch then
carries both views of the same items, and an item bad in either view is bad.

Bad images never raise inside a worker (a worker's exception reaches the main process wrapped
in a traceback): each decoded slot carries its error message, and :func:`check_batch` applies
the ``on_bad_image`` policy in the main process.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset

from fct_registry.data.base_image_source import ImageSource, Item
from fct_registry.data.decode import BadImageError, ImageTransform
from fct_registry.data.image_sources import TensorSource
from fct_registry.errors import ConfigError, DataError
from fct_registry.numerics import sqrt_

BadImagePolicy = Literal["skip", "fail"]
ON_BAD_IMAGE = ("fail", "skip")


@dataclass(frozen=True)
class Skipped:
    """An item left out under ``on_bad_image=skip``, and why."""

    id: str
    uri: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class ImageBatch:
    """Decoded items in order: ``images`` uint8 ``[B, C, H, W]`` plus ids, URIs, labels and
    the items' ``row`` numbers (-1 where a source numbers none); and the items of this batch that
    could not be used. ``side_images``: the same items through the side transform, when one
    was given."""

    ids: list[str]
    uris: list[str]
    labels: list[int | None]
    images: torch.Tensor
    bad: list[Skipped] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    side_images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> ImageBatch:  # DataLoader(pin_memory=True) calls this
        self.images = self.images.pin_memory()
        if self.side_images is not None:
            self.side_images = self.side_images.pin_memory()
        return self


Slot = tuple[Item, tuple[torch.Tensor, ...] | None, str | None]


class DecodedItems(Dataset):
    """Indexed by :class:`Item` (not int): reads it once and decodes it once per transform;
    never raises for bad input."""

    def __init__(self, source: ImageSource, *transforms: ImageTransform) -> None:
        self.source, self.transforms = source, transforms

    def __getitem__(self, item: Item) -> Slot:
        try:
            views = self.source.load_views(item, self.transforms)
            return item.without_data(), views, None
        except (BadImageError, DataError) as exc:
            return item.without_data(), None, str(exc)


class _Collate:
    """Picklable collate function (workers may be spawned)."""

    def __init__(self, *transforms: ImageTransform) -> None:
        self.shapes = [t.shape for t in transforms]

    def __call__(self, slots: list[Slot]) -> ImageBatch:
        good = [(item, views) for item, views, _ in slots if views is not None]
        bad = [Skipped(item.id, item.uri, str(err)) for item, views, err in slots if views is None]
        stacked = [
            torch.stack([views[i] for _, views in good])
            if good
            else torch.empty((0, *shape), dtype=torch.uint8)
            for i, shape in enumerate(self.shapes)
        ]
        return ImageBatch(
            [item.id for item, _ in good],
            [item.uri for item, _ in good],
            [item.label for item, _ in good],
            stacked[0],
            bad,
            [item.row for item, _ in good],
            side_images=stacked[1] if len(stacked) > 1 else None,
        )


def check_policy(on_bad_image: str) -> BadImagePolicy:
    if on_bad_image not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
    return on_bad_image  # type: ignore[return-value]


def check_batch(batch: ImageBatch, on_bad_image: BadImagePolicy) -> ImageBatch:
    """Raise the first bad item's error under ``fail``; under ``skip`` the batch is returned
    as it is (its ``bad`` list is the caller's to report)."""
    if batch.bad and on_bad_image == "fail":
        first = batch.bad[0]
        more = f" ({len(batch.bad) - 1} more in this batch)" if len(batch.bad) > 1 else ""
        raise BadImageError(
            f"{first.reason}{more}\n(--on-bad-image skip leaves bad images out and lists "
            "them in a report)"
        )
    return batch


class _ItemBatches:
    """A batch sampler whose 'indices' are :class:`Item` s: the listing itself, in order."""

    def __init__(self, items: Callable[[], Iterable[Item]], batch_size: int) -> None:
        self.items, self.batch_size = items, batch_size

    def __iter__(self) -> Iterator[list[Item]]:
        it = iter(self.items())
        while batch := list(itertools.islice(it, self.batch_size)):
            yield batch


def stream_batches(
    source: ImageSource,
    transform: ImageTransform,
    *,
    items: Iterable[Item] | None = None,
    batch_size: int = 256,
    num_workers: int = 2,
    on_bad_image: BadImagePolicy = "fail",
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    rank: int = 0,
    world: int = 1,
    side_transform: ImageTransform | None = None,
) -> Iterator[ImageBatch]:
    """Decoded batches of ``items`` (default: the whole source) in order.

    Memory: ``num_workers * prefetch_factor`` batches in flight, whatever the collection's
    size. ``rank``/``world`` shard by batch for data-parallel inference. ``side_transform``:
    each item is also decoded through it, into the batch's ``side_images``.
    """
    check_policy(on_bad_image)
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(
            f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}"
        )
    listing = source.items() if items is None else items
    if world > 1:
        listing = _every_nth_batch(listing, batch_size, rank, world)
    transforms = (transform,) if side_transform is None else (transform, side_transform)
    if isinstance(source, TensorSource):  # already decoded and in memory: no workers needed
        yield from _tensor_batches(source, transforms, listing, batch_size)
        return
    consumed = iter([listing])
    loader = DataLoader(
        DecodedItems(source, *transforms),
        batch_sampler=_ItemBatches(lambda: next(consumed), batch_size),
        num_workers=num_workers,
        collate_fn=_Collate(*transforms),
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers else None,
        persistent_workers=False,
    )
    for batch in loader:
        yield check_batch(batch, on_bad_image)


def _every_nth_batch(items: Iterable[Item], batch_size: int, rank: int, world: int):
    if not 0 <= rank < world:
        raise ConfigError(f"rank must be in 0..{world - 1}, got {rank}")
    it = iter(items)
    index = 0
    while block := list(itertools.islice(it, batch_size)):
        if index % world == rank:
            yield from block
        index += 1


def _tensor_batches(
    source: TensorSource,
    transforms: tuple[ImageTransform, ...],
    items: Iterable[Item],
    batch_size: int,
) -> Iterator[ImageBatch]:
    """The prepared split's fast path: slices of the in-memory tensor, as before. Its images
    are decoded already: every transform must ask for their shape."""
    it = iter(items)
    while block := list(itertools.islice(it, batch_size)):
        rows = [item.row for item in block]
        lo, hi = rows[0], rows[-1] + 1
        contiguous = hi - lo == len(rows)
        images = source.images[lo:hi] if contiguous else source.images[rows]
        for transform in transforms:
            if tuple(images.shape[1:]) != transform.shape:
                source.load(block[0], transform)  # raises the shape error
        yield ImageBatch(
            [item.id for item in block],
            [item.uri for item in block],
            [item.label for item in block],
            images,
            rows=rows,
            side_images=images if len(transforms) > 1 else None,
        )


class ImageDataset(Dataset):
    """Random access for training: ``dataset[i] -> (uint8 [C, H, W], label)``.

    Holds the item references (ids, paths, labels; tar samples as offsets, not bytes), never
    pixels: about 200 bytes per image. Works with ``DistributedSampler`` like any map-style
    dataset. A bad image raises :class:`BadImageError` (check a collection first with
    ``fct embed --on-bad-image skip`` or :func:`stream_batches`).
    """

    def __init__(
        self,
        source: ImageSource,
        transform: ImageTransform,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        if not source.has_labels:
            raise DataError(
                f"{source.uri} has no labels; training needs an ImageFolder tree, "
                "a manifest with a label column or tar shards with .cls members"
            )
        self.source, self.transform = source, transform
        # ``exclude``: ids of bad images found by the prepare stage (on_bad_image: skip)
        self.items = [item.without_data() for item in source.items() if item.id not in exclude]

    @property
    def labels(self) -> torch.Tensor:
        """Every item's label (int64), from the listing: class counts need no decoding."""
        return torch.tensor([item.label for item in self.items], dtype=torch.int64)

    def subset(self, classes: list[int] | None) -> ImageDataset:
        """The items of ``classes`` only (a version trained on a subset of the classes), in
        the same order; ``None``: all of them."""
        if classes is None:
            return self
        keep = set(classes)
        subset = object.__new__(ImageDataset)
        subset.source, subset.transform = self.source, self.transform
        subset.items = [item for item in self.items if item.label in keep]
        return subset

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        return self.source.load(item, self.transform), int(item.label)  # type: ignore[arg-type]


def sample_items(source: ImageSource, n: int, seed: int = 0) -> list[Item]:
    """A uniform sample of ``n`` items (reservoir sampling over one pass of the listing:
    memory for ``n`` references, whatever the collection's size), in listing order."""
    import random

    rng = random.Random(seed)
    reservoir: list[tuple[int, Item]] = []
    for i, item in enumerate(source.items()):
        if i < n:
            reservoir.append((i, item))
        else:
            j = rng.randrange(i + 1)
            if j < n:
                reservoir[j] = (i, item)
    return [item for _, item in sorted(reservoir, key=lambda pair: pair[0])]


def channel_stats(
    source: ImageSource,
    transform: ImageTransform,
    *,
    sample: int = 2000,
    seed: int = 0,
    num_workers: int = 2,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over a bounded sample of the source (the
    models' input normalisation), accumulated in float64 sums: never a float copy of a split."""
    total = torch.zeros(transform.channels, dtype=torch.float64)
    squares = torch.zeros(transform.channels, dtype=torch.float64)
    count = 0
    for batch in stream_batches(
        source,
        transform,
        items=sample_items(source, sample, seed),
        num_workers=num_workers,
        on_bad_image="skip",
    ):
        x = batch.images.to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise DataError(f"no usable image in a sample of {source.uri}; check the collection")
    mean = total / count
    std = sqrt_((squares / count - mean.square()).clamp_min(0))
    return mean.tolist(), std.tolist()
