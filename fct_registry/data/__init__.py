"""Datasets: sources on disk -> prepared safetensors splits -> batches with augmentations;
image sources (folders, manifests, tar shards, S3) streamed through DataLoader workers."""

from fct_registry.data.decode import BadImageError, ImageTransform
from fct_registry.data.image_sources import SOURCES, ImageSource, Item, open_source
from fct_registry.data.loader import ImageBatch, ImageDataset, Skipped, stream_batches
from fct_registry.data.prepared import (
    SPLITS,
    TensorSplit,
    load_info,
    load_prepared,
    prepare,
)
from fct_registry.data.sources import DATASETS, Split, load_split

__all__ = [
    "DATASETS",
    "SOURCES",
    "SPLITS",
    "BadImageError",
    "ImageBatch",
    "ImageDataset",
    "ImageSource",
    "ImageTransform",
    "Item",
    "Skipped",
    "Split",
    "TensorSplit",
    "load_info",
    "load_prepared",
    "load_split",
    "open_source",
    "prepare",
    "stream_batches",
]
