"""``fct embed --model FAMILY@N --out DST``: index images into a gallery (embedding + side-info)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fct_registry.cli._common import add_tracking_uri
from fct_registry.cli.gallery import embed_destination
from fct_registry.errors import FctError

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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fct_registry.cli.resolve import mlflow_client
    from fct_registry.device import pick_device
    from fct_registry.gallery.embed import index_with_registry, load_images
    from fct_registry.registry.refs import parse_ref

    for flag, value in (
        ("--shard-rows", args.shard_rows),
        ("--batch-size", args.batch_size),
        ("--limit", args.limit),
    ):
        if value is not None and value < 1:
            raise FctError(f"{flag} must be a positive number, got {value}")
    ref = parse_ref(args.model)
    device = pick_device(args.device)
    path = args.images or args.data / f"{args.split}.safetensors"
    items = load_images(path, id_prefix=args.id_prefix, limit=args.limit)
    storage, publish = embed_destination(args.out, path)  # postgresql://: staged, then copied
    client = mlflow_client(args.tracking_uri)
    start = time.perf_counter()
    manifest, used = index_with_registry(
        client,
        ref,
        items,
        storage,
        device=device,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        without_side_info=args.without_side_info,
    )
    uri = publish()
    seconds = time.perf_counter() - start
    summary = {
        "gallery": uri,
        "family": used.family,
        "version": used.version,
        "model": used.model_uri,
        "side_info": used.side_info_ref if not args.without_side_info else None,
        "rows": manifest.rows,
        "shards": len(manifest.shards),
        "embedding_dim": manifest.shards[0].embedding_dim,
        "seconds": seconds,
        "labels": items.labels is not None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        side = summary["side_info"] or "no side-info"
        print(
            f"indexed {manifest.rows} images from {path} with {used.family}@{used.version} "
            f"({summary['embedding_dim']}-d) and {side} into {len(manifest.shards)} shard(s) "
            f"at {uri} in {seconds:.1f} s"
        )
    return 0
