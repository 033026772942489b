"""DVC stage ``side_info``: the self-supervised side-info extractor, trained only on the images of
the version it ships with (``side_info.trained_with``), as when that version was released. One
given from outside (``side_info.source``) is imported instead, as :mod:`.version` does."""

from __future__ import annotations

from pathlib import Path

from fct_registry.config import Params
from fct_registry.data.prepared import load_info
from fct_registry.data.splits import Split, data_inputs, open_split
from fct_registry.device import pick_device
from fct_registry.layout import Layout
from fct_registry.pipeline.fingerprint import fingerprint
from fct_registry.pipeline.sources import ModelContext, build_given, save_given
from fct_registry.pipeline.trained import save_trained
from fct_registry.training.contrastive import side_info_spec, train_side_info
from fct_registry.training.distributed import init_from_env


def side_info_images(params: Params, train: Split) -> Split:
    """The images the side-info model trains on: ``side_info.trained_with``'s classes only."""
    version = params.side_info.trained_with
    if version is None:
        return train
    return train.subset(params.versions[version].classes)


def side_info_stage(params: Params, layout: Layout) -> None:
    cfg = params.side_info
    ctx, device = init_from_env(pick_device(params.device))
    if cfg.source is not None:  # given, not trained
        if not ctx.is_main:  # under torchrun, rank 0 imports
            return
        given = build_given(
            cfg.source,
            layout=layout,
            where="side_info",
            field="dim",
            width=cfg.dim,
            context=ModelContext(cfg.source, params, cfg.preprocess, "side_info", Path(".")),
        )
        save_given(
            given, layout.side_info, layout.side_info_embeddings, layout.history("side_info")
        )
        return
    info = load_info(layout.data)
    train = open_split(layout.data, "train", params.data)
    test = open_split(layout.data, "test", params.data)
    spec = side_info_spec(params.side_info, info)
    images = side_info_images(params, train)
    trained_with = params.side_info.trained_with
    classes = None if trained_with is None else params.versions[trained_with].classes
    fp = fingerprint(
        [params.side_info.model_dump(), classes],
        params.seed,
        data_inputs(layout.data, params.data),
    )
    model, result = train_side_info(
        params.side_info,
        images,
        spec,
        seed=params.seed,
        device=device,
        checkpoint=layout.checkpoint("side_info"),
        fingerprint=fp,
        desc="side-info",
        checkpoint_every=params.data.checkpoint_batches,
    )
    save_trained(
        model,
        spec,
        result,
        (train, test),
        device,
        folder=layout.side_info,
        embeddings=layout.side_info_embeddings,
        history=layout.history("side_info"),
    )
