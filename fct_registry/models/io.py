"""Save and load models as ``model.safetensors`` + ``spec.json``: no pickle anywhere.

A spec holds everything needed to rebuild the module (``kind`` plus constructor arguments), so
loading never executes stored code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fct_registry.errors import DataError
from fct_registry.models import uncertainty as _uncertainty  # noqa: F401  (registers fct-uncertainty)
from fct_registry.models.embedding import EmbeddingModel, SideInfoModel
from fct_registry.models.external import build_external
from fct_registry.models.transformations import TRANSFORMATIONS

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    kind = spec.get("kind")
    if spec.get("external"):  # a given model: its ONNX graph, not a backbone
        return build_external(spec)
    if kind == "embedding":
        return EmbeddingModel(
            spec["backbone"],
            spec["backbone_kwargs"],
            spec["in_channels"],
            spec["embedding_dim"],
            spec["num_classes"],
            spec["mean"],
            spec["std"],
        )
    if kind == "side_info":
        return SideInfoModel(
            spec["backbone"],
            spec["backbone_kwargs"],
            spec["in_channels"],
            spec["dim"],
            spec["projection_dim"],
            spec["mean"],
            spec["std"],
        )
    if kind == "transformation":
        return TRANSFORMATIONS.build(
            spec["type"],
            old_dim=spec["old_dim"],
            new_dim=spec["new_dim"],
            side_info_dim=spec["side_info_dim"],
            hidden_dim=spec["hidden_dim"],
        )
    raise DataError(
        f"unknown model kind {kind!r} in spec; expected embedding, side_info or transformation"
    )


def save_model(module: nn.Module, spec: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))


def load_spec(directory: Path) -> dict[str, Any]:
    path = Path(directory) / SPEC_FILE
    if not path.exists():
        raise DataError(f"{path} not found; train the model first (`dvc repro`)")
    return json.loads(path.read_text())


def load_model(directory: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the module from its spec and load weights (``eval`` mode)."""
    spec = load_spec(directory)
    module = build_from_spec(spec)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.exists():
        raise DataError(f"{weights} not found; train the model first (`dvc repro`)")
    module.load_state_dict(load_file(str(weights), device=str(device)))
    return module.to(device).eval(), spec
