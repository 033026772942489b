"""DVC stage ``transform@NAME``: the FCT transformation NAME, trained once per seed."""

from __future__ import annotations

import torch

from fct_registry.config import Params
from fct_registry.data.splits import data_inputs, open_split
from fct_registry.device import pick_device
from fct_registry.errors import ConfigError
from fct_registry.layout import Layout, load_embeddings
from fct_registry.models.io import load_model, save_model
from fct_registry.models.uncertainty import kind_predicts_uncertainty
from fct_registry.stages.fingerprint import fingerprint, write_json
from fct_registry.training.distributed import init_from_env
from fct_registry.training.loop import RunArgs, write_history
from fct_registry.training.transformation import (
    train_transformation,
    train_transformation_augmented,
    training_rows,
    transformation_spec,
)
from fct_registry.training.uncertainty import class_index, train_uncertainty_transformation


def _point_to_cluster(params: Params, layout: Layout, target: int, labels: torch.Tensor) -> dict:
    """The point-to-cluster term's inputs: the rows' labels, the target version's classifier and
    its class index."""
    trained_on = params.versions[target].classes
    index = class_index(trained_on, max([int(labels.max()), *(trained_on or [])]) + 1)
    classifier = load_model(layout.version(target))[0].classifier
    return {"labels": labels, "classifier": classifier, "classes": index}


def transformation_stage(params: Params, layout: Layout, name: str) -> None:
    """Train transformation ``name`` with each of its seeds on the target version's training data
    (``train_on: target``): stored features, or features of augmented images
    (``features: augmented``)."""
    if name not in params.transformations:
        raise ConfigError(
            f"unknown transformation {name!r}; known: {', '.join(params.transformations) or 'none'}"
        )
    cfg = params.transformations[name]
    ctx, device = init_from_env(pick_device(params.device))
    inputs = [
        layout.version_embeddings(cfg.source),
        layout.version_embeddings(cfg.target),
        layout.side_info_embeddings,
    ]
    old, new, side = (load_embeddings(p)["train"] for p in inputs)
    classes = params.versions[cfg.target].classes if cfg.train_on == "target" else None
    uncertain = kind_predicts_uncertainty(cfg.kind)
    p2c = uncertain and cfg.uncertainty.p2c_weight > 0
    train = None
    if classes is not None or cfg.features == "augmented" or p2c:  # the images or their labels
        inputs += data_inputs(layout.data, params.data)
        train = open_split(layout.data, "train", params.data)
    rows = training_rows(train.labels, classes) if train is not None else torch.arange(len(old))
    spec = transformation_spec(cfg, old.shape[1], new.shape[1], side.shape[1]) | {
        "family": params.family,
        "name": name,
    }
    if cfg.features == "augmented":
        models = [
            load_model(d, device)[0]
            for d in (layout.version(cfg.source), layout.side_info, layout.version(cfg.target))
        ]
    p2c_inputs = {}
    if p2c and train is not None:
        p2c_inputs = _point_to_cluster(params, layout, cfg.target, train.labels[rows])
    for index in range(cfg.seeds):
        seed = params.seed + index
        fp = fingerprint([cfg.model_dump(), classes], seed, inputs)
        common: RunArgs = {
            "seed": seed,
            "device": device,
            "checkpoint": layout.checkpoint(
                f"transform-{name}" + (f"-seed{index}" if index else "")
            ),
            "fingerprint": fp,
            "desc": f"transform {name}" + (f" seed {seed}" if index else ""),
        }
        if uncertain:
            model, result = train_uncertainty_transformation(
                cfg.uncertainty,
                cfg.optim,
                old[rows],
                side[rows],
                new[rows],
                spec,
                **common,
                **p2c_inputs,
            )
        elif train is not None and cfg.features == "augmented":
            model, result = train_transformation_augmented(
                cfg,
                train.subset(classes),  # the rows above, as a split
                *models,
                spec,
                **common,
                checkpoint_every=params.data.checkpoint_batches,
            )
        else:
            model, result = train_transformation(
                cfg, old[rows], side[rows], new[rows], spec, **common
            )
        if ctx.is_main:
            save_model(model, spec | {"seed": seed}, layout.transformation(name, index))
            if index == 0:
                write_history(result.history, layout.history(f"transform-{name}"))
    if ctx.is_main:  # always written, so the stage's seeds folder exists even with one seed
        write_json(
            layout.transformation_seeds(name) / "seeds.json",
            {"seeds": [params.seed + i for i in range(cfg.seeds)], "registered": params.seed},
        )
