"""``fct init --family NAME --version 1=SOURCE --version 2=SOURCE ...``: write a validated
``params.yaml`` for a family from its models or embedding tables (the implementation is
``fct_registry.commands.init``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import add_command
from fct_registry.errors import FctError

DESCRIPTION = """\
Write a params.yaml for your own family, validated before it is written: no need to copy the
default's file and edit it. Each --version names where that version comes from, told apart by
its syntax:

  models:/NAME/N, runs:/ID/PATH      an MLflow model          (source: mlflow)
  FILE.onnx                          an ONNX graph            (source: onnx)
  FILE.pt, FILE.torchscript          a TorchScript module     (source: torchscript)
  pkg.mod:factory[,WEIGHTS]          a Python factory         (source: entrypoint)
  TRAIN.parquet,TEST.parquet         embedding tables, also .safetensors (source: embeddings;
                                     their width is read from them)
  train                              trained here from --data with the default recipe

--side-info is `train` (a small SimCLR extractor trained on --data) or a source as above.
Transformations: each consecutive pair of versions and first -> last, plus twins without
side-info for the edges leaving the first version (what a running deployment's galleries,
indexed without side-info, upgrade through). An existing file is kept unless --force."""

EPILOG = """\
examples:
  fct init --family sentences --version 1=old-train.parquet,old-test.parquet \\
      --version 2=new-train.parquet,new-test.parquet \\
      --side-info side-train.parquet,side-test.parquet
  fct init --family shop --version 1=models:/shop-embedder/4 --version 2=./new.onnx \\
      --dim 1=256 --dim 2=512 --side-info train --data imagefolder:/data/shop"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "init", DESCRIPTION, EPILOG)
    parser.add_argument("--family", required=True, metavar="NAME", help="the family's name")
    parser.add_argument(
        "--version",
        action="append",
        required=True,
        dest="versions",
        metavar="N=SOURCE",
        help="a version and where it comes from (repeat; at least two)",
    )
    parser.add_argument(
        "--side-info",
        default="train",
        metavar="SOURCE",
        help="train (default: a small extractor trained on --data) or a source as above",
    )
    parser.add_argument(
        "--data",
        metavar="SPEC",
        help="images: imagefolder:ROOT, fashion-mnist:ROOT, cifar100:ROOT or TRAIN,TEST "
        "(not for embedding tables)",
    )
    parser.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="N=WIDTH",
        help="a model's embedding width (N: a version, or side_info); tables tell their own",
    )
    parser.add_argument(
        "--preprocess",
        action="append",
        default=[],
        metavar="N=BLOCK",
        help="a model's preprocessing as a YAML mapping (N: a version, or side_info), e.g. "
        "'2={resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}'; "
        "required for ONNX, TorchScript and entry-point models (MLflow models may record it)",
    )
    parser.add_argument(
        "--no-side-info-edges",
        choices=("first", "all", "none"),
        default="first",
        help="which transformations also get a twin reading no side-info (default: those "
        "leaving the first version)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("params.yaml"),
        metavar="FILE",
        help="where to write (default: %(default)s; - prints it)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")


def check(args: argparse.Namespace) -> None:
    if str(args.out) != "-" and args.out.exists() and not args.force:
        raise FctError(f"{args.out} exists; pass --force to overwrite it, or --out ANOTHER.yaml")
    for value in args.dim:
        key, sep, width = value.partition("=")
        if not sep or not width.isdigit() or not (key.isdigit() or key == "side_info"):
            raise FctError(f"--dim {value!r}: write N=WIDTH or side_info=WIDTH, e.g. --dim 2=512")
