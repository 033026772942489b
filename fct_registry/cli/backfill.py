"""``fct backfill plan|run``: partial backfilling of an upgraded gallery in FastFill's order (the
parser; the implementation is ``fct_registry.commands.backfill``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from fct_registry.cli._common import (
    add_command,
    add_device,
    add_json,
    add_tracking_uri,
    check_file,
    check_positive,
    check_store,
)
from fct_registry.cli.embed import add_decoding, check_max_pixels
from fct_registry.errors import FctError

# Copies of ``backfill.run.DEFAULT_BATCH_SIZE`` and ``evaluation.backfill.ORDERS.names()`` (a test
# keeps them equal): importing the backfill package costs torch and pyarrow, a parser must not.
DEFAULT_BATCH_SIZE = 8192
POLICIES = ("uncertainty", "random", "oracle")

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
        the same command; rerunning a finished plan does nothing.
  log   files the backfill stage's curves (outputs/backfill/metrics.json, curves.csv/png) in
        MLflow as a run of the family's experiment fct-<family>, linked to the registered
        uncertainty-aware transformation they measure (tag fct.backfill.run on the version).
  check a release rule on those curves, e.g. "backfilling 20% in uncertainty order, the
        gallery reaches 98% of the new model's top-1"; exit 0 pass, 1 fail (as `fct gate`).

Images are found from each row's source_uri, which `fct embed --images` records (a file path,
s3://bucket/key, SHARD.tar#MEMBER or FILE.safetensors#ROW), and decoded as `fct embed` does:
resized and centre-cropped to the target version's input shape (pass the same --resize,
--upscale and --color as to `fct embed`). Rows without a source_uri read --images FILE, a
safetensors file whose row number ends each id."""

EPILOG = """\
examples:
  fct backfill plan --gallery galleries/v1-to-3 --budget 10% --out plan.json
  fct backfill run --plan plan.json
  fct backfill plan --gallery galleries/v1-to-3 --budget 500 --policy random --out random.json
  fct backfill run --plan plan.json --model outputs/models/v3   # a local model, no registry
  fct backfill log --metrics outputs/backfill/metrics.json   # newest fct-uncertainty 1 -> 3
  fct backfill check --within 20% --metric top1 --fraction 0.98"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "backfill", DESCRIPTION, EPILOG)
    sub = parser.add_subparsers(
        dest="backfill_command", metavar="{plan,run,log,check}", required=True
    )

    plan = sub.add_parser("plan", help="order items by a policy within a budget")
    plan.add_argument("--gallery", required=True, metavar="G", help="folder or s3://bucket/prefix")
    plan.add_argument(
        "--budget", required=True, help="rows to backfill: a percentage (10%%) or a count"
    )
    plan.add_argument(
        "--policy",
        default="uncertainty",
        choices=POLICIES,
        help="uncertainty (default), random (baseline), oracle (embeds every candidate: "
        "evaluation only)",
    )
    plan.add_argument("--seed", type=int, default=0, help="random policy's seed (default 0)")
    plan.add_argument(
        "--images",
        metavar="FILE",
        help="rows without a source_uri: the safetensors file the gallery was indexed from "
        "(recorded in the plan)",
    )
    plan.add_argument(
        "--out", default="backfill-plan.json", metavar="P", help="plan file (default %(default)s)"
    )
    _model_arguments(plan)

    run = sub.add_parser("run", help="re-embed the planned items and rewrite their rows")
    run.add_argument("--plan", required=True, metavar="P", help="a plan from `fct backfill plan`")
    run.add_argument(
        "--images", metavar="FILE", help="rows without a source_uri: override the plan's file"
    )
    run.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="ROWS")
    add_json(run, "the report")
    _model_arguments(run)

    log = sub.add_parser(
        "log", help="log the backfill stage's curves on the transformation version (MLflow)"
    )
    log.add_argument(
        "--metrics",
        default="outputs/backfill/metrics.json",
        metavar="FILE",
        help="the backfill stage's metrics.json; curves.csv/png beside it are logged too "
        "(default %(default)s)",
    )
    log.add_argument(
        "--transformation",
        metavar="NAME/VERSION",
        help="the version to link (default: the newest uncertainty-aware transformation with "
        "the curves' from/to in FAMILY-transformations)",
    )
    log.add_argument("--family", help="default: the family recorded in the metrics")
    add_tracking_uri(log)

    check = sub.add_parser("check", help="a release rule on the backfilling curves (exit 0/1)")
    check.add_argument(
        "--metrics",
        default="outputs/backfill/metrics.json",
        metavar="FILE",
        help="the backfill stage's metrics.json (default %(default)s)",
    )
    check.add_argument(
        "--within", required=True, metavar="P%", help="share of the gallery backfilled, e.g. 20%%"
    )
    check.add_argument("--metric", choices=("top1", "mAP"), default="top1")
    check.add_argument(
        "--fraction",
        type=float,
        default=0.98,
        help="of the new model's score (the curve at 100%%), default %(default)s",
    )
    check.add_argument("--policy", choices=POLICIES, default="uncertainty")
    add_json(check, "the result")


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="a local model folder (model.safetensors + spec.json) of the target version; "
        "default: FAMILY/TARGET from the registry",
    )
    add_device(parser, help="auto (CUDA when present), cpu, cuda")
    add_decoding(
        parser,
        resize="as for `fct embed`: the shorter side before the centre crop (default: crop size)",
        upscale="as for `fct embed`: enlarge small images",
        color="as for `fct embed`: convert images with other channels (default) or refuse them",
    )
    add_tracking_uri(parser)


def check(args: argparse.Namespace) -> None:
    """Argument checks that need neither torch nor pyarrow (the budget's syntax, files)."""
    if args.backfill_command == "check":
        text = args.within.strip()
        if not re.fullmatch(r"\d+(\.\d+)?\s*%", text) or float(text[:-1].strip()) > 100:
            raise FctError(f"--within {args.within!r} is not a percentage within 0..100% (20%)")
        if not 0 < args.fraction <= 1:
            raise FctError(f"--fraction must be within (0, 1], got {args.fraction}")
        check_file("--metrics", Path(args.metrics))
        return
    if args.backfill_command == "log":
        check_file("--metrics", Path(args.metrics))
        check_store(args.tracking_uri)  # the version to link must already be registered
        return
    if args.backfill_command == "plan":
        text = args.budget.strip()
        if not re.fullmatch(r"\d+(\.\d+)?\s*%|\d+", text):
            raise FctError(
                f"--budget {args.budget!r} is neither a percentage of the gallery (10%) nor a "
                "row count (5000)"
            )
        if text.endswith("%") and float(text[:-1]) > 100:
            raise FctError(f"--budget {args.budget!r}: a percentage must be within 0..100%")
        check_file("--gallery", args.gallery)
    else:
        check_positive(batch_size=args.batch_size)
        if not Path(args.plan).is_file():
            raise FctError(
                f"--plan file {args.plan} does not exist; write one with `fct backfill plan`"
            )
    check_max_pixels(args)
    check_file("--images", args.images and Path(args.images))
    if args.model:
        check_file("--model", Path(args.model))
    elif args.backfill_command == "run" or args.policy == "oracle":
        check_store(args.tracking_uri)  # the target version comes from the registry
