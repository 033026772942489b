"""Datasets: sources on disk -> prepared safetensors splits -> batches with augmentations."""

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
    "SPLITS",
    "Split",
    "TensorSplit",
    "load_info",
    "load_prepared",
    "load_split",
    "prepare",
]
