"""``fct upgrade --gallery SRC --to FAMILY@N --out DST``: upgrade a stored gallery, no images."""

from __future__ import annotations

import argparse

from fct_registry.cli._common import (
    add_command,
    add_destination,
    add_json,
    add_no_progress,
    add_tracking_uri,
    check_file,
    check_positive,
    check_store,
)
from fct_registry.registry.refs import parse_ref

# Copies of ``upgrade.engines.ENGINES.names()`` and ``upgrade.job.DEFAULT_BATCH_SIZE`` (a test
# keeps them equal): importing the upgrade package costs seconds, a parser must not.
ENGINE_NAMES = ("local", "ray")
DEFAULT_BATCH_SIZE = 8192

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

SRC and DST are local folders, s3://bucket/prefix (boto3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for S3-compatible servers) or PostgreSQL + pgvector
galleries, postgresql://USER:PASSWORD@HOST:PORT/DB?gallery=NAME (see `fct gallery --help`):
into PostgreSQL the new version is written as a new table and swapped in atomically, so readers
see the old gallery or the new one, never a mix, and `fct gallery rollback` undoes the swap.

--engine ray runs the same per-batch step on a pool of Ray Data actors, one shard per task
(a private local Ray by default, or a cluster with --ray-address); the output is byte-identical
to --engine local's, and either engine can resume a run the other was interrupted in."""

EPILOG = """\
examples:
  fct upgrade --gallery galleries/v1 --to fashion@3 --out galleries/v1-to-3 --dry-run
  fct upgrade --gallery galleries/v1 --to fashion@production --out galleries/v1-up
  AWS_ENDPOINT_URL=http://127.0.0.1:9000 \\
    fct upgrade --gallery s3://bucket/g/v1 --to fashion@3 --out s3://bucket/g/v3
  fct upgrade --gallery galleries/v1 --to fashion@3 --out galleries/v1-to-3 --engine ray
  fct upgrade --gallery "$URL&gallery=fashion" --to fashion@3 --out "$URL&gallery=fashion" --json"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "upgrade", DESCRIPTION, EPILOG)
    parser.add_argument(
        "--gallery",
        required=True,
        metavar="SRC",
        help="the gallery to upgrade: a folder, s3://bucket/prefix or postgresql://...?gallery=NAME",
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="FAMILY@N",
        help="target version: fashion@3, fashion@production, fashion@latest",
    )
    add_destination(
        parser,
        "where the upgraded gallery goes: a folder or s3://bucket/prefix (empty, or an "
        "interrupted run of this same upgrade), or postgresql://...?gallery=NAME",
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
        choices=ENGINE_NAMES,
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
        "--for-backfill",
        action="store_true",
        help="upgrade through the best chain that ends in an uncertainty-aware transformation "
        "(kind fct-uncertainty), so every row gets the uncertainty column that `fct backfill "
        "plan` orders by",
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
    add_no_progress(parser)
    add_json(parser)


def check(args: argparse.Namespace) -> None:
    check_positive(batch_size=args.batch_size, threads=args.threads)
    parse_ref(args.to)
    check_file("--gallery", args.gallery)
    check_store(args.tracking_uri)
