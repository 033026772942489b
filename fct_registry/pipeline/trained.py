"""The tail every stage that trains an image model shares (``train@N``, ``bct@NAME``,
``side_info``): on rank 0, the model (weights + spec), its training history, and the
embeddings of the train and test splits in the prepared row order."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fct_registry.data.splits import Split
from fct_registry.layout import save_embeddings
from fct_registry.model_specs import ModelSpec
from fct_registry.models.io import save_model
from fct_registry.training.distributed import context
from fct_registry.training.embed import embed_split
from fct_registry.training.loop import LoopResult, write_history


def save_trained(
    model: nn.Module,
    spec: ModelSpec,
    result: LoopResult,
    splits: tuple[Split, Split],
    device: torch.device,
    *,
    folder: Path,
    embeddings: Path,
    history: Path,
) -> None:
    """Write a trained image model's outputs (``splits``: train and test); other ranks of a
    torchrun job write nothing."""
    if not context().is_main:
        return
    save_model(model, spec, folder)
    write_history(result.history, history)
    train, test = splits
    save_embeddings(embeddings, embed_split(model, train, device), embed_split(model, test, device))
