"""The ml-fct transformation has the shape of apple/ml-fct's MLP_BN_SIDE_PROJECTION."""

from __future__ import annotations

import torch
from torch import nn

from fct_registry.models.io import build_from_spec
from fct_registry.models.transformations import TRANSFORMATIONS, architecture, uses_side_info


def _linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_layer_widths_follow_ml_fct():
    h = TRANSFORMATIONS.build(
        "ml-fct", old_dim=128, new_dim=128, side_info_dim=128, hidden_dim=2048
    )
    # p1: 128 -> 256 -> 256; p2: 128 -> 256 -> 256; mixer: 512 -> 2048 -> 2048 -> 128
    assert _linear_shapes(h.p1) == [(128, 256), (256, 256)]
    assert _linear_shapes(h.p2) == [(128, 256), (256, 256)]
    assert _linear_shapes(h.mixer) == [(512, 2048), (2048, 2048), (2048, 128)]
    # every layer but the last is followed by batch-norm, as ml-fct's ConvBlock
    assert sum(isinstance(m, nn.BatchNorm1d) for m in h.modules()) == 6


def test_unequal_dims():
    h = TRANSFORMATIONS.build("ml-fct", old_dim=16, new_dim=32, side_info_dim=8, hidden_dim=64)
    assert _linear_shapes(h.p1) == [(16, 32), (32, 64)]
    assert _linear_shapes(h.p2) == [(8, 16), (16, 64)]
    assert _linear_shapes(h.mixer)[0] == (128, 64)


def test_no_side_info_variant_has_no_side_branch_and_ignores_it():
    h = TRANSFORMATIONS.build(
        "ml-fct-no-side-info", old_dim=8, new_dim=8, side_info_dim=4, hidden_dim=16
    ).eval()
    assert h.p2 is None and _linear_shapes(h.mixer)[0] == (16, 16)
    old = torch.randn(6, 8)
    assert torch.equal(h(old, torch.randn(6, 4)), h(old, torch.randn(6, 4)))
    assert not uses_side_info("ml-fct-no-side-info") and uses_side_info("ml-fct")
    assert architecture("ml-fct-no-side-info") == "ml-fct"


def test_rebuilt_from_spec():
    spec = {"kind": "transformation", "type": "ml-fct", "old_dim": 8, "new_dim": 6}
    h = build_from_spec(spec | {"side_info_dim": 4, "hidden_dim": 16})
    assert h(torch.randn(3, 8), torch.randn(3, 4)).shape == (3, 6)
