"""DVC stage ``prepare``: materialise the dataset splits, and check that every version's classes
and label map fit the dataset before any training starts. A family given as embedding tables
has no images: its tables are checked against each other and the split's row order written."""

from __future__ import annotations

from fct_registry.config import EmbeddingTablesConfig, Params
from fct_registry.data.embedding_tables import prepare_tables
from fct_registry.data.prepared import prepare
from fct_registry.data.splits import prepare_source
from fct_registry.errors import ConfigError
from fct_registry.layout import Layout


def prepare_stage(params: Params, layout: Layout) -> dict:
    if params.embeddings_only:
        info = prepare_tables(*given_tables(params), layout.data)
        check_classes(params, info)
        return info
    if params.data.source is not None:  # streamed from files: info.json only, no pixels
        info = prepare_source(params.data, layout.data, seed=params.seed)
    else:
        info = prepare(params.data, layout.data)
    check_classes(params, info)  # before any training starts
    return info


def given_tables(
    params: Params,
) -> tuple[dict[str, EmbeddingTablesConfig], dict[str, tuple[str, int]]]:
    """Every table of a family given as embeddings (side-info first: the reference row
    order), and the width each must have."""
    side = params.side_info
    tables = {"side_info": side.source.embeddings}
    widths = {"side_info": ("dim", side.dim)}
    for key, cfg in params.versions.items():
        tables[f"versions.{key}"] = cfg.source.embeddings
        widths[f"versions.{key}"] = ("embedding_dim", cfg.embedding_dim)
    return tables, widths


def check_classes(params: Params, info: dict) -> None:
    num_classes = len(info["classes"])
    dataset = "the embedding tables" if params.embeddings_only else params.data.dataset
    for version, cfg in params.versions.items():
        bad = [c for c in cfg.classes or [] if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(
                f"versions.{version}.classes has {bad}, but {dataset} "
                f"has classes 0..{num_classes - 1}"
            )
        if cfg.label_map is not None and len(cfg.label_map) != num_classes:
            raise ConfigError(
                f"versions.{version}.label_map has {len(cfg.label_map)} entries, but "
                f"{dataset} has {num_classes} classes; give one label per class"
            )
