"""The paper's compatibility cases over one family, computed from stored test embeddings.

Cases (query model / gallery model): old/old and new/new (``self``), new/old through each
learned transformation (``transformations``, FCT with or without side-info), through multi-hop
chains (``chains``), new/old with no transformation (``raw``), and BCT-new/old, BCT-new/BCT-new
(``bct``). ``gap_closed`` is the share of the old/old -> new/new gap a cross-version case recovers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from fct_registry.evaluation.retrieval import RetrievalScores, retrieval_scores


@dataclass(frozen=True)
class Edge:
    name: str
    source: int
    target: int
    uses_side_info: bool
    module: nn.Module


def _apply(hops: list[Edge], old: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for hop in hops:
            old = hop.module.eval()(old, side_info)
    return old


def gap_closed(cross: float, old_old: float, new_new: float) -> float:
    gap = new_new - old_old
    return float("nan") if abs(gap) < 1e-9 else 100.0 * (cross - old_old) / gap


def chains(edges: list[Edge], min_hops: int = 2) -> list[list[Edge]]:
    """Every forward path of ``min_hops`` or more side-info edges (small families only)."""
    side = [e for e in edges if e.uses_side_info]
    out: list[list[Edge]] = []

    def extend(path: list[Edge]) -> None:
        if len(path) >= min_hops:
            out.append(path)
        for e in side:
            if e.source == path[-1].target:
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
) -> dict:
    """All cases as ``{group: {case: {"top1", "top5", "mAP", ...}}}`` (percent)."""

    def score(query: torch.Tensor, gallery: torch.Tensor) -> RetrievalScores:
        # Leave-one-out: query i and gallery i are the same test image, so i is excluded.
        return retrieval_scores(
            query, gallery, labels, labels, distance=distance, leave_one_out=True
        )

    own = {v: score(e, e) for v, e in versions.items()}
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
        upgraded = _apply([e], versions[e.source], side_info)
        report["transformations"][e.name] = with_gap(
            score(versions[e.target], upgraded), e.source, e.target
        ) | {"from": e.source, "to": e.target, "side_info": e.uses_side_info}
    for path in chains(edges):
        source, target = path[0].source, path[-1].target
        upgraded = _apply(path, versions[source], side_info)
        key = "-".join([str(source), *(str(h.target) for h in path)])
        report["chains"][key] = with_gap(score(versions[target], upgraded), source, target) | {
            "from": source,
            "to": target,
            "hops": [h.name for h in path],
        }
    for old, new in itertools.combinations(sorted(versions), 2):
        if versions[old].shape[1] == versions[new].shape[1]:
            report["raw"][f"{new}-{old}"] = with_gap(score(versions[new], versions[old]), old, new)
    for name, (old, new, emb) in bct.items():
        report["bct"][name] = {
            "new_old": score(emb, versions[old]).as_dict(),
            "new_new": score(emb, emb).as_dict(),
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
