"""``fct gate``, once its arguments are parsed (the parser is ``fct_registry.cli.gate``)."""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from fct_registry._redact import redact
from fct_registry.cli._common import check_positive
from fct_registry.cli.gate import settings as gate_settings
from fct_registry.device import pick_device
from fct_registry.errors import FctError
from fct_registry.gate import report
from fct_registry.gate.history import format_history, read_history
from fct_registry.gate.promote import promotion_alias, record_and_promote
from fct_registry.gate.report import error_junit_xml, error_markdown, write_text
from fct_registry.gate.run import EXIT_ERROR, as_ref, run_gate
from fct_registry.layout import Layout


def run(args: argparse.Namespace) -> int:

    try:
        settings = gate_settings(args)
        if args.history is not None:
            return _history(args, as_ref(settings["candidate"]).family)
        if args.promote:
            promotion_alias(str(as_ref(settings["baseline"], as_ref(settings["candidate"]).family)))
        result = run_gate(
            settings["candidate"],
            settings["baseline"],
            settings["rules"],
            layout=Layout(args.outputs),
            tracking_uri=args.tracking_uri,
            distance=settings["distance"],
            device=str(pick_device(args.device)),
            bootstrap=args.bootstrap,
        )
        if args.promote or args.record:
            record_and_promote(result, promote=args.promote, tracking_uri=args.tracking_uri)
    except FctError as exc:
        _error_reports(args, str(exc))
        raise
    except Exception as exc:  # a crash is a broken run (2), never a failing model (1)
        print(redact(traceback.format_exc()), file=sys.stderr, end="")  # scrubbed: URIs
        message = (
            f"the gate crashed ({type(exc).__name__}: {redact(str(exc))}); this is a bug or a "
            "broken environment, not a verdict on the model"
        )
        _error_reports(args, message)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
    report.write_reports(
        result, json_path=args.json_out, junit_path=args.junit, markdown_path=args.markdown
    )
    print(report.to_json(result).rstrip("\n") if args.json else report.format_table(result))
    return result.exit_code


def _history(args: argparse.Namespace, family: str) -> int:
    """``fct gate --history N``: the recorded gate runs, newest first; nothing is measured."""
    check_positive(history=args.history)
    if args.promote or args.record:
        raise FctError(
            "--history only lists recorded gate runs; run the gate with --record/--promote "
            "separately"
        )
    records = read_history(family, args.history, args.tracking_uri)
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
    else:
        print(format_history(family, records))
    return 0


def _error_reports(args: argparse.Namespace, message: str) -> None:
    """On exit 2, still leave JUnit/markdown saying why, so CI shows a broken run as one."""

    try:
        if args.junit:
            write_text(args.junit, error_junit_xml(message))
        if args.markdown:
            write_text(args.markdown, error_markdown(message))
    except OSError as exc:  # pragma: no cover - the original error matters more
        print(f"warning: could not write the error report: {exc}", file=sys.stderr)
