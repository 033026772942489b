"""The shared shell of every DVC stage entry point in ``pipelines/``: parse ``--params`` and
``--outputs``, load and validate params, run the stage, turn input errors into exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fct_registry.config import Params, load_params
from fct_registry.errors import FctError
from fct_registry.pipeline.layout import Layout

StageFn = Callable[[Params, Layout, argparse.Namespace], object]


def run_stage(description: str, stage: StageFn, argv: Sequence[str] | None = None,
              add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file (default: params.yaml)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"),
                        help="root folder of pipeline outputs (default: outputs)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    # Shared 2-core machines: a spinning OpenMP pool collapses throughput under load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        stage(load_params(args.params), Layout(args.outputs), args)
    except FctError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
