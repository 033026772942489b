"""DVC stage ``bct@NAME``: a BCT baseline, version ``new``'s recipe trained in version ``old``'s
embedding space with a compatibility term (Shen et al.'s influence loss, or L2 alignment)."""

from __future__ import annotations

from fct_registry.config import Params
from fct_registry.data.prepared import load_info
from fct_registry.data.splits import data_inputs, open_split
from fct_registry.device import pick_device
from fct_registry.errors import ConfigError
from fct_registry.layout import Layout
from fct_registry.models.io import load_model
from fct_registry.stages.fingerprint import fingerprint
from fct_registry.stages.trained import ImageOutputs
from fct_registry.training.classifier import (
    BctAlignment,
    BctInfluence,
    embedding_spec,
    train_classifier,
)
from fct_registry.training.distributed import init_from_env


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
    _, device = init_from_env(pick_device(params.device))
    info = load_info(layout.data)
    train = open_split(layout.data, "train", params.data)
    test = open_split(layout.data, "test", params.data)
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
        [*data_inputs(layout.data, params.data), layout.version(bct.old) / "model.safetensors"],
    )
    out = ImageOutputs(layout, f"bct-{name}", layout.bct(name), layout.bct_embeddings(name))
    run = out.run_args(params, fp, f"bct {name}", device)
    model, result = train_classifier(cfg, train, spec, bct=term, **run)
    out.save(model, spec, result, (train, test), device)
