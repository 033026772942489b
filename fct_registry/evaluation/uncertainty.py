"""Uncertainty of the protocol's claims: seed spread and paired-bootstrap 95% intervals.

From the per-query outcomes of :func:`~fct_registry.evaluation.compatibility.compatibility_cases`
(every case is scored on the same test queries), this reports, per claim:

* ``edges``: each transformation's top-1 / mAP over its training seeds (mean, sample std) and the
  share of the gap it closes, with a CI from the seed-averaged per-query outcomes;
* ``side_info_gain``: an edge with side-info minus the same edge (same ends, same architecture)
  without it;
* ``fct_vs_bct``: FCT's cross-version case (new queries, transformed old gallery) minus a BCT
  model's (BCT-new queries, old gallery) for the same pair of versions;
* ``bct_backward``: BCT's new/old minus old/old (is the BCT model backward compatible?);
* ``chain_vs_direct``: a measured chain minus the direct edge between the same versions.

Intervals are percentile intervals of a paired bootstrap over queries (one set of resampled
query indices per claim, shared by every series it compares); seeds are averaged per query first,
so the interval covers query sampling at the seed-averaged protocol.
"""

from __future__ import annotations

import statistics

import torch
from torch import Tensor

from fct_registry.evaluation.bootstrap import (
    Interval,
    bootstrap_indices,
    bootstrap_means,
    percentile_interval,
)
from fct_registry.evaluation.per_query import PerQuery

METRICS = ("top1", "mAP")


def _series(outcomes: dict[tuple, PerQuery], keys: list[tuple], metric: str) -> Tensor:
    """Per-query values in percent, averaged over ``keys`` (the seeds of one case)."""
    first = outcomes[keys[0]].index
    for k in keys[1:]:
        if not torch.equal(outcomes[k].index, first):
            raise ValueError(f"cases {keys[0]} and {k} were scored on different queries")
    return 100.0 * torch.stack([outcomes[k].metric(metric) for k in keys]).mean(0)


def _edge_keys(report: dict, name: str) -> list[tuple]:
    return [
        ("transformations", name, i) for i in range(len(report["transformations"][name]["seeds"]))
    ]


class _Claims:
    def __init__(self, outcomes: dict[tuple, PerQuery], resamples: int, seed: int, level: float):
        self.outcomes, self.level = outcomes, level
        n = len(next(iter(outcomes.values())).index)
        self.indices = bootstrap_indices(n, resamples, seed)

    def difference(self, a: list[tuple], b: list[tuple], metric: str) -> Interval:
        series = torch.stack(
            [_series(self.outcomes, a, metric), _series(self.outcomes, b, metric)], 1
        )
        means = bootstrap_means(series, self.indices)
        full = series.mean(0)
        return percentile_interval(float(full[0] - full[1]), means[:, 0] - means[:, 1], self.level)

    def gap_closed(self, cross: list[tuple], old: tuple, new: tuple, metric: str) -> Interval:
        series = torch.stack([_series(self.outcomes, k, metric) for k in (cross, [old], [new])], 1)

        def ratio(m: Tensor) -> Tensor:
            return 100.0 * (m[..., 0] - m[..., 1]) / (m[..., 2] - m[..., 1])

        means = bootstrap_means(series, self.indices)
        return percentile_interval(float(ratio(series.mean(0))), ratio(means), self.level)


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def uncertainty_report(
    report: dict,
    outcomes: dict[tuple, PerQuery],
    bct_kinds: dict[str, str],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Every claim of the protocol with its interval (see the module docstring)."""
    claims = _Claims(outcomes, resamples, seed, level)
    edges = report["transformations"]
    out: dict = {
        "level": level,
        "resamples": resamples,
        "queries": len(claims.indices[0]),
        "edges": {},
        "side_info_gain": {},
        "fct_vs_bct": {},
        "bct_backward": {},
        "chain_vs_direct": {},
    }
    for name, e in edges.items():
        keys = _edge_keys(report, name)
        old, new = ("self", e["from"]), ("self", e["to"])
        out["edges"][name] = {
            "from": e["from"],
            "to": e["to"],
            "kind": e["kind"],
            "side_info": e["side_info"],
            "seeds": len(keys),
            **{m: _spread([s[m] for s in e["seeds"]]) for m in METRICS},
            **{f"gap_closed_{m}": claims.gap_closed(keys, old, new, m).as_dict() for m in METRICS},
        }
    for name, e in edges.items():
        if e["side_info"]:
            continue
        partners = [
            n
            for n, o in edges.items()
            if o["side_info"]
            and (o["from"], o["to"]) == (e["from"], e["to"])
            and e["kind"] == o["kind"] + "-no-side-info"
        ]
        for partner in partners:
            out["side_info_gain"][partner] = {
                "with": partner,
                "without": name,
                **{
                    m: claims.difference(
                        _edge_keys(report, partner), _edge_keys(report, name), m
                    ).as_dict()
                    for m in METRICS
                },
            }
    for bname, b in report["bct"].items():
        old_old = [("self", b["from"])]
        out["bct_backward"][bname] = {
            "kind": bct_kinds.get(bname, "influence"),
            **{
                f"new_old_minus_old_old_{m}": claims.difference(
                    [("bct", bname, "new_old")], old_old, m
                ).as_dict()
                for m in METRICS
            },
        }
        for name, e in edges.items():
            if not e["side_info"] or (e["from"], e["to"]) != (b["from"], b["to"]):
                continue
            out["fct_vs_bct"][f"{name} vs {bname}"] = {
                "fct": name,
                "bct": bname,
                "bct_kind": bct_kinds.get(bname, "influence"),
                **{
                    m: claims.difference(
                        _edge_keys(report, name), [("bct", bname, "new_old")], m
                    ).as_dict()
                    for m in METRICS
                },
            }
    for key, c in report["chains"].items():
        direct = [
            n
            for n, e in edges.items()
            if e["side_info"]
            and (e["from"], e["to"]) == (c["from"], c["to"])
            and e["kind"] == edges[c["hops"][0]]["kind"]
        ]
        for name in direct:
            out["chain_vs_direct"][key] = {
                "direct": name,
                # the registered (first-seed) models: what the resolver chooses between
                **{
                    m: claims.difference(
                        [("chains", key)], [("transformations", name, 0)], m
                    ).as_dict()
                    for m in METRICS
                },
            }
    return out
