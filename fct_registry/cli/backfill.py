"""``fct backfill plan|run``: partial backfilling of an upgraded gallery in FastFill's order."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from fct_registry.cli._common import add_tracking_uri
from fct_registry.errors import FctError

DESCRIPTION = """\
A gallery upgraded through transformations closes most of the gap to the new model, not all of
it. A partial backfill re-embeds some items from their images with the new model, most
valuable first (FastFill, Jaeckle et al., ICLR 2023): upgraded through an uncertainty-aware
transformation (kind fct-uncertainty), every row carries its predicted uncertainty, and the
most uncertain rows are the ones the transformation serves worst.

  plan  orders the gallery's transformed rows by a policy and keeps a budget (10% of the rows,
        or a count); writes the plan (ids and scores, highest first) as JSON.
  run   re-embeds the planned rows from their images with the plan's target version and
        rewrites them in place (backfilled = true). Atomic and resumable like `fct upgrade`:
        readers see the old gallery until the new manifest is published; after a kill, rerun
        the same command; rerunning a finished plan does nothing."""

EPILOG = """\
examples:
  fct backfill plan --gallery galleries/v1-to-3 --budget 10% \\
      --images outputs/data/test.safetensors --out plan.json
  fct backfill run --plan plan.json
  fct backfill plan --gallery galleries/v1-to-3 --budget 500 --policy random --out random.json
  fct backfill run --plan plan.json --model outputs/models/v3   # a local model, no registry"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="re-embed the most uncertain items of an upgraded gallery (FastFill)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="backfill_command", metavar="{plan,run}", required=True)

    plan = sub.add_parser("plan", help="order items by a policy within a budget")
    plan.add_argument("--gallery", required=True, metavar="G", help="folder or s3://bucket/prefix")
    plan.add_argument(
        "--budget", required=True, help="rows to backfill: a percentage (10%%) or a count"
    )
    plan.add_argument(
        "--policy",
        default="uncertainty",
        choices=["uncertainty", "random", "oracle"],
        help="uncertainty (default), random (baseline), oracle (embeds every candidate: "
        "evaluation only)",
    )
    plan.add_argument("--seed", type=int, default=0, help="random policy's seed (default 0)")
    plan.add_argument(
        "--images",
        metavar="FILE",
        help="the safetensors file the gallery was indexed from (recorded in the plan)",
    )
    plan.add_argument(
        "--out", default="backfill-plan.json", metavar="P", help="plan file (default %(default)s)"
    )
    _model_arguments(plan)
    plan.set_defaults(func=_plan)

    run = sub.add_parser("run", help="re-embed the planned items and rewrite their rows")
    run.add_argument("--plan", required=True, metavar="P", help="a plan from `fct backfill plan`")
    run.add_argument("--images", metavar="FILE", help="override the plan's image source")
    run.add_argument("--batch-size", type=int, default=8192, metavar="ROWS")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    _model_arguments(run)
    run.set_defaults(func=_run)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="a local model folder (model.safetensors + spec.json) of the target version; "
        "default: FAMILY/TARGET from the registry",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    add_tracking_uri(parser)


def _embedder(args: argparse.Namespace, family: str, target: int) -> tuple[Any, str]:
    """``(images -> embeddings, model id)`` for the target version."""
    from fct_registry.device import pick_device
    from fct_registry.training.embed import embed_images

    device = pick_device(args.device)
    if args.model:
        from fct_registry.models.io import WEIGHTS_FILE, load_model

        module, spec = load_model(Path(args.model))
        if spec.get("kind") != "embedding":
            raise FctError(f"{args.model} holds a {spec.get('kind')} model, not an embedding")
        digest = hashlib.sha256((Path(args.model) / WEIGHTS_FILE).read_bytes()).hexdigest()
        model_id = f"local:{digest}"
    else:
        from fct_registry.cli.resolve import mlflow_client
        from fct_registry.registry.flavor import load_model as load_registered

        mlflow_client(args.tracking_uri)  # sets the registry URI for the download
        model_id = f"models:/{family}/{target}"
        module = load_registered(model_id)
    return (lambda images: embed_images(module, images, device).numpy()), model_id


def _plan(args: argparse.Namespace) -> int:
    from fct_registry.backfill import Budget, make_plan, stored_embeddings
    from fct_registry.backfill.images import item_images
    from fct_registry.gallery import Gallery

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
    from fct_registry.backfill import BackfillPlan, run_backfill

    if args.batch_size < 1:
        raise FctError(f"--batch-size must be positive, got {args.batch_size}")
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
