"""``fct embed --model FAMILY@N --out DST``: index images into a gallery (embedding + side-info)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fct_registry.cli._common import (
    add_command,
    add_destination,
    add_device,
    add_json,
    add_no_progress,
    add_tracking_uri,
    check_file,
    check_not_negative,
    check_positive,
    check_store,
)
from fct_registry.errors import FctError
from fct_registry.registry.refs import parse_ref

# Copies of ``data.decode.DEFAULT_MAX_PIXELS`` and ``MAX_PIXELS_ENV`` (a test keeps them equal):
# importing the decoder costs torch, a parser must not.
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "FCT_MAX_PIXELS"

DESCRIPTION = """\
Embed images with a registered family version and the side-info extractor linked to it, and
write a gallery: Parquet shards (id, embedding, side_info, model_version, side_info_version and
the label when known) plus manifest.json (row counts, checksums, versions). Both models are
downloaded through the fct flavor, which verifies their checksums first.

Images come from --images: a folder in ImageFolder layout (class subfolders are labels), a flat
folder (optionally with manifest.csv/.parquet: id,path[,label]), a CSV/Parquet manifest, tar
shards in WebDataset layout (key.jpg + key.cls), any of these under s3://bucket/prefix, or a
safetensors file of uint8 [N, C, H, W] `images` (default: the pipeline's prepared split,
outputs/data/<split>.safetensors). Images are decoded in --workers DataLoader workers, resized
(shorter side) and centre-cropped to the version's input shape; each row records its source URI.
An image whose header declares more than --max-pixels pixels (default 50 MP) is a bad image,
refused before it is decoded.

Streaming and resumable: memory does not grow with the collection, and after an interruption
(even kill -9) rerunning the same command finishes the job, skipping finished shards. DST is a
local folder or s3://bucket/prefix (boto3 credentials; AWS_ENDPOINT_URL for S3-compatible
servers). --engine ray runs the same per-shard function on Ray Data actors (a private local
Ray, or a cluster with --ray-address): same gallery files, and either engine resumes the other's
interrupted run. One run per DST at a time: a second one fails at once naming the holder
(DST/_fct_embed.lease; a killed holder's lease on this host is taken over)."""

EPILOG = """\
examples:
  fct embed --model fashion@1 --split test --out galleries/v1
  fct embed --model fashion@production --images photos/ --out galleries/prod
  fct embed --model fashion@1 --images s3://bucket/photos --out s3://bucket/galleries/v1
  fct embed --model fashion@1 --images shards/train-{000..009}.tar --on-bad-image skip --out g1"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "embed", DESCRIPTION, EPILOG)
    parser.add_argument(
        "--model",
        required=True,
        metavar="FAMILY@N",
        help="the version to embed with: fashion@1, fashion@production, ...",
    )
    add_destination(parser, "an empty folder or s3://bucket/prefix for the gallery")
    parser.add_argument(
        "--images",
        nargs="+",
        metavar="SRC",
        help="folder, s3://bucket/prefix, manifest.csv|.parquet, shard.tar ... or "
        "FILE.safetensors (default: DATA/SPLIT.safetensors)",
    )
    parser.add_argument(
        "--kind",
        default="auto",
        help="force the source kind: imagefolder, folder, manifest, tar, safetensors "
        "(default: detected)",
    )
    add_gallery_writing(
        parser,
        on_bad_image="a corrupt, unreadable or unusable image stops the job (fail, default) or "
        "is left out and listed in DST/skipped.jsonl (skip)",
        workers="DataLoader worker processes decoding images (default: %(default)s)",
        batch_size="images per forward pass (default: %(default)s)",
        shard_rows="rows per Parquet shard (default: %(default)s)",
    )
    add_decoding(
        parser,
        resize="resize the shorter side to PX before the centre crop (default: the "
        "preprocessing recorded with an external version, else the crop size); an explicit "
        "--resize wins",
        upscale="enlarge images smaller than the crop (default: such images are bad images)",
        color="images with other channels than the model reads: convert them (default) or "
        "treat them as bad images (strict)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="where shards are indexed: local (this process) or ray (Ray Data actors, one "
        "shard per task, needs ray[data]); same gallery files (default: local)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --engine ray: a running Ray cluster (ray://head:10001, or auto); default: "
        "a private local Ray on this machine's CPUs",
    )
    parser.add_argument(
        "--actors",
        type=int,
        metavar="N",
        help="with --engine ray: actors, each loading the models once (default: one per CPU, "
        "at most one per shard)",
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
        help="safetensors input: ids are P<row number> (default: the file's stem and a dash)",
    )
    parser.add_argument(
        "--without-side-info",
        action="store_true",
        help="store no side-info (only chains reading none can upgrade it)",
    )
    add_tracking_uri(parser)
    add_json(parser, "the manifest summary")


def add_gallery_writing(
    parser: argparse.ArgumentParser,
    *,
    on_bad_image: str,
    workers: str,
    batch_size: str,
    shard_rows: str,
) -> None:
    """How a job that reads images writes a gallery (``fct embed``, ``fct gallery
    add-side-info``): one set of flags and defaults, each command's own help wording."""
    parser.add_argument(
        "--on-bad-image", choices=("fail", "skip"), default="fail", help=on_bad_image
    )
    parser.add_argument("--workers", type=int, default=2, metavar="N", help=workers)
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help=batch_size)
    parser.add_argument("--shard-rows", type=int, default=100_000, metavar="N", help=shard_rows)
    add_device(parser)
    add_no_progress(parser)


def gallery_writing(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`add_gallery_writing`'s values as the keywords of the gallery writers
    (``gallery.embed.index_with_registry``, ``gallery.side_info.add_side_info``); ``--device``
    is the caller's to resolve (that imports torch)."""
    return {
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "shard_rows": args.shard_rows,
        "on_bad_image": args.on_bad_image,
        "progress": not args.no_progress and not args.json,
    }


def check_gallery_writing(args: argparse.Namespace) -> None:
    check_positive(shard_rows=args.shard_rows, batch_size=args.batch_size)
    check_not_negative(workers=args.workers)


def add_decoding(parser: argparse.ArgumentParser, *, resize: str, upscale: str, color: str) -> None:
    """How images are decoded to a version's input (``fct embed``, ``fct backfill``)."""
    parser.add_argument("--resize", type=int, metavar="PX", help=resize)
    parser.add_argument("--upscale", action="store_true", help=upscale)
    parser.add_argument("--color", choices=("convert", "strict"), default="convert", help=color)
    parser.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="an image whose header declares more than N pixels (width x height) is a bad "
        "image, refused before decoding (a small file can declare gigapixels); 0: no limit "
        f"(default: ${MAX_PIXELS_ENV}, else {DEFAULT_MAX_PIXELS:,})",
    )


def decoding(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`add_decoding`'s values as the keywords of ``data.decode.ImageTransform`` (and of
    the gallery writers that build one); no ``--resize``: -1, the version's own size."""
    return {
        "resize": -1 if args.resize is None else args.resize,
        "upscale": args.upscale,
        "color": args.color,
        "max_pixels": args.max_pixels,
    }


def check_max_pixels(args: argparse.Namespace) -> None:
    if args.max_pixels is not None and args.max_pixels < 0:
        raise FctError(
            f"--max-pixels must be 0 (no limit) or a pixel count, got {args.max_pixels}; "
            f"e.g. --max-pixels {DEFAULT_MAX_PIXELS}"
        )


def check(args: argparse.Namespace) -> None:
    check_max_pixels(args)
    check_gallery_writing(args)
    check_positive(limit=args.limit, resize=args.resize)
    parse_ref(args.model)
    for path in args.images or [args.data]:
        if "{" not in str(path):  # shard patterns such as train-{000..009}.tar expand later
            check_file("--images" if args.images else "--data", path)
    check_store(args.tracking_uri)
