"""DVC stage ``train@N``: one embedding-model version of the family, and its stored embeddings.

A version given from outside (``source:``, e.g. embedding tables) is imported instead of
trained: its embeddings in the prepared row order, and ``source.json`` in place of weights."""

from __future__ import annotations

from pathlib import Path

from fct_registry.config import Params, VersionConfig
from fct_registry.data.prepared import load_info
from fct_registry.data.splits import data_inputs, open_split
from fct_registry.device import pick_device
from fct_registry.errors import ConfigError
from fct_registry.layout import Layout
from fct_registry.pipeline.fingerprint import fingerprint
from fct_registry.pipeline.prepare import check_classes
from fct_registry.pipeline.sources import ModelContext, build_given, save_given
from fct_registry.pipeline.trained import save_trained
from fct_registry.training.classifier import embedding_spec, train_classifier
from fct_registry.training.distributed import init_from_env


def version_stage(params: Params, layout: Layout, version: int) -> None:
    cfg = version_config(params, version)
    ctx, device = init_from_env(pick_device(params.device))
    if cfg.source is not None:  # given, not trained: no backbone, no images
        if not ctx.is_main:  # under torchrun, rank 0 imports
            return
        given = build_given(
            cfg.source,
            layout=layout,
            where=f"versions.{version}",
            field="embedding_dim",
            width=cfg.embedding_dim,
            context=ModelContext(cfg.source, params, cfg.preprocess, "embedding", Path(".")),
        )
        save_given(
            given,
            layout.version(version),
            layout.version_embeddings(version),
            layout.history(f"v{version}"),
        )
        return
    info = load_info(layout.data)
    check_classes(params, info)
    train = open_split(layout.data, "train", params.data)
    test = open_split(layout.data, "test", params.data)
    spec = embedding_spec(cfg, info) | {"family": params.family, "version": version}
    fp = fingerprint(cfg.model_dump(), params.seed, data_inputs(layout.data, params.data))
    model, result = train_classifier(
        cfg,
        train,
        spec,
        seed=params.seed,
        device=device,
        checkpoint=layout.checkpoint(f"v{version}"),
        fingerprint=fp,
        desc=f"{params.family}@{version}",
        checkpoint_every=params.data.checkpoint_batches,
    )
    save_trained(
        model,
        spec,
        result,
        (train, test),
        device,
        folder=layout.version(version),
        embeddings=layout.version_embeddings(version),
        history=layout.history(f"v{version}"),
    )


def version_config(params: Params, version: int) -> VersionConfig:
    if version not in params.versions:
        known = ", ".join(str(v) for v in params.versions)
        raise ConfigError(f"unknown version {version} of {params.family}; known: {known}")
    return params.versions[version]
