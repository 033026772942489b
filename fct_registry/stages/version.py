"""DVC stage ``train@N``: one embedding-model version of the family, and its stored embeddings.

A version given from outside (``source:``, e.g. embedding tables) is imported instead of
trained: its embeddings in the prepared row order, and ``source.json`` in place of weights."""

from __future__ import annotations

from fct_registry.config import Params, VersionConfig
from fct_registry.data.prepared import load_info
from fct_registry.data.splits import data_inputs, open_split
from fct_registry.device import pick_device
from fct_registry.errors import ConfigError
from fct_registry.layout import Layout
from fct_registry.stages.fingerprint import fingerprint
from fct_registry.stages.given import import_given
from fct_registry.stages.prepare import check_classes
from fct_registry.stages.trained import ImageOutputs
from fct_registry.training.classifier import embedding_spec, train_classifier
from fct_registry.training.distributed import init_from_env


def version_stage(params: Params, layout: Layout, version: int) -> None:
    cfg = version_config(params, version)
    out = ImageOutputs(
        layout, f"v{version}", layout.version(version), layout.version_embeddings(version)
    )
    _, device = init_from_env(pick_device(params.device))
    if cfg.source is not None:  # given, not trained: no backbone, no images
        where = f"versions.{version}"
        import_given(
            out,
            params,
            cfg.source,
            cfg.preprocess,
            role="embedding",
            where=where,
            width=cfg.embedding_dim,
        )
        return
    info = load_info(layout.data)
    check_classes(params, info)
    train = open_split(layout.data, "train", params.data)
    test = open_split(layout.data, "test", params.data)
    spec = embedding_spec(cfg, info) | {"family": params.family, "version": version}
    fp = fingerprint(cfg.model_dump(), params.seed, data_inputs(layout.data, params.data))
    run = out.run_args(params, fp, f"{params.family}@{version}", device)
    model, result = train_classifier(cfg, train, spec, **run)
    out.save(model, spec, result, (train, test), device)


def version_config(params: Params, version: int) -> VersionConfig:
    if version not in params.versions:
        known = ", ".join(str(v) for v in params.versions)
        raise ConfigError(f"unknown version {version} of {params.family}; known: {known}")
    return params.versions[version]
