"""Why the resolver chose a route: the decision in one sentence, a ranked table, a JSON record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fct_registry.registry import tags as fct_tags
from fct_registry.resolver.search import Route

SCORING = (
    "single transformations and recorded chains score their measured top-1; a route joining "
    "several of them is estimated as 100 * product(top1 / 100) of its parts; highest top-1 wins, "
    "ties go to fewer hops"
)


@dataclass(frozen=True)
class Resolution:
    """The chosen chain, the alternatives it beat, and why."""

    family: str
    source: int
    target: int
    side_info: str | None
    chosen: Route | None  # None when source == target: nothing to apply
    alternatives: tuple[Route, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def model(self) -> str:
        return fct_tags.transformations_model_name(self.family)

    @property
    def decision(self) -> str:
        f, model = self.family, self.model
        if self.chosen is None:
            return f"{f}@{self.source} is already the target version; nothing to apply"
        best = self.chosen
        head = f"{best.label()} ({best.top1:.2f}% top-1, {best.basis(model)})"
        if not self.alternatives:
            return f"{head} is the only route from {f}@{self.source} to {f}@{self.target}"
        runner = self.alternatives[0]
        other = f"{runner.label()} ({runner.top1:.2f}%, {runner.basis(model)})"
        if best.key[0] == runner.key[0]:
            rule = (
                f"fewer hops ({best.n_hops} vs {runner.n_hops})"
                if best.n_hops != runner.n_hops
                else "more of it measured, then lower version numbers"
            )
            return f"{head} ties on top-1 with {other}; {rule} decides"
        return f"{head} beats {other}"

    def to_dict(self) -> dict[str, Any]:
        model = self.model
        return {
            "family": self.family,
            "from": self.source,
            "to": self.target,
            "side_info": self.side_info,
            "chosen": None if self.chosen is None else self.chosen.to_dict(model),
            "alternatives": [c.to_dict(model) for c in self.alternatives],
            "decision": self.decision,
            "scoring": SCORING,
            "notes": list(self.notes),
        }

    def table(self) -> str:
        """A readable explanation: ranked routes, then the chosen route's hops."""
        f, model = self.family, self.model
        lines = [
            f"{f}@{self.source} -> {f}@{self.target}  "
            f"(gallery side-info: {self.side_info or 'none'})"
        ]
        if self.chosen is None:
            return "\n".join([*lines, self.decision])
        lines += [
            "",
            f"{'':2}{'route':<14}{'transformations':<17}{'hops':>4}{'top-1 %':>9}  basis",
        ]
        for i, c in enumerate((self.chosen, *self.alternatives)):
            mark = "* " if i == 0 else "  "
            via = ",".join(map(str, c.hops))
            lines.append(
                f"{mark}{c.label():<14}{via:<17}{c.n_hops:>4}{c.top1:>9.2f}  {c.basis(model)}"
            )
        lines += [
            "",
            "chosen route, hop by hop (each hop's own measured accuracy):",
            f"  {'hop':<5}{'model version':<32}{'from':>5}{'to':>4}{'top-1':>8}{'top-5':>8}"
            f"{'mAP':>8}",
        ]
        for i, s in enumerate(self.chosen.steps, 1):
            lines.append(
                f"  {i:<5}{f'{model}/{s.model_version}':<32}{s.source:>5}{s.target:>4}"
                f"{_pct(s.top1):>8}{_pct(s.top5):>8}{_pct(s.mAP):>8}"
            )
        chain = self.chosen.recorded_chain
        if chain is not None:
            lines.append(
                f"  end to end (recorded chain {model}/{chain.model_version}): top-1 "
                f"{_pct(chain.top1)}, top-5 {_pct(chain.top5)}, mAP {_pct(chain.mAP)}"
            )
        elif self.chosen.n_hops > 1:
            lines.append(
                "  end to end: not evaluated (top-1 above is an estimate); "
                "run with --evaluate --record to measure it"
            )
        lines += ["", f"why: {self.decision}"]
        if any(not c.measured for c in self.alternatives):
            lines.append(
                "hint: estimated routes are measured (and recorded, so later resolves use the "
                "measurement) by `fct resolve ... --evaluate --record`"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
