"""``fct backfill plan|run``, once its arguments are parsed (the parser is
``fct_registry.cli.backfill``)."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fct_registry.backfill.images import ItemImages
from fct_registry.backfill.plan import (
    BackfillPlan,
    Budget,
    make_plan,
    open_gallery,
    source_uris,
    stored_embeddings,
)
from fct_registry.backfill.run import IMAGE_CHUNK, run_backfill
from fct_registry.backfill.tracking import log_backfill_metrics, read_metrics, seed_mean_curve
from fct_registry.cli.embed import decoding
from fct_registry.commands._summary import print_summary
from fct_registry.data.decode import ImageTransform
from fct_registry.device import pick_device
from fct_registry.errors import FctError
from fct_registry.gallery.embed import transform_for
from fct_registry.gate.rules import check_backfill
from fct_registry.layout import read_given
from fct_registry.models.io import WEIGHTS_FILE, load_model
from fct_registry.registry.flavor import load_model as load_registered
from fct_registry.registry.given import NoModelError, no_model_message
from fct_registry.registry.store import open_tracking_store
from fct_registry.training.embed import embed_images


def run(args: argparse.Namespace) -> int:
    commands = {"plan": _plan, "run": _run, "log": _log, "check": _check}
    return commands[args.backfill_command](args)


def _embedder(
    args: argparse.Namespace, family: str, target: int
) -> tuple[Callable[[Any], np.ndarray], str, ImageTransform | None]:
    """``(images -> embeddings, model id, image transform)`` for the target version; the
    transform decodes image files as ``fct embed`` does (the version's input shape, and
    ``--resize``/``--upscale``/``--color``/``--max-pixels``); ``None`` when the model records no
    input shape."""
    device = pick_device(args.device)
    if args.model:
        if read_given(Path(args.model)) is not None:
            raise NoModelError(no_model_message(f"the model in {args.model}"))
        module, spec = load_model(Path(args.model))
        if spec.get("kind") != "embedding":
            raise FctError(f"{args.model} holds a {spec.get('kind')} model, not an embedding")
        digest = hashlib.sha256((Path(args.model) / WEIGHTS_FILE).read_bytes()).hexdigest()
        model_id = f"local:{digest}"
        shape = spec.get("input_shape")
        transform = ImageTransform.for_input_shape(shape, **decoding(args)) if shape else None
    else:
        open_tracking_store(args.tracking_uri, read_only=True)  # the registry to download from
        model_id = f"models:/{family}/{target}"
        module = load_registered(model_id)
        # as `fct embed` decodes for it (an external model's recorded resize)
        transform = transform_for(model_id, **decoding(args))
    return (lambda images: embed_images(module, images, device).numpy()), model_id, transform


def _plan(args: argparse.Namespace) -> int:
    budget = Budget.parse(args.budget)
    gallery = open_gallery(args.gallery)
    embed = transformed = None
    if args.policy == "oracle":
        fn, _, transform = _embedder(
            args, gallery.manifest.family, next(iter(gallery.manifest.versions))
        )
        images = ItemImages(transform, args.images)

        def embed(ids: list[str]) -> Any:
            uris = source_uris(gallery, ids)
            images.check(ids, uris)
            parts = [
                fn(images.load(ids[lo : lo + IMAGE_CHUNK], uris[lo : lo + IMAGE_CHUNK]))
                for lo in range(0, len(ids), IMAGE_CHUNK)
            ]
            return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

        def transformed(ids: list[str]) -> Any:
            return stored_embeddings(gallery, ids)

    plan = make_plan(
        gallery,
        budget,
        args.policy,
        seed=args.seed,
        images=str(Path(args.images).resolve()) if args.images else None,
        embed=embed,
        transformed=transformed,
    )
    plan.write(args.out)
    print(
        f"planned {len(plan.ids)} of {plan.candidates} candidate rows of {gallery.uri} "
        f"(budget {plan.budget}, policy {plan.policy}) -> {args.out}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    plan = BackfillPlan.read(args.plan)
    embed, model_id, transform = _embedder(args, plan.family, plan.target)
    report = run_backfill(
        plan,
        embed,
        model_id=model_id,
        images=args.images,
        transform=transform,
        batch_size=args.batch_size,
    )
    summary = {
        "gallery": report.gallery,
        "planned": report.planned,
        "shards_rewritten": report.shards,
        "shards_resumed": report.skipped_shards,
        "already_complete": report.already_complete,
        "seconds": report.seconds,
    }
    done = f"{report.gallery}: this plan was already applied; nothing to do"
    if not print_summary(summary, args.json, done):
        print(
            f"backfilled {report.planned} rows of {report.gallery} with "
            f"{plan.family}@{plan.target}: {report.shards} shard(s) rewritten "
            f"({report.skipped_shards} resumed) in {report.seconds:.1f} s"
        )
    return 0


def _log(args: argparse.Namespace) -> int:
    family = args.family or read_metrics(args.metrics).get("family")
    if not family:
        raise FctError(f"{args.metrics} records no family (an older stage run); pass --family F")
    logged = log_backfill_metrics(
        args.metrics,
        family=family,
        transformation=args.transformation,
        tracking_uri=args.tracking_uri,
    )
    what = "logged" if logged.created else "already logged (same metrics.json)"
    print(
        f"{what}: {logged.metrics} backfilling metrics and the curves on "
        f"{logged.model}/{logged.version} (run {logged.run_id} in experiment fct-{family}; "
        f"version tag fct.backfill.run)"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    """The rule on the seed-mean curve decides; each seed's own curve is shown beside it."""
    metrics = read_metrics(args.metrics)
    within = float(args.within.strip()[:-1]) / 100
    rule = {"within": within, "fraction": args.fraction, "metric": args.metric}
    fractions, values = seed_mean_curve(metrics, args.policy, args.metric)
    result = check_backfill("backfill", fractions, values, policy=args.policy, **rule)
    per_seed = {}
    for seed, data in metrics["per_seed"].items():
        curve = data["curves"][args.policy]
        one = check_backfill(
            f"seed {seed}", curve["fractions"], curve[args.metric], policy=args.policy, **rule
        )
        per_seed[seed] = one.as_dict()
    if args.json:
        print(json.dumps({**result.as_dict(), "per_seed": per_seed}, indent=2))
    else:
        print(f"{result.status.upper()}: {result.description} ({result.reason}; seed mean)")
        for seed, one in per_seed.items():
            print(f"  seed {seed}: {one['status']} ({one['reason']})")
    if result.status == "skipped":
        raise FctError(f"cannot decide: {result.reason}")
    return 0 if result.status == "pass" else 1
