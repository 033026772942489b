"""``fct register``, once its arguments are parsed (the parser is ``fct_registry.cli.register``)."""

from __future__ import annotations

import argparse
import json
import logging

from fct_registry.config import load_params
from fct_registry.layout import Layout
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.register import register_all


def run(args: argparse.Namespace) -> int:

    if not args.json:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("fct_registry.registry").setLevel(logging.INFO)
    # The same registration as the DVC stage: models, then the chains measured end to end.
    summary, chains = register_all(
        load_params(args.params), Layout(args.outputs), args.tracking_uri
    )
    if args.json:
        print(json.dumps(summary.as_dict() | {"chains": chains}, indent=2, sort_keys=True))
        return 0
    print(
        f"{summary.family} in {summary.tracking_uri} (git {summary.git_commit[:12]}): "
        f"{summary.created} new, {summary.unchanged} unchanged"
    )
    for label, versions in (
        ("side-info", {summary.side_info.pipeline_key: summary.side_info}),
        ("embedding", summary.embeddings),
        ("transformation", summary.transformations),
    ):
        for key, v in versions.items():
            ends = (
                f"  {summary.family}@{v.source} -> {summary.family}@{v.target}"
                if v.source is not None
                else ""
            )
            state = "new" if v.created else "unchanged"
            print(f"  {label:<15}{key:<20}{v.uri:<36}{state}{ends}")
    chains_model = fct_tags.transformations_model_name(summary.family)
    for version in chains:
        print(f"  {'chain':<15}{'(measured)':<20}{f'models:/{chains_model}/{version}':<36}recorded")
    return 0
