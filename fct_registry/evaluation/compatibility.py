"""The paper's compatibility cases over one family, computed from stored test embeddings.

Cases (query model / gallery model): old/old and new/new (``self``), new/old through each
learned transformation (``transformations``, FCT with or without side-info), through multi-hop
chains (``chains``), new/old with no transformation (``raw``), and BCT-new/old, BCT-new/BCT-new
(``bct``). ``gap_closed`` is the share of the old/old -> new/new gap a cross-version case recovers.

Every case is scored query by query (:func:`per_query_scores`); the report holds the means, and
``outcomes`` (when asked for) the per-query values behind them, keyed by case, for paired
bootstrap intervals (:mod:`fct_registry.evaluation.uncertainty`). An edge trained with several
seeds reports its first seed (the registered model) and, under ``seeds``, every seed's scores.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from fct_registry.evaluation.per_query import PerQuery, per_query_scores
from fct_registry.evaluation.retrieval import RetrievalScores


@dataclass(frozen=True)
class Edge:
    name: str
    source: int
    target: int
    uses_side_info: bool
    module: nn.Module
    other_seeds: tuple[nn.Module, ...] = ()
    kind: str = "fct"

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        return (self.module, *self.other_seeds)


def _apply(hops: list[nn.Module], old: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for hop in hops:
            old = hop.eval()(old, side_info).float()
    return old


# Below this old/old -> new/new gap (percentage points) the share closed is a ratio of noise
# (a 0.1-point gap once read "6475% closed"): it is reported as not defined (NaN, shown "—").
MIN_GAP = 0.5


def gap_closed(cross: float, old_old: float, new_new: float) -> float:
    """Percent of the old/old -> new/new gap that ``cross`` recovers; NaN under ``MIN_GAP``."""
    gap = new_new - old_old
    return float("nan") if abs(gap) < MIN_GAP else 100.0 * (cross - old_old) / gap


def chains(edges: list[Edge], min_hops: int = 2) -> list[list[Edge]]:
    """Every forward path of ``min_hops`` or more side-info edges of one architecture (small
    families only)."""
    side = [e for e in edges if e.uses_side_info]
    out: list[list[Edge]] = []

    def extend(path: list[Edge]) -> None:
        if len(path) >= min_hops:
            out.append(path)
        for e in side:
            if e.source == path[-1].target and e.kind == path[0].kind:
                extend([*path, e])

    for e in side:
        extend([e])
    return out


def compatibility_cases(
    labels: torch.Tensor,
    versions: dict[int, torch.Tensor],
    side_info: torch.Tensor,
    edges: list[Edge],
    bct: dict[str, tuple[int, int, torch.Tensor]],
    distance: str = "l2",
    outcomes: dict[tuple, PerQuery] | None = None,
) -> dict:
    """All cases as ``{group: {case: {"top1", "top5", "mAP", ...}}}`` (percent).

    ``outcomes``: a dict filled with each case's per-query values, keyed ``("self", v)``,
    ``("transformations", name, seed_index)``, ``("chains", key)``, ``("raw", key)``,
    ``("bct", name, "new_old" | "new_new")``.
    """
    kept: dict[tuple, PerQuery] = {} if outcomes is None else outcomes

    def score(key: tuple, query: torch.Tensor, gallery: torch.Tensor) -> RetrievalScores:
        # Leave-one-out: query i and gallery i are the same test image, so i is excluded.
        kept[key] = per_query_scores(
            query, gallery, labels, labels, distance=distance, leave_one_out=True
        )
        return RetrievalScores(**kept[key].means())

    own = {v: score(("self", v), e, e) for v, e in versions.items()}
    report: dict = {
        "self": {str(v): s.as_dict() for v, s in own.items()},
        "transformations": {},
        "chains": {},
        "raw": {},
        "bct": {},
    }

    def with_gap(s: RetrievalScores, source: int, target: int) -> dict:
        old, new = own[source], own[target]
        return s.as_dict() | {
            "gap_closed_top1": gap_closed(s.top1, old.top1, new.top1),
            "gap_closed_mAP": gap_closed(s.mAP, old.mAP, new.mAP),
        }

    for e in edges:
        per_seed = [
            with_gap(
                score(
                    ("transformations", e.name, i),
                    versions[e.target],
                    _apply([m], versions[e.source], side_info),
                ),
                e.source,
                e.target,
            )
            for i, m in enumerate(e.modules)
        ]
        report["transformations"][e.name] = per_seed[0] | {
            "from": e.source,
            "to": e.target,
            "side_info": e.uses_side_info,
            "kind": e.kind,
            "seeds": per_seed,
        }
    for path in chains(edges):
        source, target = path[0].source, path[-1].target
        upgraded = _apply([h.module for h in path], versions[source], side_info)
        key = "-".join([str(source), *(str(h.target) for h in path)])
        key += "" if path[0].kind == "fct" else f" ({path[0].kind})"
        scores = score(("chains", key), versions[target], upgraded)
        report["chains"][key] = with_gap(scores, source, target) | {
            "from": source,
            "to": target,
            "hops": [h.name for h in path],
        }
    for old, new in itertools.combinations(sorted(versions), 2):
        if versions[old].shape[1] == versions[new].shape[1]:
            key = f"{new}-{old}"
            # a baseline, not an upgrade: its "gap closed" (hugely negative) would mean nothing
            report["raw"][key] = score(("raw", key), versions[new], versions[old]).as_dict()
    for name, (old, new, emb) in bct.items():
        report["bct"][name] = {
            "new_old": score(("bct", name, "new_old"), emb, versions[old]).as_dict(),
            "new_new": score(("bct", name, "new_new"), emb, emb).as_dict(),
            "from": old,
            "to": new,
        }
    report["matrix"] = compatibility_matrix(report, sorted(versions))
    return report


def compatibility_matrix(report: dict, versions: list[int], metric: str = "top1") -> dict:
    """``matrix[query][gallery]``: the best measured way to search ``gallery`` with ``query``
    (own embeddings on the diagonal, best transformation or chain below it, None above)."""
    best: dict[tuple[int, int], float] = {}
    for group in ("transformations", "chains"):
        for case in report[group].values():
            key = (case["to"], case["from"])
            best[key] = max(best.get(key, float("-inf")), case[metric])
    matrix: dict = {}
    for q in versions:
        matrix[str(q)] = {}
        for g in versions:
            value = report["self"][str(q)][metric] if q == g else best.get((q, g))
            matrix[str(q)][str(g)] = value
    return matrix
