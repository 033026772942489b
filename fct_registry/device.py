"""Device selection: CUDA when present, else CPU; never assumed."""

from __future__ import annotations

import torch

from fct_registry.errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no GPU is visible; use device: auto or cpu")
    return device
