"""The gate's result for people and for CI: a text table, JSON, JUnit XML and markdown.

All four render one :class:`~fct_registry.gate.run.GateResult` and nothing else, so they
cannot disagree. JUnit has one test case per rule (``failure`` / ``skipped`` as measured) so any
CI test-report viewer lists the rules; the markdown is meant for ``$GITHUB_STEP_SUMMARY`` or a
pull-request comment.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

from fct_registry._files import publish_mode
from fct_registry.gate.rules import CASES, CheckResult
from fct_registry.gate.run import GateResult
from fct_registry.registry import tags as fct_tags

METRICS = ("top1", "top5", "mAP")
_HEAD = {"top1": "top-1 %", "top5": "top-5 %", "mAP": "mAP %"}


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _pair(result: GateResult, case: str) -> str:
    """``query / gallery`` of a case, in version numbers."""
    f, c, b = result.family, result.candidate, result.baseline
    if case == "candidate":
        return f"{f}@{c} / {f}@{c}"
    if b is None:
        return "— (no baseline)"
    if case == "baseline":
        return f"{f}@{b} / {f}@{b}"
    if case == "upgraded":
        up = result.upgrade
        how = f"upgraded by {'->'.join(map(str, up['path']))}" if up else "upgraded (no chain)"
        return f"{f}@{c} / {f}@{b} {how}"
    return f"{f}@{c} / {f}@{b} as stored"


def _counts(result: GateResult) -> dict[str, int]:
    out = {"pass": 0, "fail": 0, "skipped": 0}
    for check in result.checks:
        out[check.status] += 1
    return out


def verdict_line(result: GateResult) -> str:
    n = _counts(result)
    if result.verdict == "skip":
        return f"SKIP: {result.notes[-1] if result.notes else 'nothing to gate'}"
    took = "" if result.seconds is None else f" ({result.seconds:.1f} s)"
    return (
        f"{result.verdict.upper()}: {n['pass']} passed, {n['fail']} failed, "
        f"{n['skipped']} skipped{took}"
    )


def _rows(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 1) or i == len(cells) - 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def format_table(result: GateResult) -> str:
    """The readable report printed by ``fct gate``."""
    lines = [
        f"fct gate: {result.title}  (asked: candidate {result.candidate_ref}, baseline "
        f"{result.baseline_ref}{'; bootstrap' if result.bootstrap else ''})",
    ]
    if result.verdict != "skip":
        lines.append(
            f"held-out split: {result.items} items, {result.distance} distance, leave-one-out\n"
        )
        lines += _rows(
            ["case", "query / gallery", *(_HEAD[m] for m in METRICS)],
            [
                [
                    case,
                    _pair(result, case),
                    *(_num((result.scores.get(case) or {}).get(m)) for m in METRICS),
                ]
                for case in CASES
            ],
        )
        if result.upgrade:
            up = result.upgrade
            lines.append(
                f"\nupgrade chain: {'->'.join(map(str, up['path']))} through "
                f"{', '.join(up['uris'])} (registry top-1 {up['registry_top1']:.2f}%, "
                f"{up['basis']}); gap closed: top-1 {_num(up['gap_closed_top1'])}%, "
                f"mAP {_num(up['gap_closed_mAP'])}%"
            )
        lines.append("")
        lines += _rows(
            ["check", "status", "measured", "bound", "margin", "rule"],
            [
                [
                    c.name,
                    c.status.upper() if c.status != "skipped" else "skipped",
                    _num(c.measured) if c.bound is not None else "",
                    _num(c.bound),
                    _num(c.margin, signed=True),
                    _rule_text(c),
                ]
                for c in result.checks
            ],
        )
    lines.append("")
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"verdict: {verdict_line(result)}")
    if result.promotion:
        lines.append(f"promotion: {result.promotion['message']}")
        if result.promotion.get("run"):
            lines.append(f"history: {_history_line(result)}")
    return "\n".join(lines)


def _history_line(result: GateResult) -> str:
    assert result.promotion is not None
    return (
        f"recorded as run {result.promotion['run']} of experiment "
        f"{fct_tags.experiment_name(result.family)} (fct.role=gate)"
    )


def _rule_text(check: CheckResult) -> str:
    if check.status == "pass" and check.bound is not None:
        return check.description
    return f"{check.description}: {check.reason}" if check.reason else check.description


def to_json(result: GateResult) -> str:
    """Strict JSON (NaN, e.g. an undefined gap-closed share, becomes null)."""
    return json.dumps(finite(result.to_dict()), indent=2, sort_keys=True, allow_nan=False) + "\n"


def finite(value: object) -> object:
    """``value`` with every non-finite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def junit_xml(result: GateResult, timestamp: datetime | None = None) -> str:
    """JUnit XML: one ``testsuite`` for the gate, one ``testcase`` per check."""
    n = _counts(result)
    checks = result.checks or [
        CheckResult(
            "gate", "the candidate is a new version", "skipped", reason=verdict_line(result)
        )
    ]
    if not result.checks:
        n = {"pass": 0, "fail": 0, "skipped": 1}
    attrs = {
        "tests": str(len(checks)),
        "failures": str(n["fail"]),
        "errors": "0",
        "skipped": str(n["skipped"]),
        "time": f"{result.seconds or 0:.3f}",
    }
    suites = ElementTree.Element("testsuites", {"name": "fct gate", **attrs})
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        {
            "name": f"fct-gate.{result.family}",
            **attrs,
        }
        # tracked reports (the DVC stage: no timing) carry no wall-clock time either
        | (
            {}
            if result.seconds is None and timestamp is None
            else {"timestamp": (timestamp or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S")}
        ),
    )
    props = ElementTree.SubElement(suite, "properties")
    for name, value in _properties(result).items():
        ElementTree.SubElement(props, "property", {"name": name, "value": value})
    for check in checks:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            {"classname": f"fct.gate.{result.family}", "name": check.name, "time": "0"},
        )
        detail = (
            f"{check.description}\nmeasured: {_num(check.measured)}  bound: "
            f"{_num(check.bound)}  margin: {_num(check.margin, signed=True)}\n"
            f"{check.reason}"
        )
        if check.status == "fail":
            failure = ElementTree.SubElement(
                case,
                "failure",
                {"message": f"{check.description}: {check.reason}", "type": "GateRuleFailed"},
            )
            failure.text = detail
        elif check.status == "skipped":
            ElementTree.SubElement(case, "skipped", {"message": check.reason or "not evaluated"})
        else:
            ElementTree.SubElement(case, "system-out").text = detail
    ElementTree.SubElement(suite, "system-out").text = format_table(result)
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _properties(result: GateResult) -> dict[str, str]:
    props = {
        "candidate": f"{result.family}@{result.candidate}",
        "baseline": f"{result.family}@{result.baseline}" if result.baseline is not None else "",
        "verdict": result.verdict,
        "distance": result.distance,
        "items": str(result.items),
        "bootstrap": str(result.bootstrap).lower(),
    }
    for case, scores in result.scores.items():
        for metric, value in (scores or {}).items():
            props[f"{case}.{metric}"] = f"{value:.4f}"
    if result.upgrade:
        props["upgrade.path"] = "->".join(map(str, result.upgrade["path"]))
    return props


def markdown(result: GateResult) -> str:
    """A summary for CI pages (``$GITHUB_STEP_SUMMARY``) and pull requests."""
    icon = {"pass": "✅", "fail": "❌", "skip": "⏭️"}[result.verdict]
    lines = [f"### {icon} Release gate {result.verdict.upper()}: {result.title}", ""]
    lines.append(
        f"Candidate `{result.candidate_ref}` → version {result.candidate}; baseline "
        f"`{result.baseline_ref}` → "
        f"{'version ' + str(result.baseline) if result.baseline is not None else 'none'}"
        f"{' (bootstrap)' if result.bootstrap else ''}. {verdict_line(result)}."
    )
    if result.verdict != "skip":
        lines += [
            "",
            f"Held-out split: {result.items} items, {result.distance} distance, leave-one-out.",
            "",
            "| case | query / gallery | top-1 % | top-5 % | mAP % |",
            "|---|---|---:|---:|---:|",
        ]
        for case in CASES:
            s = result.scores.get(case) or {}
            lines.append(
                f"| {case} | {_pair(result, case)} | "
                + " | ".join(_num(s.get(m)) for m in METRICS)
                + " |"
            )
        lines += [
            "",
            "| check | status | measured | bound | margin | rule |",
            "|---|---|---:|---:|---:|---|",
        ]
        mark = {"pass": "✅ pass", "fail": "❌ fail", "skipped": "⏭️ skipped"}
        for c in result.checks:
            measured = _num(c.measured) if c.bound is not None else ""
            text = _rule_text(c).replace("|", "\\|")
            lines.append(
                f"| `{c.name}` | {mark[c.status]} | {measured} | {_num(c.bound)} | "
                f"{_num(c.margin, signed=True)} | {text} |"
            )
        if result.upgrade:
            up = result.upgrade
            lines += [
                "",
                f"Upgrade chain {'->'.join(map(str, up['path']))}: "
                + ", ".join(f"`{u}`" for u in up["uris"])
                + f" ({up['basis']}; gap closed: top-1 {_num(up['gap_closed_top1'])}%, "
                f"mAP {_num(up['gap_closed_mAP'])}%).",
            ]
    if result.notes:
        lines += ["", *(f"- {n}" for n in result.notes)]
    if result.promotion:
        lines += ["", f"**Promotion:** {result.promotion['message']}"]
        if result.promotion.get("run"):
            lines += ["", f"**History:** {_history_line(result)}."]
    return "\n".join(lines) + "\n"


def error_junit_xml(message: str) -> str:
    """JUnit for a run that could not judge (exit 2): one ``error``, so CI shows it as broken."""
    suites = ElementTree.Element(
        "testsuites",
        {"name": "fct gate", "tests": "1", "failures": "0", "errors": "1", "skipped": "0"},
    )
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        {"name": "fct-gate", "tests": "1", "failures": "0", "errors": "1", "skipped": "0"},
    )
    case = ElementTree.SubElement(suite, "testcase", {"classname": "fct.gate", "name": "gate"})
    ElementTree.SubElement(case, "error", {"message": message, "type": "GateError"}).text = message
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def error_markdown(message: str) -> str:
    return f"### ⚠️ Release gate could not run\n\n```\n{message}\n```\n"


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write atomically (a CI step reading a half-written report would misreport)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8"
    ) as fh:
        fh.write(text)
    publish_mode(Path(fh.name)).replace(path)  # 0600 from tempfile breaks shared volumes
    return path


def write_reports(
    result: GateResult,
    *,
    json_path: str | os.PathLike | None = None,
    junit_path: str | os.PathLike | None = None,
    markdown_path: str | os.PathLike | None = None,
) -> list[Path]:
    """Write whichever reports were asked for; returns their paths."""
    written = []
    if json_path:
        written.append(write_text(json_path, to_json(result)))
    if junit_path:
        written.append(write_text(junit_path, junit_xml(result)))
    if markdown_path:
        written.append(write_text(markdown_path, markdown(result)))
    return written
