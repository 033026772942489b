"""The pipeline's stages as library functions; ``pipelines/*.py`` are thin entry points over them.

Each stage reads the validated :class:`~fct_registry.config.Params`, its inputs from the
:class:`Layout`, and writes its outputs there. Checkpoints are resumed when the stage's inputs
and config are unchanged (see :func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from fct_registry.config import Params, UncertaintyTrainingConfig
from fct_registry.data import TensorSplit, load_info, load_prepared, prepare
from fct_registry.device import pick_device
from fct_registry.errors import ConfigError
from fct_registry.evaluation.compatibility import Edge, compatibility_cases
from fct_registry.evaluation.forest_plot import plot_intervals
from fct_registry.evaluation.report import markdown_table, matrix_rows, plot_matrix
from fct_registry.evaluation.uncertainty import uncertainty_report
from fct_registry.layout import Layout, load_embeddings, save_embeddings
from fct_registry.models import load_model, save_model
from fct_registry.models.transformations import uses_side_info
from fct_registry.models.uncertainty import kind_predicts_uncertainty
from fct_registry.training.classifier import (
    BctAlignment,
    BctInfluence,
    embedding_spec,
    train_classifier,
)
from fct_registry.training.contrastive import side_info_spec, train_side_info
from fct_registry.training.distributed import init_from_env
from fct_registry.training.embed import embed_images
from fct_registry.training.loop import write_history
from fct_registry.training.transformation import (
    train_transformation,
    train_transformation_augmented,
    training_rows,
    transformation_spec,
)
from fct_registry.training.uncertainty import train_uncertainty_transformation


def fingerprint(config: object, seed: int, inputs: list[Path]) -> str:
    """Hash of a stage's config, seed and input files: a checkpoint resumes only on a match."""
    digest = hashlib.sha256(json.dumps([config, seed], sort_keys=True, default=str).encode())
    for path in inputs:
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def prepare_stage(params: Params, layout: Layout) -> dict:
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


def side_info_images(params: Params, train: TensorSplit) -> torch.Tensor:
    """The images the side-info model trains on: ``side_info.trained_with``'s classes only."""
    version = params.side_info.trained_with
    if version is None:
        return train.images
    return train.subset(params.versions[version].classes).images


def side_info_stage(params: Params, layout: Layout) -> None:
    ctx, device = init_from_env(pick_device(params.device))
    info = load_info(layout.data)
    train, test = load_prepared(layout.data, "train"), load_prepared(layout.data, "test")
    spec = side_info_spec(params.side_info, info)
    images = side_info_images(params, train)
    trained_with = params.side_info.trained_with
    classes = None if trained_with is None else params.versions[trained_with].classes
    fp = fingerprint(
        [params.side_info.model_dump(), classes], params.seed, [layout.data / "train.safetensors"]
    )
    model, result = train_side_info(
        params.side_info,
        images,
        spec,
        seed=params.seed,
        device=device,
        checkpoint=layout.checkpoint("side_info"),
        fingerprint=fp,
    )
    if not ctx.is_main:  # rank 0 writes the outputs
        return
    save_model(model, spec, layout.side_info)
    write_history(result.history, layout.history("side_info"))
    save_embeddings(
        layout.side_info_embeddings,
        embed_images(model, train.images, device),
        embed_images(model, test.images, device),
    )


def version_stage(params: Params, layout: Layout, version: int) -> None:
    cfg = _version_config(params, version)
    ctx, device = init_from_env(pick_device(params.device))
    info = load_info(layout.data)
    check_classes(params, info)
    train, test = load_prepared(layout.data, "train"), load_prepared(layout.data, "test")
    spec = embedding_spec(cfg, info) | {"family": params.family, "version": version}
    fp = fingerprint(cfg.model_dump(), params.seed, [layout.data / "train.safetensors"])
    model, result = train_classifier(
        cfg,
        train,
        spec,
        seed=params.seed,
        device=device,
        checkpoint=layout.checkpoint(f"v{version}"),
        fingerprint=fp,
        desc=f"{params.family}@{version}",
    )
    if not ctx.is_main:
        return
    save_model(model, spec, layout.version(version))
    write_history(result.history, layout.history(f"v{version}"))
    save_embeddings(
        layout.version_embeddings(version),
        embed_images(model, train.images, device),
        embed_images(model, test.images, device),
    )


def bct_stage(params: Params, layout: Layout, name: str) -> None:
    if name not in params.bct:
        raise ConfigError(f"unknown bct entry {name!r}; known: {', '.join(params.bct) or 'none'}")
    bct = params.bct[name]
    if bct.init_from_old and params.versions[bct.old].backbone != params.versions[bct.new].backbone:
        raise ConfigError(
            f"bct.{name}.init_from_old needs versions {bct.old} and {bct.new} to use the same "
            "backbone (their weights are copied); make them equal or set init_from_old: false"
        )
    # BCT's new model shares the old embedding space: new's recipe at old's width.
    old_dim = params.versions[bct.old].embedding_dim
    cfg = params.versions[bct.new].model_copy(update={"embedding_dim": old_dim})
    ctx, device = init_from_env(pick_device(params.device))
    info = load_info(layout.data)
    train, test = load_prepared(layout.data, "train"), load_prepared(layout.data, "test")
    old_model, _ = load_model(layout.version(bct.old), device)
    old_cfg = params.versions[bct.old]
    old_classes = old_cfg.classes or list(range(len(info["classes"])))
    term = (
        BctInfluence(old_model.classifier, old_classes, bct.influence_weight, old_cfg.label_map)
        if bct.kind == "influence"
        else BctAlignment(old_model, old_classes, bct.influence_weight, bct.init_from_old)
    )
    spec = embedding_spec(cfg, info) | {
        "family": params.family,
        "bct": name,
        "bct_old": bct.old,
        "bct_new": bct.new,
        "bct_kind": bct.kind,
    }
    fp = fingerprint(
        [cfg.model_dump(), bct.model_dump(), old_cfg.model_dump()],
        params.seed,
        [layout.data / "train.safetensors", layout.version(bct.old) / "model.safetensors"],
    )
    model, result = train_classifier(
        cfg,
        train,
        spec,
        seed=params.seed,
        device=device,
        checkpoint=layout.checkpoint(f"bct-{name}"),
        fingerprint=fp,
        desc=f"bct {name}",
        bct=term,
    )
    if not ctx.is_main:
        return
    save_model(model, spec, layout.bct(name))
    write_history(result.history, layout.history(f"bct-{name}"))
    save_embeddings(
        layout.bct_embeddings(name),
        embed_images(model, train.images, device),
        embed_images(model, test.images, device),
    )


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
    train = None
    if classes is not None or cfg.features == "augmented":  # the images or their labels
        inputs.append(layout.data / "train.safetensors")
        train = load_prepared(layout.data, "train")
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
    for index in range(cfg.seeds):
        seed = params.seed + index
        fp = fingerprint([cfg.model_dump(), classes], seed, inputs)
        common = {
            "seed": seed,
            "device": device,
            "checkpoint": layout.checkpoint(
                f"transform-{name}" + (f"-seed{index}" if index else "")
            ),
            "fingerprint": fp,
            "desc": f"transform {name}" + (f" seed {seed}" if index else ""),
        }
        if kind_predicts_uncertainty(cfg.kind):
            # beta-NLL trains the log-variance head (beta=1: the embedding gets MSE's gradient)
            model, result = train_uncertainty_transformation(
                UncertaintyTrainingConfig(optim=cfg.optim),
                old[rows],
                side[rows],
                new[rows],
                spec,
                **common,
            )
        elif train is not None and cfg.features == "augmented":
            model, result = train_transformation_augmented(
                cfg, train.images[rows], *models, spec, **common
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
        _write_json(
            layout.transformation_seeds(name) / "seeds.json",
            {"seeds": [params.seed + i for i in range(cfg.seeds)], "registered": params.seed},
        )


def _version_config(params: Params, version: int):
    if version not in params.versions:
        known = ", ".join(str(v) for v in params.versions)
        raise ConfigError(f"unknown version {version} of {params.family}; known: {known}")
    return params.versions[version]


def evaluate_stage(params: Params, layout: Layout) -> dict:
    """Score every compatibility case on the test split (every seed of every transformation),
    with paired-bootstrap intervals for the protocol's claims; write metrics, tables, plots."""
    labels = load_prepared(layout.data, "test").labels
    versions = {v: load_embeddings(layout.version_embeddings(v))["test"] for v in params.versions}
    side_info = load_embeddings(layout.side_info_embeddings)["test"]
    edges = []
    for name, cfg in params.transformations.items():
        modules = [load_model(layout.transformation(name, i))[0] for i in range(cfg.seeds)]
        edges.append(
            Edge(
                name,
                cfg.source,
                cfg.target,
                uses_side_info(cfg.kind),
                modules[0],
                tuple(modules[1:]),
                cfg.kind,
            )
        )
    bct = {
        name: (b.old, b.new, load_embeddings(layout.bct_embeddings(name))["test"])
        for name, b in params.bct.items()
    }
    outcomes: dict = {}
    report = compatibility_cases(
        labels,
        versions,
        side_info,
        edges,
        bct,
        distance=params.evaluation.distance,
        outcomes=outcomes,
    )
    uncertainty = uncertainty_report(
        report,
        outcomes,
        {name: b.kind for name, b in params.bct.items()},
        resamples=params.evaluation.bootstrap_resamples,
        seed=params.seed,
    )
    out = layout.evaluation
    _write_json(out / "metrics.json", report)
    _write_json(out / "uncertainty.json", uncertainty)
    _write_json(out / "matrix.json", matrix_rows(report))
    (out / "compatibility.md").write_text(markdown_table(report, params.family))
    plot_matrix(report, params.family, out / "compatibility.png")
    plot_intervals(uncertainty, out / "intervals.png")
    return report


def run_pipeline(params: Params, layout: Layout) -> dict:
    """Every training and evaluation stage in ``dvc.yaml``'s order, in this process (notebooks,
    tests, a quick GPU check); ``dvc repro`` remains the way to run it incrementally."""
    prepare_stage(params, layout)
    side_info_stage(params, layout)
    for version in params.versions:
        version_stage(params, layout, version)
    for name in params.bct:
        bct_stage(params, layout, name)
    for name in params.transformations:
        transformation_stage(params, layout, name)
    return evaluate_stage(params, layout)
