"""DVC stage ``side_info``: the self-supervised side-info extractor, trained only on the images of
the version it ships with (``side_info.trained_with``), as when that version was released. One
given from outside (``side_info.source``) is imported instead, as :mod:`.version` does."""

from __future__ import annotations

from fct_registry.config import Params
from fct_registry.data.prepared import load_info
from fct_registry.data.splits import Split, data_inputs, open_split
from fct_registry.device import pick_device
from fct_registry.layout import Layout
from fct_registry.stages.fingerprint import fingerprint
from fct_registry.stages.given import import_given
from fct_registry.stages.trained import ImageOutputs
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
    out = ImageOutputs(layout, "side_info", layout.side_info, layout.side_info_embeddings)
    _, device = init_from_env(pick_device(params.device))
    if cfg.source is not None:  # given, not trained
        import_given(
            out,
            params,
            cfg.source,
            cfg.preprocess,
            role="side_info",
            where="side_info",
            width=cfg.dim,
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
    run = out.run_args(params, fp, "side-info", device)
    model, result = train_side_info(params.side_info, images, spec, **run)
    out.save(model, spec, result, (train, test), device)
