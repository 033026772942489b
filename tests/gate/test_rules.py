"""Gate rules (pure checks over numbers), their config validation, and choosing the versions."""

from __future__ import annotations

import pytest

from fct_registry.config import GateConfig, GateRule, parse_params
from fct_registry.errors import ConfigError
from fct_registry.gate.errors import GateError
from fct_registry.gate.rules import TOLERANCE, check_rule, check_rules, describe, verdict
from fct_registry.gate.run import as_ref, choose_versions
from fct_registry.registry.refs import parse_ref
from fct_registry.resolver.errors import UnknownVersionError
from fct_registry.resolver.graph import CompatibilityGraph
from tests.resolver.records import emb, side, tr

SCORES = {
    "candidate": {"top1": 80.0, "top5": 95.0, "mAP": 60.0},
    "baseline": {"top1": 70.0, "top5": 90.0, "mAP": 50.0},
    "upgraded": {"top1": 71.0, "top5": 91.0, "mAP": 45.0},
    "raw": None,
}


def rule(**kw: object) -> GateRule:
    return GateRule.model_validate(kw)


@pytest.mark.parametrize(
    ("kw", "status", "bound"),
    [
        ({"case": "upgraded", "reference": "baseline"}, "pass", 70.0),
        ({"case": "upgraded", "reference": "candidate", "fraction": 0.9}, "fail", 72.0),
        ({"case": "upgraded", "metric": "mAP", "reference": "baseline"}, "fail", 50.0),
        (
            {"case": "upgraded", "metric": "mAP", "reference": "candidate", "fraction": 0.75},
            "pass",
            45.0,
        ),  # equal to the bound: passes
        ({"case": "candidate", "metric": "top5", "minimum": 95.5}, "fail", 95.5),
        ({"case": "candidate", "minimum": 0}, "pass", 0.0),
    ],
)
def test_check_rule_compares_measured_with_bound(kw: dict, status: str, bound: float) -> None:
    result = check_rule("r", rule(**kw), SCORES)
    assert result.status == status
    assert result.bound == pytest.approx(bound)
    assert result.measured == SCORES[kw["case"]][kw.get("metric", "top1")]
    assert result.margin == pytest.approx(result.measured - bound)


def test_equal_numbers_through_float_paths_pass_but_a_hair_below_fails() -> None:
    value = 0.1 + 0.2  # 0.30000000000000004
    scores = {"upgraded": {"top1": 0.3}, "baseline": {"top1": value}}
    assert check_rule("r", rule(case="upgraded", reference="baseline"), scores).status == "pass"
    scores["upgraded"]["top1"] = value - 10 * TOLERANCE
    assert check_rule("r", rule(case="upgraded", reference="baseline"), scores).status == "fail"


def test_unmeasured_case_skips_with_reason_and_does_not_fail() -> None:
    results = check_rules(
        {
            "a": rule(case="raw", reference="baseline"),
            "b": rule(case="upgraded", reference="baseline"),
        },
        {**SCORES, "baseline": None},
    )
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert results[0].reason == "not measured: raw, baseline"
    assert results[1].reason == "not measured: baseline"
    assert verdict(results) == "pass"


def test_verdict_fails_on_any_failure() -> None:
    results = check_rules(GateConfig().rules, SCORES)
    names = {r.name: r.status for r in results}
    assert names["upgraded_top1_vs_candidate"] == "fail"  # 71 < 0.9 * 80
    assert names["upgraded_top1_vs_baseline"] == "pass"
    assert verdict(results) == "fail"
    assert verdict([]) == "pass"


def test_describe() -> None:
    assert describe(rule(case="upgraded", metric="mAP", reference="candidate", fraction=0.8)) == (
        "upgraded mAP >= 0.80 x candidate mAP"
    )
    assert describe(rule(case="candidate", minimum=85)) == "candidate top1 >= 85.00%"


# --- configuration ---------------------------------------------------------------------------


def test_params_yaml_gate_section_is_the_typed_default(default_raw_params: dict) -> None:
    params = parse_params(default_raw_params)
    assert params.gate == GateConfig()
    assert params.gate.candidate == "latest" and params.gate.baseline == "production"
    assert set(params.gate.rules) >= {"upgraded_top1_vs_baseline", "upgraded_mAP_vs_candidate"}


@pytest.mark.parametrize(
    ("rule_raw", "message"),
    [
        ({"case": "upgraded"}, "give exactly one bound"),
        ({"case": "upgraded", "reference": "baseline", "minimum": 50}, "give exactly one bound"),
        ({"case": "upgraded", "reference": "upgraded"}, "set `reference` to a different case"),
        ({"case": "upgradde", "reference": "baseline"}, "gate.rules.r.case"),
        ({"case": "upgraded", "reference": "baseline", "fraction": 0}, "greater than 0"),
        ({"case": "upgraded", "metric": "map", "reference": "baseline"}, "gate.rules.r.metric"),
        ({"case": "upgraded", "reference": "baseline", "fractoin": 1}, "Extra inputs"),
    ],
)
def test_bad_rules_fail_at_load_naming_the_place(
    default_raw_params: dict, rule_raw: dict, message: str
) -> None:
    default_raw_params["gate"]["rules"] = {"r": rule_raw}
    with pytest.raises(ConfigError, match=message):
        parse_params(default_raw_params)


def test_bad_rule_name_and_empty_rules(default_raw_params: dict) -> None:
    default_raw_params["gate"]["rules"] = {"a b": {"case": "candidate", "minimum": 1}}
    with pytest.raises(ConfigError, match="cannot be addressed by `dvc exp run -S`"):
        parse_params(default_raw_params)
    default_raw_params["gate"]["rules"] = {}
    with pytest.raises(ConfigError, match="at least one rule"):
        parse_params(default_raw_params)


# --- choosing the versions (pure: a graph built from records) ---------------------------------


def graph(aliases: dict[str, int] | None = None, versions: int = 3) -> CompatibilityGraph:
    records = [side(1), *(emb(v) for v in range(1, versions + 1)), tr(1, 1, 2, 90.0)]
    return CompatibilityGraph.from_records("fashion", records, aliases)


def test_choose_production_and_latest() -> None:
    g = graph({"production": 2})
    assert choose_versions(g, as_ref("fashion@latest"), as_ref("production", "fashion"), False) == (
        3,
        2,
        False,
        [],
    )


def test_missing_alias_without_bootstrap_says_how_to_start() -> None:
    with pytest.raises(UnknownVersionError, match=r"no alias 'production' yet .* pass --bootstrap"):
        choose_versions(graph(), as_ref("fashion@3"), as_ref("fashion@production"), False)


def test_bootstrap_compares_with_the_previous_version() -> None:
    cand, base, boot, notes = choose_versions(
        graph(), as_ref("fashion@3"), as_ref("fashion@production"), True
    )
    assert (cand, base, boot) == (3, 2, True)
    assert "compared with the previous version fashion@2" in notes[0]


def test_bootstrap_of_the_first_version_has_no_baseline() -> None:
    cand, base, boot, notes = choose_versions(
        graph(versions=1), as_ref("fashion@1"), as_ref("fashion@production"), True
    )
    assert (cand, base, boot) == (1, None, True)
    assert "only rules that need no baseline" in notes[0]


def test_bootstrap_is_ignored_once_the_alias_exists() -> None:
    cand, base, boot, notes = choose_versions(
        graph({"production": 1}), as_ref("fashion@3"), as_ref("fashion@production"), True
    )
    assert (cand, base, boot) == (3, 1, False)
    assert "no effect" in notes[0]


def test_rollback_is_refused_with_the_manual_fix() -> None:
    with pytest.raises(GateError, match=r"older than baseline .*set_registered_model_alias"):
        choose_versions(
            graph({"production": 3}), as_ref("fashion@2"), as_ref("fashion@production"), False
        )


def test_unknown_candidate_lists_known_versions() -> None:
    with pytest.raises(UnknownVersionError, match="unknown version 9 of fashion; known: 1, 2, 3"):
        choose_versions(
            graph({"production": 1}), as_ref("fashion@9"), as_ref("fashion@production"), False
        )


@pytest.mark.parametrize("text", ["fashion/3", "models:/fashion/3", "fashion@3"])
def test_as_ref_takes_full_references_as_they_are(text: str) -> None:
    # A full reference is never prefixed with the family (``fashion@fashion/3`` was refused).
    assert as_ref(text, "fashion") == parse_ref(text)
