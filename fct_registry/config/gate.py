"""The release gate (``fct gate``): the versions it compares and its rules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fct_registry.config._base import _Strict, check_addressable

GateCase = Literal["candidate", "baseline", "upgraded", "raw"]
GateMetric = Literal["top1", "top5", "mAP"]


class GateRule(_Strict):
    """One release-gate threshold, in percent: ``case.metric >= fraction * reference.metric``
    (relative) or ``case.metric >= minimum`` (absolute). Cases: ``candidate`` and ``baseline``
    (each model on its own), ``upgraded`` (candidate queries against the baseline gallery
    upgraded through the resolved chain), ``raw`` (against the baseline gallery as stored)."""

    case: GateCase
    metric: GateMetric = "top1"
    reference: GateCase | None = None
    fraction: float = Field(1.0, gt=0, le=10)
    minimum: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _one_bound(self) -> GateRule:
        if (self.reference is None) == (self.minimum is None):
            raise ValueError(
                "give exactly one bound: `reference: CASE` (with `fraction`) or `minimum: PERCENT`"
            )
        if self.reference == self.case:
            raise ValueError(
                f"a rule compares {self.case!r} with another case; set `reference` "
                "to a different case"
            )
        return self


def _default_gate_rules() -> dict[str, GateRule]:
    return {
        "candidate_top1_vs_baseline": GateRule(
            case="candidate", metric="top1", reference="baseline", fraction=1.0
        ),
        "upgraded_top1_vs_baseline": GateRule(
            case="upgraded", metric="top1", reference="baseline", fraction=1.0
        ),
        "upgraded_top1_vs_candidate": GateRule(
            case="upgraded", metric="top1", reference="candidate", fraction=0.9
        ),
        "upgraded_mAP_vs_baseline": GateRule(
            case="upgraded", metric="mAP", reference="baseline", fraction=1.0
        ),
        "upgraded_mAP_vs_candidate": GateRule(
            case="upgraded", metric="mAP", reference="candidate", fraction=0.85
        ),
    }


class GateConfig(_Strict):
    """The release gate (``fct gate``): which versions it compares and the rules they must pass.

    ``candidate``/``baseline`` are selectors within ``family``: a version number, an alias or
    ``latest`` (so ``production`` means ``<family>@production``).
    """

    candidate: str = Field("latest", pattern=r"^[A-Za-z0-9_-]+$")
    baseline: str = Field("production", pattern=r"^[A-Za-z0-9_-]+$")
    rules: dict[str, GateRule] = Field(default_factory=_default_gate_rules)

    @field_validator("rules")
    @classmethod
    def _named_rules(cls, rules: dict[str, GateRule]) -> dict[str, GateRule]:
        if not rules:
            raise ValueError("declare at least one rule under `gate.rules:`")
        check_addressable(rules)
        return rules
