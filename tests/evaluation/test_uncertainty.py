"""The protocol's claims pair the right cases, average seeds per query, and report intervals."""

from __future__ import annotations

import torch
from torch import nn

from fct_registry.evaluation.compatibility import Edge, compatibility_cases
from fct_registry.evaluation.per_query import per_query_scores
from fct_registry.evaluation.uncertainty import uncertainty_report
from tests.readme_results import BEGIN, END, checks, replace_section, results_markdown


class Shift(nn.Module):
    """A fixed 'transformation': old + scale * (side-info), enough to order the cases."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, old: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        return old + self.scale * side


def _family(n: int = 120):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (n,), generator=gen)
    centers = torch.randn(4, 8, generator=gen) * 3
    new = centers[labels] + torch.randn(n, 8, generator=gen)
    side = new - (centers[labels] * 0.2 + torch.randn(n, 8, generator=gen))  # most of new
    old = new - side
    return labels, {1: old, 2: new, 3: new + 0.1 * torch.randn(n, 8, generator=gen)}, side


def _report():
    labels, versions, side = _family()
    edges = [
        Edge("1-2", 1, 2, True, Shift(1.0), (Shift(0.95), Shift(0.9))),
        Edge("1-2-no-side-info", 1, 2, False, Shift(0.0), (Shift(0.0),), "fct-no-side-info"),
        Edge("2-3", 2, 3, True, Shift(0.0)),
        Edge("1-3", 1, 3, True, Shift(1.0)),
    ]
    bct = {"1-2": (1, 2, versions[2] * 0.5 + versions[1] * 0.5)}
    outcomes: dict = {}
    report = compatibility_cases(labels, versions, side, edges, bct, outcomes=outcomes)
    return labels, versions, side, report, outcomes


def test_every_seed_is_scored_and_the_first_is_reported():
    labels, versions, side, report, outcomes = _report()
    e = report["transformations"]["1-2"]
    assert len(e["seeds"]) == 3 and e["top1"] == e["seeds"][0]["top1"]
    for i, scale in enumerate((1.0, 0.95, 0.9)):
        pq = per_query_scores(
            versions[2], versions[1] + scale * side, labels, labels, leave_one_out=True
        )
        assert torch.equal(outcomes[("transformations", "1-2", i)].top1, pq.top1)


def test_claims_pair_the_right_cases():
    _, _, _, report, outcomes = _report()
    u = uncertainty_report(report, outcomes, {"1-2": "l2"}, resamples=200)
    assert list(u["side_info_gain"]) == ["1-2"]
    gain = u["side_info_gain"]["1-2"]
    assert gain["without"] == "1-2-no-side-info"
    # the estimate is the seed-averaged difference of the means
    with_mean = sum(s["top1"] for s in report["transformations"]["1-2"]["seeds"]) / 3
    without_mean = (
        sum(s["top1"] for s in report["transformations"]["1-2-no-side-info"]["seeds"]) / 2
    )
    assert abs(gain["top1"]["estimate"] - (with_mean - without_mean)) < 1e-9
    assert gain["top1"]["ci_low"] <= gain["top1"]["estimate"] <= gain["top1"]["ci_high"]
    assert (
        list(u["fct_vs_bct"]) == ["1-2 vs 1-2"]
        and u["fct_vs_bct"]["1-2 vs 1-2"]["bct_kind"] == "l2"
    )
    assert u["chain_vs_direct"]["1-2-3"]["direct"] == "1-3"
    assert u["edges"]["1-2"]["seeds"] == 3 and u["edges"]["1-2"]["top1"]["std"] >= 0
    assert set(u["bct_backward"]["1-2"]) == {
        "kind",
        "new_old_minus_old_old_top1",
        "new_old_minus_old_old_mAP",
    }


def test_results_section_renders_every_claim_and_replaces_between_markers():
    _, _, _, report, outcomes = _report()
    u = uncertainty_report(report, outcomes, {"1-2": "l2"}, resamples=200)
    body = results_markdown(report, u, "fam")
    assert "side-info gain: `1-2` − `1-2-no-side-info`" in body
    assert "FCT − BCT (l2)" in body and "chain 1-2-3 − direct `1-3`" in body
    assert "side-info adds ≥ 2 top-1 points on `1-2`" in body
    assert len([line for line in checks(u) if line.startswith("- ")]) == 3 + 1 + 1 + 1
    readme = f"intro\n{BEGIN}\nold text\n{END}\noutro\n"
    new = replace_section(readme, body)
    assert new.startswith("intro\n") and new.endswith(f"{END}\noutro\n") and body in new
    assert replace_section(new, body) == new
