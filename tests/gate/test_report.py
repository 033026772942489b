"""Report formats: JUnit XML parsed with xml.etree, strict JSON, markdown and the text table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from xml.etree import ElementTree

import pytest

from fct_registry.config import GateRule
from fct_registry.gate.promote import gate_tags
from fct_registry.gate.report import (
    error_junit_xml,
    format_table,
    junit_xml,
    markdown,
    to_json,
    write_reports,
)
from fct_registry.gate.rules import CheckResult, check_rules, verdict
from fct_registry.gate.run import GateResult
from fct_registry.registry import tags as fct_tags

RULES = {  # explicit, so changing params.yaml's defaults does not change these expectations
    "candidate_top1_vs_baseline": GateRule(case="candidate", reference="baseline"),
    "upgraded_top1_vs_baseline": GateRule(case="upgraded", reference="baseline"),
    "upgraded_top1_vs_candidate": GateRule(case="upgraded", reference="candidate", fraction=0.9),
    "upgraded_mAP_vs_baseline": GateRule(case="upgraded", metric="mAP", reference="baseline"),
    "upgraded_mAP_vs_candidate": GateRule(
        case="upgraded", metric="mAP", reference="candidate", fraction=0.8
    ),
}
SCORES = {
    "candidate": {"top1": 80.0, "top5": 95.0, "mAP": 60.0},
    "baseline": {"top1": 70.0, "top5": 90.0, "mAP": 50.0},
    "upgraded": {"top1": 71.0, "top5": 91.0, "mAP": 49.0},
    "raw": None,
}


def result(scores: dict = SCORES, upgrade: bool = True) -> GateResult:
    checks = [
        CheckResult(
            "upgrade-path",
            "a chain exists",
            "pass" if upgrade else "fail",
            reason="1->3 (1 hop)" if upgrade else "no transformation path",
        )
    ]
    checks += check_rules(RULES, scores)
    return GateResult(
        family="fashion",
        candidate=3,
        baseline=1,
        candidate_ref="fashion@latest",
        baseline_ref="fashion@production",
        verdict=verdict(checks),
        scores=dict(scores),
        checks=checks,
        upgrade={
            "path": [1, 3],
            "hops": [2],
            "uris": ["models:/fashion-transformations/2"],
            "side_info": "fashion-side-info/1",
            "registry_top1": 71.0,
            "basis": "measured",
            "decision": "only route",
            "gap_closed_top1": 10.0,
            "gap_closed_mAP": float("nan"),
        }
        if upgrade
        else None,
        items=300,
        distance="l2",
        tracking_uri="sqlite:///x.db",
        bootstrap=False,
        notes=["raw case not measured: widths differ"],
        seconds=1.5,
    )


def test_junit_lists_every_check_with_failures_and_skips() -> None:
    res = result()
    root = ElementTree.fromstring(junit_xml(res))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"upgrade-path", *RULES}
    failed = {n for n, c in cases.items() if c.find("failure") is not None}
    assert failed == {"upgraded_top1_vs_candidate", "upgraded_mAP_vs_baseline"}
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == "2"
    assert root.get("failures") == "2" and suite.get("errors") == "0"
    message = cases["upgraded_top1_vs_candidate"].find("failure").get("message")
    assert "upgraded top1 >= 0.90 x candidate top1" in message and "71.00 is below 72.00" in message
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["upgraded.top1"] == "71.0000" and props["verdict"] == "fail"
    assert props["upgrade.path"] == "1->3"


def test_junit_marks_unmeasurable_rules_skipped() -> None:
    res = result({**SCORES, "upgraded": None}, upgrade=False)
    suite = ElementTree.fromstring(junit_xml(res)).find("testsuite")
    skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert len(skipped) == 4 and all(n.startswith("upgraded_") for n in skipped)
    assert suite.get("skipped") == "4"
    assert suite.get("failures") == "1"  # the upgrade-path check itself
    assert res.verdict == "fail" and res.exit_code == 1


def test_junit_for_nothing_to_gate_and_for_errors() -> None:
    res = result()
    res.checks, res.verdict = [], "skip"
    res.notes = ["fashion@latest is already fashion@production (version 3): nothing to gate"]
    suite = ElementTree.fromstring(junit_xml(res)).find("testsuite")
    assert suite.get("tests") == "1" and suite.get("skipped") == "1"
    assert res.exit_code == 0
    err = ElementTree.fromstring(error_junit_xml("cannot read the registry")).find("testsuite")
    assert err.get("errors") == "1"
    assert err.find("testcase/error").get("message") == "cannot read the registry"


def test_json_is_strict_and_complete() -> None:
    data = json.loads(to_json(result()))  # json.loads rejects nothing, so check NaN by hand
    assert data["upgrade"]["gap_closed_mAP"] is None
    assert data["verdict"] == "fail" and data["exit_code"] == 1 and data["passed"] is False
    assert data["scores"]["raw"] is None and data["scores"]["upgraded"]["mAP"] == 49.0
    assert next(c["name"] for c in data["checks"]) == "upgrade-path"
    assert "NaN" not in to_json(result())


def test_markdown_and_table_show_numbers_bounds_and_verdict() -> None:
    res = result()
    md = markdown(res)
    assert md.startswith("### ❌ Release gate FAIL: fashion@3 vs fashion@1")
    assert "| upgraded | fashion@3 / fashion@1 upgraded by 1->3 | 71.00 | 91.00 | 49.00 |" in md
    assert "| `upgraded_top1_vs_candidate` | ❌ fail | 71.00 | 72.00 | -1.00 |" in md
    assert "| raw | fashion@3 / fashion@1 as stored | — | — | — |" in md
    table = format_table(res)
    assert "upgraded_top1_vs_candidate  FAIL" in table
    assert "verdict: FAIL: 4 passed, 2 failed, 0 skipped" in table
    assert "note: raw case not measured" in table


def test_write_reports(tmp_path: Path) -> None:
    res = result()
    paths = write_reports(
        res,
        json_path=tmp_path / "a/r.json",
        junit_path=tmp_path / "r.xml",
        markdown_path=tmp_path / "r.md",
    )
    assert [p.name for p in paths] == ["r.json", "r.xml", "r.md"]
    assert json.loads(paths[0].read_text())["candidate"]["version"] == 3
    ElementTree.parse(paths[1])
    assert not list(tmp_path.rglob("*.tmp"))


def test_gate_tags_are_namespaced_and_compact() -> None:
    tags = gate_tags(result())
    assert set(tags) == {fct_tags.GATE_VERDICT, fct_tags.GATE_REPORT}
    assert tags[fct_tags.GATE_VERDICT] == "fail"
    summary = json.loads(tags[fct_tags.GATE_REPORT])
    assert summary["checks"]["upgraded_mAP_vs_baseline"] == {
        "status": "fail",
        "measured": 49.0,
        "bound": 50.0,
    }
    assert summary["upgrade_path"] == [1, 3] and summary["baseline"] == 1
    assert len(tags[fct_tags.GATE_REPORT]) < 5000
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary["scores"].values())


@pytest.mark.parametrize("verdict_", ["pass", "fail"])
def test_exit_codes(verdict_: str) -> None:
    res = result()
    res.verdict = verdict_
    assert res.exit_code == (0 if verdict_ == "pass" else 1)
