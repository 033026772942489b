"""Shared by the external-model pipeline tests: a tiny image net to stand in for a user's
model, the preprocessing it was trained with, and the environment a project's commands run in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

MEAN, STD = [0.286], [0.353]
PREPROCESS = {"resize": 28, "crop": 28, "mean": MEAN, "std": STD, "colour": "gray"}


def tiny_net(dim: int, seed: int):
    """A small CNN, 1x28x28 -> ``dim``, with weights fixed by ``seed``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(6, 12, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, dim),
    ).eval()


def project_env(cwd: Path) -> dict[str, str]:
    """This interpreter's tools first, the project's own MLflow store and code."""
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlflow.db",
        PYTHONPATH=str(cwd),
    )
