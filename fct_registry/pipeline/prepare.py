"""DVC stage ``prepare``: materialise the dataset splits, and check that every version's classes
and label map fit the dataset before any training starts."""

from __future__ import annotations

from fct_registry.config import Params
from fct_registry.data.prepared import prepare
from fct_registry.data.splits import prepare_source
from fct_registry.errors import ConfigError
from fct_registry.layout import Layout


def prepare_stage(params: Params, layout: Layout) -> dict:
    if params.data.source is not None:  # streamed from files: info.json only, no pixels
        info = prepare_source(params.data, layout.data, seed=params.seed)
    else:
        info = prepare(params.data, layout.data)
    check_classes(params, info)  # before any training starts
    return info


def check_classes(params: Params, info: dict) -> None:
    num_classes = len(info["classes"])
    for version, cfg in params.versions.items():
        bad = [c for c in cfg.classes or [] if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(
                f"versions.{version}.classes has {bad}, but {params.data.dataset} "
                f"has classes 0..{num_classes - 1}"
            )
        if cfg.label_map is not None and len(cfg.label_map) != num_classes:
            raise ConfigError(
                f"versions.{version}.label_map has {len(cfg.label_map)} entries, but "
                f"{params.data.dataset} has {num_classes} classes; give one label per class"
            )
