"""Choose ``backfill.transformation.p2c_weight`` without looking at the test split.

On a finished pipeline's outputs, the uncertainty-aware transformation ``from -> to`` (the
``backfill.transformation`` recipe of the params file, seed 0) is trained on the first training
items for each weight, and the backfilling curves of the ``uncertainty`` and ``random`` orders
(the mean of ``random_orders`` random orders, as the stage) are measured on the held-out rest
of the training split: a fixed draw of ``--queries`` of them
(new model) queries a gallery of the others, as the ``backfill`` stage does on the test split.
Prints one line per weight: the paired uncertainty - random areas, and transform-only scores.

    python scripts/p2c_validation.py --outputs outputs --weights 0 0.05 0.5 5
    python scripts/p2c_validation.py --outputs outputs --weights 0.5 --trains-embedding

The held-out items are new-model *training* items (the new version saw them), so they select the
weight only; the stage's test-split numbers are the result.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from fct_registry.data.prepared import load_prepared
from fct_registry.evaluation.backfill import backfill_curves, backfill_order, mean_curve
from fct_registry.evaluation.retrieval import retrieval_scores
from fct_registry.layout import Layout, load_embeddings
from fct_registry.models.io import load_model
from fct_registry.models.uncertainty import KIND
from fct_registry.stages.backfill import (
    RANDOM_SEED_STRIDE,
    _plain_config,
    _restrict,
    query_split,
)
from fct_registry.stages.params import load_checked_params
from fct_registry.training.transformation import transformation_spec
from fct_registry.training.uncertainty import (
    class_index,
    predict_with_uncertainty,
    train_uncertainty_transformation,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--outputs", type=Path, default=Path("outputs"))
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.05, 0.5, 5.0])
    ap.add_argument("--held-out", type=int, default=4000, help="training items held out")
    ap.add_argument("--queries", type=int, default=1000, help="held-out items that query")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--trains-embedding",
        action="store_true",
        help="p2c_trains_embedding: true (FastFill's joint variant) instead of the recipe's",
    )
    args = ap.parse_args()

    params = load_checked_params(args.params)
    cfg, layout = params.backfill, Layout(args.outputs)
    assert cfg is not None, "the params file has no backfill: block"
    old, new, side = (
        load_embeddings(p)["train"]
        for p in (
            layout.version_embeddings(cfg.source),
            layout.version_embeddings(cfg.target),
            layout.side_info_embeddings,
        )
    )
    labels = load_prepared(layout.data, "train").labels
    fit = slice(0, len(labels) - args.held_out)
    val = slice(len(labels) - args.held_out, len(labels))
    classifier = load_model(layout.version(cfg.target))[0].classifier
    classes = class_index(params.versions[cfg.target].classes, int(labels.max()) + 1)
    spec = transformation_spec(_plain_config(cfg), old.shape[1], new.shape[1], side.shape[1]) | {
        "type": KIND
    }
    qry, gal, loo = query_split(args.held_out, args.queries)
    distance = params.evaluation.distance
    for weight in args.weights:
        update: dict = {"p2c_weight": weight}
        if args.trains_embedding:
            update["p2c_trains_embedding"] = True
        recipe = cfg.transformation.model_copy(update=update)
        with tempfile.TemporaryDirectory() as tmp:
            model, _ = train_uncertainty_transformation(
                recipe, recipe.optim, old[fit], side[fit], new[fit], spec,
                seed=args.seed, device=torch.device("cpu"), checkpoint=Path(tmp) / "c.pt",
                fingerprint="validation", desc=f"p2c_weight {weight}",
                labels=labels[fit], classifier=classifier, classes=classes,
            )  # fmt: skip
        h, log_var = predict_with_uncertainty(model, old[val], side[val])
        y, target = labels[val], new[val]
        only = retrieval_scores(target, h, y, y, distance=distance, leave_one_out=True)
        orders = {"uncertainty": backfill_order("uncertainty", len(h), uncertainty=log_var)}
        for k in range(cfg.random_orders):  # as the stage: the mean curve of random orders
            orders[f"random#{k}"] = backfill_order(
                "random", len(h), seed=args.seed + RANDOM_SEED_STRIDE * k
            )
        c = backfill_curves(
            h[gal], target[gal], target[qry], y[qry], y[gal],
            {p: _restrict(o, gal) for p, o in orders.items()},
            steps=cfg.steps, distance=distance, leave_one_out=loo,
        )  # fmt: skip
        u = c["uncertainty"]
        r = mean_curve([c[f"random#{k}"] for k in range(cfg.random_orders)])
        print(
            f"p2c_weight {weight:g}{' (trains the embedding)' * args.trains_embedding}: "
            "uncertainty - random AUC top-1 "
            f"{u.auc_top1 - r.auc_top1:+.3f}, mAP {u.auc_mAP - r.auc_mAP:+.3f} "
            f"(uncertainty {u.auc_top1:.2f} / {u.auc_mAP:.2f}, random {r.auc_top1:.2f} / "
            f"{r.auc_mAP:.2f}); transform-only top-1 {only.top1:.2f}, mAP {only.mAP:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
