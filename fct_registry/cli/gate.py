"""``fct gate --candidate F@N --baseline F@production``: may the candidate replace the baseline?

Exit status: 0 the gate passed (or there was nothing to gate), 1 a rule failed, 2 the gate could
not judge (bad arguments, unreachable registry, missing outputs, any unexpected error), so CI
can tell a failing model from a broken run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fct_registry.cli._common import (
    add_command,
    add_device,
    add_json,
    add_outputs,
    add_tracking_uri,
)
from fct_registry.config import GateConfig, load_params
from fct_registry.errors import FctError

DESCRIPTION = """\
Release gate. On the held-out split (the stored test embeddings of `dvc repro`), measure the
candidate on its own, the baseline on its own, candidate queries against the baseline gallery
upgraded through the chain `fct resolve` picks, and against the raw baseline gallery (what
shipping without a transformation would give). Check the rules of params.yaml's `gate:` section
(e.g. the upgraded gallery's top-1 must not fall below the baseline's own, and must reach 90% of
the candidate's own) and report each with its measured value and bound.

--promote moves the baseline's alias (production) to the candidate only if every rule passes;
with --promote or --record, the verdict and numbers are stored as fct.gate.* tags on the
candidate version, and the run is added to the family's gate history (one MLflow run per
recorded evaluation in the experiment fct-FAMILY; --history lists it). Without them the gate is
read-only.

No production alias yet (first release): pass --bootstrap to compare with the newest version
older than the candidate (or, for a family's first version, check only rules that need no
baseline).

Exit status: 0 pass (or candidate already is the baseline), 1 a rule failed, 2 the gate could
not run."""

EPILOG = """\
examples:
  fct gate                                   # params.yaml: fashion@latest vs fashion@production
  fct gate --candidate fashion@3 --baseline fashion@production --promote
  fct gate --bootstrap --promote             # first release: no production alias yet
  fct gate --junit gate.xml --markdown gate.md --json-out gate.json
  fct gate --history 10                      # the last 10 recorded verdicts, newest first"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "gate", DESCRIPTION, EPILOG)
    parser.add_argument(
        "--candidate",
        metavar="F@N",
        help="version to judge (default: gate.candidate of --params, i.e. FAMILY@latest)",
    )
    parser.add_argument(
        "--baseline",
        metavar="F@ALIAS",
        help="version it must not regress from (default: gate.baseline of "
        "--params, i.e. FAMILY@production)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        metavar="PATH",
        help="params file with the gate rules (default: ./params.yaml, or the "
        "built-in defaults when there is none)",
    )
    add_outputs(
        parser, "pipeline outputs with the stored test embeddings (default: %(default)s)", "DIR"
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="when the baseline alias does not exist yet, compare with the "
        "previous version instead of failing with status 2",
    )
    parser.add_argument(
        "--promote",
        action="store_true",
        help="move the baseline's alias to the candidate if every rule passes (implies --record)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="store the verdict and numbers as fct.gate.* tags on the candidate and add the "
        "run to the gate history",
    )
    parser.add_argument(
        "--history",
        type=int,
        nargs="?",
        const=20,
        metavar="N",
        help="print the family's last N recorded gate runs (default 20), newest first, and "
        "exit; measures nothing",
    )
    add_json(parser, help="print JSON instead of the table")
    parser.add_argument("--json-out", type=Path, metavar="PATH", help="also write the JSON report")
    parser.add_argument("--junit", type=Path, metavar="PATH", help="also write JUnit XML")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write a markdown summary (e.g. $GITHUB_STEP_SUMMARY)",
    )
    parser.add_argument(
        "--distance",
        choices=("l2", "cosine"),
        help="retrieval distance (default: evaluation.distance of --params, the "
        "one registry numbers were measured with)",
    )
    add_device(parser, "cpu", "where to compute: cpu (default), cuda or auto")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Candidate, baseline, rules and distance: command line over params.yaml over defaults."""

    path = args.params or Path("params.yaml")
    if args.params is not None or path.is_file():
        params = load_params(path)  # a missing explicit --params is an error
        family, gate, distance = params.family, params.gate, params.evaluation.distance
    else:
        family, gate, distance = None, GateConfig(), "l2"
    candidate = args.candidate or (f"{family}@{gate.candidate}" if family else None)
    if candidate is None:
        raise FctError(
            f"no --candidate and no {path} to take the family from; pass "
            "--candidate FAMILY@N (e.g. fashion@latest)"
        )
    return {
        "candidate": candidate,
        "baseline": args.baseline or gate.baseline,
        "rules": gate.rules,
        "distance": args.distance or distance,
    }
