"""``fct init``, once its arguments are parsed (the parser is ``fct_registry.cli.init``)."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

import yaml

from fct_registry.errors import ConfigError
from fct_registry.stages.scaffold import (
    build_params,
    check_round_trip,
    parse_versions,
    render,
    write_params,
)


def _command_line(args: argparse.Namespace) -> str:
    words = ["fct", "init", "--family", args.family]
    for value in args.versions:
        words += ["--version", value]
    words += ["--side-info", args.side_info]
    if args.data is not None:
        words += ["--data", args.data]
    for value in args.dim:
        words += ["--dim", value]
    for value in args.preprocess:
        words += ["--preprocess", value]
    if args.no_side_info_edges != "first":
        words += ["--no-side-info-edges", args.no_side_info_edges]
    return shlex.join(words)


def _preprocess(values: list[str]) -> dict[str, dict[str, Any]]:
    """``--preprocess N=BLOCK`` values by key; each block a YAML mapping (checked by Params)."""
    blocks: dict[str, dict[str, Any]] = {}
    for value in values:
        key, sep, text = value.partition("=")
        try:
            block = yaml.safe_load(text) if sep else None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"--preprocess {value!r}: not YAML ({exc.__class__.__name__})"
            ) from None
        if not key.strip() or not isinstance(block, dict):
            raise ConfigError(
                f"--preprocess {value!r}: give N={{resize: R, crop: C, mean: [..], std: [..]}} "
                "(N: a version number, or side_info)"
            )
        blocks[key.strip()] = block
    return blocks


def run(args: argparse.Namespace) -> int:
    dims = {key: int(width) for key, _, width in (d.partition("=") for d in args.dim)}
    params, raw = build_params(
        args.family,
        parse_versions(args.versions),
        args.side_info,
        args.data,
        dims=dims,
        preprocess=_preprocess(args.preprocess),
        no_side_info=args.no_side_info_edges,
    )
    text = render(raw, _command_line(args))
    check_round_trip(text, params)
    if str(args.out) == "-":
        print(text, end="")
        return 0
    write_params(text, args.out, force=args.force)
    edges = ", ".join(params.transformations)
    sources = [params.side_info.source, *(v.source for v in params.versions.values())]
    has_files = any(s is not None and s.local_files(args.out.parent) for s in sources)
    # A local model file must be a DVC dep of its stage (the stage refuses to run otherwise).
    deps = "`python scripts/stage_deps.py --write --model-files`, then " if has_files else ""
    print(
        f"wrote {args.out}: family {params.family}, versions "
        f"{', '.join(map(str, params.versions))}, transformations {edges}; next: {deps}"
        "`dvc repro` (trains, evaluates and registers them)"
    )
    return 0
