"""DVC stage ``backfill``: does backfilling in uncertainty order beat a random order?

For every seed in ``backfill.seeds``, on the stored embeddings of versions ``from`` and ``to``:

1. train the plain FCT transformation (MSE, the ``transformations:`` recipe) and the
   uncertainty-aware one (``fct-uncertainty``: beta-NLL, optionally point-to-cluster through
   the new model's classifier) with the same width, optimiser and seed;
2. score each as transform-only retrieval on the test split (new-model queries against the
   transformed gallery, leave-one-out, as in ``evaluate``);
3. transform the test gallery with the uncertainty-aware model and measure the backfilling curve
   of every policy (``uncertainty``, ``oracle``, and ``random``: the mean curve of
   ``random_orders`` permutations seeded from the seed, an estimate of a random order's expected
   curve). With ``backfill.queries: Q`` a fixed random draw of Q test items queries (new model)
   a gallery of the other test items, which is what gets backfilled; each curve point sorts
   Q x (N - Q) distances instead of N x N.

Writes ``outputs/backfill/metrics.json`` (per seed and seed means with 95% t intervals: curve
areas, the paired uncertainty-minus-random differences, transform-only scores) and
``curves.csv`` (seed-mean curves, one column per policy and metric; DVC metrics and plot), and
beside them ``curves.png``. The first seed's uncertainty-aware transformation is saved to
``outputs/backfill_transformation/``; the register stage registers it (kind
``fct-uncertainty``, with that seed's transform-only scores as its measurement), so an upgrade
through it writes the ``uncertainty`` column that ``fct backfill plan`` orders by. With
``backfill.enabled: false`` or no ``backfill:`` block nothing is trained: metrics.json is
``{"enabled": false}``, curves.csv holds its header only, no picture is left and the
transformation folder holds only a ``DISABLED`` note, so a disabled stage writes the same bytes
every time. Earlier measured runs are kept under ``docs/backfill/``.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from fct_registry.config import BackfillConfig, Params, TransformationConfig
from fct_registry.data.prepared import load_prepared
from fct_registry.device import pick_device
from fct_registry.errors import ConfigError
from fct_registry.evaluation.backfill import backfill_curves, backfill_order, mean_curve
from fct_registry.evaluation.backfill_report import mean_ci, paired, plot_curves
from fct_registry.evaluation.retrieval import retrieval_scores
from fct_registry.layout import Layout, load_embeddings
from fct_registry.models.io import load_model, save_model
from fct_registry.models.uncertainty import KIND
from fct_registry.stages.fingerprint import fingerprint
from fct_registry.training.embed import apply_transformation
from fct_registry.training.transformation import train_transformation, transformation_spec
from fct_registry.training.uncertainty import (
    class_index,
    predict_with_uncertainty,
    train_uncertainty_transformation,
)

RANDOM_SEED_STRIDE = 1000
"""Random draw k of seed s is seeded s + 1000 k, so draws of different seeds never coincide."""


DISABLED = "DISABLED"
"""The note left in ``Layout.backfill_transformation`` while the stage is off (DVC needs the
output to exist either way)."""


def backfill_dir(layout: Layout) -> Path:
    return layout.backfill


def _save_transformation(folder: Path, model: torch.nn.Module | None, spec: dict) -> None:
    """The transformation the register stage registers, or the ``DISABLED`` note."""
    shutil.rmtree(folder, ignore_errors=True)
    if model is None:
        folder.mkdir(parents=True)
        (folder / DISABLED).write_text("backfill.enabled is false: no transformation trained\n")
        return
    save_model(model, spec, folder)


def _plain_config(cfg: BackfillConfig) -> TransformationConfig:
    t = cfg.transformation
    return TransformationConfig(
        source=cfg.source, target=cfg.target, kind="fct", hidden_dim=t.hidden_dim, optim=t.optim
    )


def backfill_stage(params: Params, layout: Layout) -> dict:
    out = backfill_dir(layout)
    out.mkdir(parents=True, exist_ok=True)
    cfg = params.backfill
    if cfg is None or not cfg.enabled:
        metrics: dict = {"enabled": False}
        _write(out, metrics, {}, params)
        _save_transformation(layout.backfill_transformation, None, {})
        return metrics
    start = time.perf_counter()
    device = pick_device(params.device)
    inputs = [
        layout.version_embeddings(cfg.source),
        layout.version_embeddings(cfg.target),
        layout.side_info_embeddings,
    ]
    old, new, side = (load_embeddings(p) for p in inputs)
    train_labels = load_prepared(layout.data, "train").labels
    test_labels = load_prepared(layout.data, "test").labels
    new_model, _ = load_model(layout.version(cfg.target))
    classes = class_index(params.versions[cfg.target].classes, int(test_labels.max()) + 1)
    plain_cfg = _plain_config(cfg)
    base_spec = transformation_spec(
        plain_cfg, old["train"].shape[1], new["train"].shape[1], side["train"].shape[1]
    )
    distance = params.evaluation.distance

    def score(gallery: torch.Tensor) -> dict[str, float]:
        return retrieval_scores(
            new["test"], gallery, test_labels, test_labels, distance=distance, leave_one_out=True
        ).as_dict()

    qry, gal, loo = query_split(len(test_labels), cfg.queries)
    per_seed: dict[str, dict] = {}
    registered: tuple[torch.nn.Module, dict] | None = None

    def run(kind: str, config: BaseModel, seed: int) -> dict[str, Any]:
        """How one seed's training run is keyed: checkpoint, fingerprint and label."""
        return {
            "seed": seed,
            "device": device,
            "checkpoint": layout.checkpoint(f"backfill-{kind}-s{seed}"),
            "fingerprint": fingerprint(config.model_dump(), seed, inputs),
            "desc": f"backfill {kind} seed {seed}",
        }

    for seed in cfg.seeds:
        plain, _ = train_transformation(
            plain_cfg,
            old["train"],
            side["train"],
            new["train"],
            base_spec,
            **run("plain", plain_cfg, seed),
        )
        unc_spec = base_spec | {"type": KIND}
        model, result = train_uncertainty_transformation(
            cfg.transformation,
            cfg.transformation.optim,
            old["train"],
            side["train"],
            new["train"],
            unc_spec,
            labels=train_labels,
            classifier=new_model.classifier,
            classes=classes,
            **run("uncertainty", cfg.transformation, seed),
        )
        if registered is None:  # the first seed's model is the one registered
            registered = (model, unc_spec | {"seed": seed})
        transformed, log_var = predict_with_uncertainty(model, old["test"], side["test"], device)
        plain_gallery = apply_transformation(plain, old["test"], side["test"], device)
        n = len(transformed)
        orders = {
            p: backfill_order(
                p, n, uncertainty=log_var, transformed=transformed, new=new["test"], seed=seed
            )
            for p in cfg.policies
            if p != "random"
        }
        draws = cfg.random_orders if "random" in cfg.policies else 0
        for k in range(draws):  # averaged below; draw 0 is the single order earlier runs used
            orders[f"random#{k}"] = backfill_order("random", n, seed=seed + RANDOM_SEED_STRIDE * k)
        curves = backfill_curves(
            transformed[gal],
            new["test"][gal],
            new["test"][qry],
            test_labels[qry],
            test_labels[gal],
            {p: _restrict(order, gal) for p, order in orders.items()},
            steps=cfg.steps,
            distance=distance,
            leave_one_out=loo,
        )
        if draws:
            curves["random"] = mean_curve([curves.pop(f"random#{k}") for k in range(draws)])
        curves = {p: curves[p] for p in cfg.policies}
        per_seed[str(seed)] = {
            "transform_only": {"plain": score(plain_gallery), "uncertainty": score(transformed)},
            "curves": {p: c.as_dict() for p, c in curves.items()},
            "final_train": result.history[-1] if result.history else {},
        }
    metrics = summarise(per_seed, cfg)
    # What `fct backfill log` files under the registered transformation version: whose curves.
    metrics["family"] = params.family
    metrics["recipe"] = cfg.transformation.model_dump(mode="json")
    metrics["seconds"] = time.perf_counter() - start  # not tracked in git (see _write)
    _write(out, metrics, per_seed, params)
    if registered is not None:
        _save_transformation(layout.backfill_transformation, *registered)
    return metrics


def query_split(n: int, queries: int | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(query items, gallery items, leave_one_out)``: a fixed draw (the same for every seed,
    so seeds differ only in training and the random order) or every item both ways."""
    everything = torch.arange(n)
    if queries is None:
        return everything, everything, True
    if not 0 < queries < n:
        raise ConfigError(f"backfill.queries must be within 1..{n - 1} (test items), got {queries}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return perm[:queries].sort().values, perm[queries:].sort().values, False


def _restrict(order: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``order`` (over all test items) restricted to ``items``, as positions within ``items``."""
    position = torch.full((int(order.max()) + 1,), -1, dtype=torch.long)
    position[items] = torch.arange(len(items))
    mapped = position[order]
    return mapped[mapped >= 0]


def summarise(per_seed: dict[str, dict], cfg: BackfillConfig) -> dict:
    """Seed means with 95% t intervals; the paired differences the issue asks about."""
    seeds = list(per_seed)
    summary: dict = {"enabled": True, "from": cfg.source, "to": cfg.target, "seeds": seeds}
    summary["auc"] = {
        p: {
            m: mean_ci([per_seed[s]["curves"][p][f"auc_{m}"] for s in seeds])
            for m in ("top1", "mAP")
        }
        for p in cfg.policies
    }
    if {"uncertainty", "random"} <= set(cfg.policies):
        summary["auc_uncertainty_minus_random"] = {
            m: paired(
                [per_seed[s]["curves"]["uncertainty"][f"auc_{m}"] for s in seeds],
                [per_seed[s]["curves"]["random"][f"auc_{m}"] for s in seeds],
            )
            for m in ("top1", "mAP")
        }
    summary["transform_only"] = {
        kind: {
            m: mean_ci([per_seed[s]["transform_only"][kind][m] for s in seeds])
            for m in ("top1", "mAP")
        }
        for kind in ("plain", "uncertainty")
    }
    summary["transform_only_uncertainty_minus_plain"] = {
        m: paired(
            [per_seed[s]["transform_only"]["uncertainty"][m] for s in seeds],
            [per_seed[s]["transform_only"]["plain"][m] for s in seeds],
        )
        for m in ("top1", "mAP")
    }
    summary["per_seed"] = per_seed
    return summary


def _write(out: Path, metrics: dict, per_seed: dict, params: Params) -> None:
    """``metrics.json``, ``curves.csv`` (the DVC plot's data: seed-mean curves, a header only
    when the stage is off, so the file always exists and an earlier run's curves never
    contradict the metrics) and, with curves, ``curves.png``."""
    tracked = {k: v for k, v in metrics.items() if k != "seconds"}  # no timings in git
    (out / "metrics.json").write_text(json.dumps(tracked, indent=2, sort_keys=True) + "\n")
    cfg = params.backfill or BackfillConfig()
    # Wide format, one row per fraction, so `dvc plots` draws one line per policy and metric.
    curves: dict[str, dict] = {}
    for policy in cfg.policies if per_seed else []:
        curves[policy] = {
            "fractions": next(iter(per_seed.values()))["curves"][policy]["fractions"],
            **{m: [per_seed[s]["curves"][policy][m] for s in per_seed] for m in ("top1", "mAP")},
        }
    fields = ["backfilled"] + [f"{p}_{m}" for m in ("top1", "mAP") for p in cfg.policies]
    rows = []
    for i, f in enumerate(next(iter(curves.values()))["fractions"] if curves else []):
        row: dict = {"backfilled": round(100 * f, 4)}
        for p, c in curves.items():
            for m in ("top1", "mAP"):
                row[f"{p}_{m}"] = sum(v[i] for v in c[m]) / len(c[m])
        rows.append(row)
    with (out / "curves.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    if not curves:
        (out / "curves.png").unlink(missing_ok=True)
        return
    plot_curves(
        curves,
        out / "curves.png",
        f"{params.family}: backfilling {cfg.source} -> {cfg.target} "
        f"({len(per_seed)} seeds, test split)",
    )
