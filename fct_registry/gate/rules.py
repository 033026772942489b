"""Gate rules as pure functions over measured numbers: no MLflow, no tensors, no I/O.

A rule (:class:`~fct_registry.config.GateRule`, validated from ``params.yaml``) bounds one
measured case: ``case.metric >= fraction * reference.metric`` or ``case.metric >= minimum``.
Measurements arrive as ``{case: {"top1", "top5", "mAP"} or None}`` (percent); ``None`` means the
case could not be measured (no baseline while bootstrapping, no upgrade path, embeddings of
different widths), and a rule that needs it is *skipped*, never silently passed: the reason is
in the report, and a separate check (e.g. ``upgrade-path``) is what fails the gate then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from fct_registry.config import GateRule

Status = Literal["pass", "fail", "skipped"]
Verdict = Literal["pass", "fail", "skip"]
Measured = Mapping[str, Mapping[str, float] | None]

TOLERANCE = 1e-9
"""Percent. ``measured >= bound - TOLERANCE`` passes: equal numbers reached through different
float paths (e.g. ``1.0 * x``) must not fail a no-regression rule."""

CASES: dict[str, str] = {
    "candidate": "candidate queries / candidate gallery",
    "baseline": "baseline queries / baseline gallery",
    "upgraded": "candidate queries / baseline gallery upgraded by the chain",
    "raw": "candidate queries / baseline gallery as stored (no transformation)",
}
"""Every measurable case and what it means; the report shows them in this order."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one rule (or built-in check such as ``upgrade-path``)."""

    name: str
    description: str  # e.g. "upgraded top1 >= 0.90 x candidate top1"
    status: Status
    measured: float | None = None
    bound: float | None = None
    reason: str = ""

    @property
    def margin(self) -> float | None:
        """``measured - bound`` in percentage points (negative: by how much it failed)."""
        if self.measured is None or self.bound is None:
            return None
        return self.measured - self.bound

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "margin": self.margin}


def describe(rule: GateRule) -> str:
    """The rule as a readable inequality, e.g. ``upgraded mAP >= 0.80 x candidate mAP``."""
    if rule.reference is not None:
        return f"{rule.case} {rule.metric} >= {rule.fraction:.2f} x {rule.reference} {rule.metric}"
    return f"{rule.case} {rule.metric} >= {rule.minimum:.2f}%"


def _value(measured: Measured, case: str, metric: str) -> float | None:
    scores = measured.get(case)
    return None if scores is None else float(scores[metric])


def check_rule(name: str, rule: GateRule, measured: Measured) -> CheckResult:
    """Evaluate one rule; skipped (with the reason) when a case it reads was not measured."""
    text = describe(rule)
    value = _value(measured, rule.case, rule.metric)
    if rule.reference is not None:
        reference = _value(measured, rule.reference, rule.metric)
        missing = [c for c, v in ((rule.case, value), (rule.reference, reference)) if v is None]
        bound = None if reference is None else rule.fraction * reference
    else:
        missing = [rule.case] if value is None else []
        bound = rule.minimum
    if missing:
        return CheckResult(
            name, text, "skipped", value, bound, f"not measured: {', '.join(missing)}"
        )
    assert value is not None and bound is not None
    ok = value >= bound - TOLERANCE
    verb = "reaches" if ok else "is below"
    return CheckResult(
        name, text, "pass" if ok else "fail", value, bound, f"{value:.2f} {verb} {bound:.2f}"
    )


def check_rules(rules: Mapping[str, GateRule], measured: Measured) -> list[CheckResult]:
    """Every rule, in the order declared."""
    return [check_rule(name, rule, measured) for name, rule in rules.items()]


def verdict(checks: Iterable[CheckResult]) -> Verdict:
    """``fail`` if any check failed, else ``pass`` (skipped checks do not block: whatever made
    them unmeasurable is itself a failing check, or an explicit ``--bootstrap``)."""
    return "fail" if any(c.status == "fail" for c in checks) else "pass"


def check_backfill(
    name: str,
    fractions: Sequence[float],
    values: Sequence[float],
    *,
    within: float,
    fraction: float,
    metric: str = "top1",
    policy: str = "uncertainty",
) -> CheckResult:
    """FastFill's release question on a backfilling curve (``values`` at ``fractions`` of the
    gallery backfilled, percent): re-embedding at most ``within`` of the gallery in the
    ``policy`` order, does search reach ``fraction`` x the new model's ``metric`` (the curve's
    value at 100% backfilled)? The curve is read at ``within``, linearly between measured
    points; skipped when the curve does not reach 100%."""
    text = (
        f"{policy} backfill of {100 * within:g}%: {metric} >= {fraction:.2f} x new model {metric}"
    )
    if not fractions or abs(fractions[-1] - 1.0) > 1e-9:
        return CheckResult(name, text, "skipped", reason="the curve does not reach 100% backfilled")
    value = _interpolate(fractions, values, within)
    bound = fraction * float(values[-1])
    ok = value >= bound - TOLERANCE
    verb = "reaches" if ok else "is below"
    return CheckResult(
        name, text, "pass" if ok else "fail", value, bound, f"{value:.2f} {verb} {bound:.2f}"
    )


def _interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """``ys`` at ``x`` (``xs`` increasing), linear between neighbours, clamped at the ends."""
    if x <= xs[0]:
        return float(ys[0])
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], float(ys[i - 1]), float(ys[i])
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return float(ys[-1])
