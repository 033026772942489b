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

from fct_registry.backfill import (
    BackfillPlan,
    Budget,
    item_images,
    make_plan,
    run_backfill,
    stored_embeddings,
)
from fct_registry.device import pick_device
from fct_registry.errors import FctError
from fct_registry.gallery import Gallery
from fct_registry.models.io import WEIGHTS_FILE, load_model
from fct_registry.registry.flavor import load_model as load_registered
from fct_registry.registry.store import open_tracking_store
from fct_registry.training.embed import embed_images


def run(args: argparse.Namespace) -> int:
    return {"plan": _plan, "run": _run}[args.backfill_command](args)


def _embedder(
    args: argparse.Namespace, family: str, target: int
) -> tuple[Callable[[Any], np.ndarray], str]:
    """``(images -> embeddings, model id)`` for the target version."""
    device = pick_device(args.device)
    if args.model:
        module, spec = load_model(Path(args.model))
        if spec.get("kind") != "embedding":
            raise FctError(f"{args.model} holds a {spec.get('kind')} model, not an embedding")
        digest = hashlib.sha256((Path(args.model) / WEIGHTS_FILE).read_bytes()).hexdigest()
        model_id = f"local:{digest}"
    else:
        open_tracking_store(args.tracking_uri, read_only=True)  # the registry to download from
        model_id = f"models:/{family}/{target}"
        module = load_registered(model_id)
    return (lambda images: embed_images(module, images, device).numpy()), model_id


def _plan(args: argparse.Namespace) -> int:
    budget = Budget.parse(args.budget)
    gallery = Gallery.open(args.gallery)
    embed = transformed = None
    if args.policy == "oracle":
        if not args.images:
            raise FctError("--policy oracle embeds every candidate: pass --images FILE")
        fn, _ = _embedder(args, gallery.manifest.family, next(iter(gallery.manifest.versions)))

        def embed(ids: list[str]) -> Any:
            return fn(item_images(ids, args.images))

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
    embed, model_id = _embedder(args, plan.family, plan.target)
    report = run_backfill(
        plan, embed, model_id=model_id, images=args.images, batch_size=args.batch_size
    )
    summary = {
        "gallery": report.gallery,
        "planned": report.planned,
        "shards_rewritten": report.shards,
        "shards_resumed": report.skipped_shards,
        "already_complete": report.already_complete,
        "seconds": report.seconds,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    elif report.already_complete:
        print(f"{report.gallery}: this plan was already applied; nothing to do")
    else:
        print(
            f"backfilled {report.planned} rows of {report.gallery} with "
            f"{plan.family}@{plan.target}: {report.shards} shard(s) rewritten "
            f"({report.skipped_shards} resumed) in {report.seconds:.1f} s"
        )
    return 0
