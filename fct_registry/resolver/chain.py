"""Measure a resolved chain end to end, and export it as one fused ONNX graph.

Evaluating replaces the resolver's *estimate* for a multi-hop route by a *measurement* taken the
same way as every edge's (new-version queries against the old gallery upgraded by the chain,
leave-one-out on the stored held-out embeddings of ``dvc repro``). Loading the hops and recording
the measurement as a registered version are the registry's job
(:mod:`fct_registry.registry.chains`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fct_registry.data.prepared import load_prepared
from fct_registry.errors import DataError
from fct_registry.evaluation.retrieval import RetrievalScores, retrieval_scores
from fct_registry.layout import Layout, load_embeddings
from fct_registry.registry.chains import ChainEvaluation, LoadedChain
from fct_registry.registry.onnx_export import export_onnx, verify_onnx


def stored_test_embeddings(
    layout: Layout, source: int, target: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(old, new, side_info, labels)`` of the held-out split, as written by ``dvc repro``.

    ``source`` and ``target`` are *pipeline* versions (``params.yaml`` keys); map registry
    versions with ``CompatibilityGraph.stored_as``.
    """
    labels = load_prepared(layout.data, "test").labels
    old = load_embeddings(layout.version_embeddings(source))["test"]
    new = load_embeddings(layout.version_embeddings(target))["test"]
    side_info = load_embeddings(layout.side_info_embeddings)["test"]
    sizes = {len(labels), len(old), len(new), len(side_info)}
    if len(sizes) != 1:
        raise DataError(
            f"stored test embeddings under {layout.root} disagree in length {sorted(sizes)}; "
            "rerun the pipeline (`dvc repro`) so every version embeds the same test split"
        )
    return old, new, side_info, labels


def evaluate_chain(
    loaded: LoadedChain,
    layout: Layout | None = None,
    distance: str = "l2",
    device: str = "cpu",
    stored_as: tuple[int, int] | None = None,
) -> ChainEvaluation:
    """Measure the chain end to end on the stored test split, like every edge is measured.

    ``stored_as``: the pipeline versions holding the stored embeddings of the chain's two ends
    (default: the registry version numbers; see ``CompatibilityGraph.stored_as``).
    """
    source, target = loaded.path[0], loaded.path[-1]
    keys = stored_as or (source, target)
    old, new, side_info, labels = stored_test_embeddings(layout or Layout(), *keys)
    if old.shape[1] != loaded.old_dim:
        raise DataError(
            f"stored embeddings of {loaded.family}@{source} are {old.shape[1]}-d but the chain "
            f"reads {loaded.old_dim}-d; the outputs under {(layout or Layout()).root} are not "
            "from the registered versions (rerun `dvc repro` or pass --outputs)"
        )
    if loaded.side_info_dim and side_info.shape[1] != loaded.side_info_dim:
        raise DataError(
            f"stored side-info is {side_info.shape[1]}-d but the chain reads "
            f"{loaded.side_info_dim}-d; the gallery's side-info extractor differs from the chain's"
        )
    dev = torch.device(device)
    module = loaded.module.to(dev).eval()
    with torch.no_grad():
        upgraded = module(old.to(dev).float(), side_info.to(dev).float()).cpu()

    def score(query: torch.Tensor, gallery: torch.Tensor) -> RetrievalScores:
        # Query i and gallery i are the same test image, so i is excluded (leave-one-out).
        return retrieval_scores(
            query, gallery, labels, labels, distance=distance, leave_one_out=True, device=dev
        )

    return ChainEvaluation(
        source=source,
        target=target,
        hops=loaded.hops,
        cross=score(new, upgraded),
        old_old=score(old, old),
        new_new=score(new, new),
        items=len(labels),
        distance=distance,
    )


def export_chain_onnx(
    loaded: LoadedChain,
    path: Path,
    check_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    atol: float = 1e-4,
) -> float:
    """Write the chain as one fused ONNX graph and return its max |ONNX - hop-by-hop| difference.

    ``export_onnx`` already checks the graph against the chain module on random inputs; with
    ``check_inputs`` (``(old, side_info)``, e.g. stored embeddings) it is checked again against
    the hops applied one at a time in PyTorch, on realistic data.
    """
    diff = export_onnx(
        loaded.module,
        path,
        "transformation",
        old_dim=loaded.old_dim,
        side_info_dim=loaded.side_info_dim,
        atol=atol,
        rtol=atol,
    )
    if check_inputs is not None:
        old, side_info = (t.float().cpu() for t in check_inputs)
        inputs = (old, side_info) if loaded.side_info_dim else (old,)
        reference = _hop_by_hop(list(loaded.module.hops))
        diff = max(diff or 0.0, verify_onnx(reference, path, inputs, atol=atol, rtol=atol))
    return float(diff or 0.0)


def _hop_by_hop(hops: list[nn.Module]) -> nn.Module:
    """The reference for the fused graph: each hop applied on its own, one after another."""

    class HopByHop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hops = nn.ModuleList(hops)

        def forward(self, old: torch.Tensor, side_info: torch.Tensor | None = None) -> torch.Tensor:
            if side_info is None:  # no hop reads side-info: the graph has no such input
                side_info = old.new_zeros(len(old), 0)
            for hop in self.hops:
                old = hop(old, side_info)
            return old

    return HopByHop()
