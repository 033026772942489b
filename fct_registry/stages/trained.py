"""What the stages that train an image model share (``train@N``, ``bct@NAME``, ``side_info``):
where the outputs go, the training run's keywords, and the stage's tail that writes, on rank 0,
the model (weights + spec), its training history, and the embeddings of the train and test
splits in the prepared row order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fct_registry.config import Params
from fct_registry.data.splits import Split
from fct_registry.layout import Layout, save_embeddings
from fct_registry.model_specs import ModelSpec
from fct_registry.models.io import save_model
from fct_registry.training.distributed import context
from fct_registry.training.embed import embed_split
from fct_registry.training.loop import LoopResult, RunArgs, write_history


@dataclass(frozen=True)
class ImageOutputs:
    """One image model's outputs; ``key`` (``v1``, ``bct-NAME``, ``side_info``) names its
    checkpoint and its history."""

    layout: Layout
    key: str
    folder: Path
    embeddings: Path

    @property
    def history(self) -> Path:
        return self.layout.history(self.key)

    def run_args(
        self, params: Params, fingerprint: str, desc: str, device: torch.device
    ) -> RunArgs:
        """The trainer's keywords: checkpointed under ``key``, resumable inside an epoch when
        ``data.checkpoint_batches`` is set."""
        return {
            "seed": params.seed,
            "device": device,
            "checkpoint": self.layout.checkpoint(self.key),
            "fingerprint": fingerprint,
            "desc": desc,
            "checkpoint_every": params.data.checkpoint_batches,
        }

    def save(
        self,
        model: nn.Module,
        spec: ModelSpec,
        result: LoopResult,
        splits: tuple[Split, Split],
        device: torch.device,
    ) -> None:
        """The stage's tail (``splits``: train and test); other torchrun ranks write nothing."""
        if not context().is_main:
            return
        save_model(model, spec, self.folder)
        write_history(result.history, self.history)
        train, test = splits
        save_embeddings(
            self.embeddings, embed_split(model, train, device), embed_split(model, test, device)
        )
