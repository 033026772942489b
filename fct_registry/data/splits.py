"""The training splits every stage reads: batches gathered by sample index, from memory or files.

Two implementations of one interface (``labels``, ``len``, ``subset``, ``to``, ``batches``,
``ordered``):

* :class:`~fct_registry.data.prepared.TensorSplit` (the embedded default, ``data.source`` unset):
  the prepared safetensors split held in memory (on the training device); a batch is
  ``images[indices]``, exactly as before streaming existed.
* :class:`StreamSplit` (``data.source`` set): an :class:`~fct_registry.data.loader.ImageDataset`
  (item references, never pixels) behind a torch ``DataLoader`` whose batch sampler is the
  trainer's own index batches, so the order is the same pure function of ``(seed, epoch)``;
  workers read and decode, memory is ``workers * prefetch`` batches whatever the collection.

Under torchrun a streaming split reads only this rank's contiguous share of each global batch
(the role of a ``DistributedSampler``) and says so in :attr:`Batch.part`, so augmentations are
drawn for the global batch and the run stays exact to one process.

:func:`prepare_source` is the prepare stage for streaming sources: ``info.json`` only (classes,
shape, sizes, per-class counts, mean/std from a bounded seeded sample, the ids' sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fct_registry.config import DataConfig
from fct_registry.data.base_image_source import ImageSource
from fct_registry.data.decode import ImageTransform
from fct_registry.data.image_sources import open_source
from fct_registry.data.loader import ImageDataset, channel_stats, stream_batches
from fct_registry.data.prepared import SPLITS, TensorSplit, load_info, load_prepared
from fct_registry.errors import DataError

SKIPPED_FILE = "skipped.json"


@dataclass
class Batch:
    """One training batch on the device: uint8 ``images [b, C, H, W]`` and int64 ``labels``.

    ``part`` is ``None`` for a whole global batch (shard it after augmenting), else
    ``(offset, global size)``: only this rank's rows were read."""

    images: torch.Tensor
    labels: torch.Tensor
    part: tuple[int, int] | None = None


def tensor_batches(
    split: TensorSplit, index_batches: Iterable[torch.Tensor], **_: object
) -> Iterator[Batch]:
    """The prepared split's batches: rows gathered on the split's device (the default path)."""
    for indices in index_batches:
        indices = indices.to(split.images.device)
        yield Batch(split.images[indices], split.labels[indices])


def transform_for(config: DataConfig) -> ImageTransform:
    """The decode/resize/crop every streamed image goes through (``data`` params)."""
    return ImageTransform.for_input_shape(
        config.input_shape, resize=config.resize, upscale=config.upscale, color=config.color
    )


class _Feed:
    """A DataLoader batch sampler fed with the trainer's index batches (this rank's share)."""

    def __init__(self, index_batches: Iterable[torch.Tensor], rank: int, world: int) -> None:
        self.index_batches, self.rank, self.world = index_batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.index_batches:
            size = len(indices) // self.world
            yield indices[self.rank * size : (self.rank + 1) * size].tolist()


class StreamSplit:
    """A split read from image files on demand (see module docstring)."""

    def __init__(self, dataset: ImageDataset, *, workers: int = 2, prefetch: int = 4) -> None:
        self.dataset, self.workers, self.prefetch = dataset, workers, prefetch

    @property
    def labels(self) -> torch.Tensor:
        return self.dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def subset(self, classes: list[int] | None) -> StreamSplit:
        return StreamSplit(
            self.dataset.subset(classes), workers=self.workers, prefetch=self.prefetch
        )

    def to(self, device: torch.device) -> StreamSplit:
        return self  # batches move to the device as they are read

    def batches(
        self,
        index_batches: Iterable[torch.Tensor],
        *,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[Batch]:
        loader = DataLoader(
            self.dataset,
            batch_sampler=_Feed(index_batches, rank, world),
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=self.prefetch if self.workers else None,
        )
        for images, labels in loader:
            part = None if world == 1 else (rank * len(images), len(images) * world)
            yield Batch(
                images.to(device, non_blocking=True), labels.to(device, non_blocking=True), part
            )

    def ordered(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every image in order, uint8 ``[b, C, H, W]`` batches (embedding a split)."""
        for batch in stream_batches(
            self.dataset.source,
            self.dataset.transform,
            items=self.dataset.items,
            batch_size=batch_size,
            num_workers=self.workers,
        ):
            yield batch.images


Split = TensorSplit | StreamSplit


def split_batches(
    split: Split,
    index_batches: Iterable[torch.Tensor],
    *,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> Iterator[Batch]:
    """The trainer's index batches as :class:`Batch` es of ``split`` (either kind)."""
    if isinstance(split, TensorSplit):
        return tensor_batches(split, index_batches)
    return split.batches(index_batches, device=device, rank=rank, world=world)


def ordered_images(split: Split, batch_size: int) -> Iterator[torch.Tensor]:
    """Every image of ``split`` in order, in uint8 batches."""
    if isinstance(split, TensorSplit):
        for start in range(0, len(split.images), batch_size):
            yield split.images[start : start + batch_size]
    else:
        yield from split.ordered(batch_size)


# --- the prepare stage of streaming sources ----------------------------------------------------


def _ids_sha256(source: ImageSource) -> str:
    digest = hashlib.sha256()
    for item in source.items():
        digest.update(item.id.encode() + b"\n")
    return digest.hexdigest()


def _classes(source: ImageSource, labels: torch.Tensor) -> list[str]:
    if source.classes is not None:
        return list(source.classes)
    return [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]


def prepare_source(config: DataConfig, out_dir: Path, seed: int = 0) -> dict:
    """``info.json`` (and ``skipped.json``) for ``config.source``; no pixels are written.

    Listing gives classes, sizes, per-class counts and the ids' sha256 (so DVC sees a changed
    collection); mean/std come from ``stats_sample`` seeded images of the train split. With
    ``validate_images`` every image is decoded once: ``on_bad_image: fail`` stops at the
    first bad one, ``skip`` records them in ``skipped.json`` and training leaves them out.
    Written to a temporary folder renamed into place: a failure leaves nothing behind.
    """
    if config.source is None:
        raise DataError("data.source is not set; prepare_source streams image collections")
    transform = transform_for(config)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info: dict = {"dataset": "source", "transform": transform.record()}
    skipped: dict[str, list[dict[str, str]]] = {}
    for split in SPLITS:
        uri = getattr(config.source, split)
        source = open_source(uri)
        bad: list[dict[str, str]] = []
        if config.validate_images:
            for batch in stream_batches(
                source,
                transform,
                num_workers=config.workers,
                on_bad_image=config.on_bad_image,
            ):
                bad += [b.to_dict() for b in batch.bad]
        skipped[split] = bad
        dataset = ImageDataset(source, transform, exclude={b["id"] for b in bad})
        labels = dataset.labels
        if not len(labels):
            raise DataError(f"{uri} has no usable images; check data.source.{split}")
        classes = _classes(source, labels)
        if split == "train":
            info["classes"] = classes
            info["shape"] = list(transform.shape)
            info["mean"], info["std"] = channel_stats(
                source,
                transform,
                sample=config.stats_sample,
                seed=seed,
                num_workers=config.workers,
            )
        elif classes != info["classes"][: len(classes)]:
            raise DataError(
                f"data.source.test ({uri}) has classes {classes[:5]}..., which differ from the "
                f"train split's {info['classes'][:5]}...; use the same class folders"
            )
        info[split] = {
            "uri": source.uri,
            "size": len(labels),
            "skipped": len(bad),
            "per_class": torch.bincount(labels, minlength=len(info["classes"])).tolist(),
            "ids_sha256": _ids_sha256(source),
        }
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    (tmp / SKIPPED_FILE).write_text(json.dumps(skipped, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return info


def open_split(data_dir: Path, split: str, config: DataConfig) -> Split:
    """The prepared split (``data.source`` unset) or a streaming one over ``data.source``,
    checked against what the prepare stage listed."""
    if config.source is None:
        return load_prepared(data_dir, split)
    info = load_info(data_dir)
    if info.get("dataset") != "source":
        raise DataError(
            f"{data_dir} was prepared from data.dataset, but data.source is set; rerun the "
            "prepare stage (`dvc repro prepare`)"
        )
    skipped = json.loads((Path(data_dir) / SKIPPED_FILE).read_text())[split]
    source = open_source(getattr(config.source, split))
    if _ids_sha256(source) != info[split]["ids_sha256"]:
        raise DataError(
            f"{source.uri} lists other images than when it was prepared; rerun the prepare "
            "stage (`dvc repro prepare`)"
        )
    dataset = ImageDataset(source, transform_for(config), exclude={b["id"] for b in skipped})
    return StreamSplit(dataset, workers=config.workers)


def split_labels(data_dir: Path, split: str, config: DataConfig) -> torch.Tensor:
    """Every label of ``split`` (from the listing for streaming sources: nothing decoded)."""
    return open_split(data_dir, split, config).labels


def data_inputs(data_dir: Path, config: DataConfig) -> list[Path]:
    """The prepared files a training checkpoint's fingerprint hashes: the train split's
    tensors, or for streaming sources ``info.json`` (its ids' sha256, stats and transform)."""
    if config.source is None:
        return [Path(data_dir) / "train.safetensors"]
    return [Path(data_dir) / "info.json", Path(data_dir) / SKIPPED_FILE]
