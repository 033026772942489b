"""Save and load models as ``model.safetensors`` + ``spec.json``: no pickle anywhere.

A spec holds everything needed to rebuild the module (``kind`` plus constructor arguments), so
loading never executes stored code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fct_registry.errors import DataError
from fct_registry.model_specs import (
    EmbeddingSpec,
    ExternalSpec,
    ImageSpec,
    ModelSpec,
    TransformationSpec,
    parse_spec,
)
from fct_registry.models import uncertainty as _uncertainty  # noqa: F401  (registers fct-uncertainty)
from fct_registry.models.embedding import EmbeddingModel, SideInfoModel
from fct_registry.models.external import build_external
from fct_registry.models.transformations import TRANSFORMATIONS

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"


def build_from_spec(spec: ModelSpec | Mapping[str, Any]) -> nn.Module:
    """The module a spec describes (fresh weights): the one way models are built."""
    spec = parse_spec(spec)
    if isinstance(spec, ExternalSpec):  # a given model: its ONNX graph, not a backbone
        return build_external(spec)
    if isinstance(spec, ImageSpec):
        model = EmbeddingModel if isinstance(spec, EmbeddingSpec) else SideInfoModel
        return model(
            spec.backbone, spec.backbone_kwargs, spec.in_channels, *spec.sizes, spec.mean, spec.std
        )
    assert isinstance(spec, TransformationSpec)  # parse_spec knows no other kind
    return TRANSFORMATIONS.build(
        spec.type,
        old_dim=spec.old_dim,
        new_dim=spec.new_dim,
        side_info_dim=spec.side_info_dim,
        hidden_dim=spec.hidden_dim,
    )


def save_model(module: nn.Module, spec: ModelSpec | Mapping[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    data = spec.to_dict() if isinstance(spec, ModelSpec) else dict(spec)
    (directory / SPEC_FILE).write_text(json.dumps(data, indent=2, sort_keys=True))


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
