"""``fct embed --model FAMILY@N --out DST``: index images into a gallery (embedding + side-info)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import add_tracking_uri, check_file, check_positive, check_store
from fct_registry.registry.refs import parse_ref

DESCRIPTION = """\
Embed images with a registered family version and the side-info extractor linked to it, and
write a gallery: Parquet shards (id, embedding, side_info, model_version, side_info_version and
the label when known) plus manifest.json (row counts, checksums, versions). Both models are
downloaded through the fct flavor, which verifies their checksums first.

Images come from a safetensors file holding uint8 [N, C, H, W] `images` (and optionally
`labels`), by default the pipeline's prepared split (outputs/data/<split>.safetensors). DST is a
local folder or s3://bucket/prefix (boto3 credentials; AWS_ENDPOINT_URL for S3-compatible
servers)."""

EPILOG = """\
examples:
  fct embed --model fashion@1 --split test --out galleries/v1
  fct embed --model fashion@production --images my-images.safetensors --out s3://bucket/g/prod"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="index images into a gallery with a registered version and its side-info",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="FAMILY@N",
        help="the version to embed with: fashion@1, fashion@production, ...",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DST",
        help="an empty folder or s3://bucket/prefix for the gallery",
    )
    parser.add_argument(
        "--images",
        type=Path,
        metavar="FILE",
        help="safetensors file of uint8 images (default: DATA/SPLIT.safetensors)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("outputs/data"),
        metavar="DIR",
        help="the pipeline's prepared data (default: %(default)s)",
    )
    parser.add_argument("--split", default="test", help="split to index (default: %(default)s)")
    parser.add_argument("--limit", type=int, metavar="N", help="index only the first N images")
    parser.add_argument(
        "--id-prefix",
        metavar="P",
        help="ids are P<row number> (default: the file's stem and a dash)",
    )
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=100_000,
        metavar="N",
        help="rows per Parquet shard (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=512,
        metavar="N",
        help="images per forward pass (default: %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument(
        "--without-side-info",
        action="store_true",
        help="store no side-info (only chains reading none can upgrade it)",
    )
    add_tracking_uri(parser)
    parser.add_argument("--json", action="store_true", help="print the manifest summary as JSON")


def check(args: argparse.Namespace) -> None:
    check_positive(shard_rows=args.shard_rows, batch_size=args.batch_size, limit=args.limit)
    parse_ref(args.model)
    check_file("--images" if args.images else "--data", args.images or args.data)
    check_store(args.tracking_uri)
