"""``fct upgrade --gallery SRC --to FAMILY@N --out DST``: upgrade a stored gallery, no images."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from fct_registry.cli._common import add_tracking_uri
from fct_registry.cli.gallery import upgrade_pg
from fct_registry.errors import FctError
from fct_registry.gallery.pgvector import is_pg_url

DESCRIPTION = """\
Upgrade every embedding of a gallery (written by `fct embed`, or by an earlier upgrade) to a
newer family version without touching an image: for each version present (a gallery may mix
versions) the registry's best chain of transformations is resolved on the side-info extractor
the gallery was indexed with, its ONNX graphs are verified against the checksums recorded at
registration, and the rows stream through them with ONNX Runtime, batch by batch.

Each output shard is written atomically and the source is only read. Rerunning the same command
after a crash or kill finishes the job (finished shards are skipped) and gives the same bytes as
an uninterrupted run; rerunning after success does nothing. The output manifest records the
chains, the transformation versions and the checksums of every input and output shard.

SRC and DST are local folders or s3://bucket/prefix (boto3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for S3-compatible servers).

--engine ray runs the same per-batch step on a pool of Ray Data actors, one shard per task
(a private local Ray by default, or a cluster with --ray-address); the output is byte-identical
to --engine local's, and either engine can resume a run the other was interrupted in."""

EPILOG = """\
examples:
  fct upgrade --gallery galleries/v1 --to fashion@3 --out galleries/v1-to-3 --dry-run
  fct upgrade --gallery galleries/v1 --to fashion@production --out galleries/v1-up
  AWS_ENDPOINT_URL=http://127.0.0.1:9000 \\
    fct upgrade --gallery s3://bucket/g/v1 --to fashion@3 --out s3://bucket/g/v3
  fct upgrade --gallery galleries/v1 --to fashion@3 --out galleries/v1-to-3 --engine ray"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from fct_registry.upgrade.engines import ENGINES
    from fct_registry.upgrade.job import DEFAULT_BATCH_SIZE

    parser = subparsers.add_parser(
        "upgrade",
        help="upgrade a stored gallery to a newer version through registered transformations",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--gallery",
        required=True,
        metavar="SRC",
        help="the gallery to upgrade: a folder or s3://bucket/prefix",
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="FAMILY@N",
        help="target version: fashion@3, fashion@production, fashion@latest",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DST",
        help="where the upgraded gallery goes (empty, or an interrupted run of this same upgrade)",
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="ROWS",
        help="rows per batch through the chain and per output row group "
        "(default: %(default)s); part of the job's identity when resuming",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="ONNX Runtime threads (default: one per core; with --engine ray, "
        "per worker: CPUs / workers)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES.names(),
        default="local",
        help="where shards are processed: local (this process) or ray (Ray "
        "Data actors, needs ray[data]); same output bytes (default: local)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --engine ray: a running Ray cluster (ray://head:10001, or "
        "auto); default: start a private local Ray on this machine's CPUs",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --engine ray: actors, each loading the chain once "
        "(default: one per CPU, at most one per shard)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the chains, the row count and the estimated time; write nothing",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="skip bad shards (nothing is written for them), upgrade the rest, "
        "and list the failures at the end",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fct_registry.cli.resolve import mlflow_client
    from fct_registry.gallery import Gallery, open_storage
    from fct_registry.registry.refs import parse_ref
    from fct_registry.registry.register import redact_uri
    from fct_registry.upgrade import plan_from_registry

    if args.batch_size < 1:
        raise FctError(f"--batch-size must be a positive number of rows, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise FctError(f"--threads must be at least 1, got {args.threads}")
    if is_pg_url(args.gallery) or is_pg_url(args.out):  # served from PostgreSQL + pgvector
        return upgrade_pg(args, mlflow_client(args.tracking_uri))
    engine = _engine(args)
    target = parse_ref(args.to)
    source = Gallery.open(args.gallery)
    dest = open_storage(args.out)
    client = mlflow_client(args.tracking_uri)
    import mlflow

    registry = redact_uri(mlflow.get_registry_uri())
    with tempfile.TemporaryDirectory(prefix="fct-upgrade-") as work:
        plan = plan_from_registry(
            client,
            source.manifest,
            target,
            Path(work),
            gallery=source.uri,
            threads=args.threads,
            registry=registry,
        )
        if args.dry_run:
            return _dry_run(args, source, dest, plan)
        report = engine.run(
            source,
            dest,
            plan,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            keep_going=args.keep_going,
        )
    summary = {
        "source": report.source,
        "destination": report.destination,
        "target": f"{plan.family}@{plan.target}",
        "engine": args.engine,
        "rows": report.rows,
        "shards": report.shards,
        "skipped_shards": report.skipped_shards,
        "already_complete": report.already_complete,
        "upgraded_rows": report.upgraded_rows,
        "seconds": report.seconds,
        "cpu_seconds": report.cpu_seconds,
        "rows_per_second": report.rows_per_second,
        "chains": [r.label(plan.family) for r in plan.routes.values()],
        "fingerprint": report.fingerprint,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    elif report.already_complete:
        print(
            f"{dest.uri} already holds this upgrade ({report.rows} rows of "
            f"{plan.family}@{plan.target}); nothing to do"
        )
    else:
        resumed = (
            f" ({report.skipped_shards} shards finished by an earlier run were kept)"
            if report.skipped_shards
            else ""
        )
        print(
            f"upgraded {report.upgraded_rows} rows in "
            f"{_count(report.shards - report.skipped_shards, 'shard')} to "
            f"{plan.family}@{plan.target}{resumed} in {report.seconds:.1f} s "
            f"({report.rows_per_second:,.0f} rows/s, {report.cpu_seconds:.1f} s CPU)"
        )
        for label in summary["chains"]:
            print(f"  {label}")
        print(f"wrote {dest.uri}/manifest.json")
    return 0


def _engine(args: argparse.Namespace) -> Any:
    """The engine ``--engine`` names, with the options that apply to it."""
    from fct_registry.upgrade.engines import create_engine

    if args.engine != "ray":
        given = [
            flag
            for flag, value in (("--ray-address", args.ray_address), ("--workers", args.workers))
            if value is not None
        ]
        if given:
            raise FctError(
                f"{' and '.join(given)} only "
                f"{'apply' if len(given) > 1 else 'applies'} to --engine ray; add "
                "--engine ray or drop it"
            )
        return create_engine(args.engine)
    if args.workers is not None and args.workers < 1:
        raise FctError(f"--workers must be at least 1, got {args.workers}")
    return create_engine(
        "ray", address=args.ray_address, workers=args.workers, threads=args.threads
    )


def _dry_run(args: argparse.Namespace, source: Any, dest: Any, plan: Any) -> int:
    from fct_registry.gallery.errors import GalleryError
    from fct_registry.upgrade.job import inspect_destination
    from fct_registry.upgrade.plan import estimate

    manifest = source.manifest
    guess = estimate(plan, manifest)
    problems = []
    for shard in manifest.shards:
        try:
            plan.check_shard(shard, f"{source.uri}/{shard.path}")
        except GalleryError as exc:
            problems.append(str(exc))
    state = inspect_destination(dest, plan.fingerprint(args.batch_size), source)
    done = len(manifest.shards) if state.complete else len(state.done)
    chains = []
    for key, rows in manifest.groups.items():
        route = plan.routes[key]
        chains.append(
            {
                "from": key[0],
                "side_info": key[1],
                "rows": rows,
                "chain": route.label(plan.family),
                "steps": [s.uri for s in route.steps],
                "top1": route.top1,
                "basis": route.basis,
                "rows_per_second": guess.rates.get(key),
            }
        )
    out = {
        "source": source.uri,
        "destination": dest.uri,
        "target": f"{plan.family}@{plan.target}",
        "target_dim": plan.target_dim,
        "rows": manifest.rows,
        "shards": len(manifest.shards),
        "chains": chains,
        "estimated_seconds": guess.seconds,
        "shards_already_done": done,
        "problems": problems,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"dry run: {source.uri} -> {dest.uri} ({plan.family}@{plan.target}, {plan.target_dim}-d)")
    print(f"rows: {manifest.rows:,} in {_count(len(manifest.shards), 'shard')}")
    for c in chains:
        rate = c["rows_per_second"]
        speed = f", {rate:,.0f} rows/s measured" if rate else ""
        score = f", top-1 {c['top1']:.2f}% ({c['basis']})" if c["top1"] is not None else ""
        print(f"  {c['rows']:,} rows: {c['chain']}{score}{speed}")
    print(
        f"estimated time: {_duration(guess.seconds)} through the chains (reading, checking and "
        "writing add a few percent)"
    )
    if done:
        print(
            f"{done} of {len(manifest.shards)} shards are already done at {dest.uri} and "
            "would be skipped"
        )
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 2 if problems else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
