"""ONNX export of transformations, chains and image models: dynamic batch, equal to PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fct_registry.models.transformations import TransformationChain
from fct_registry.registry.onnx_export import OnnxExportError, export_onnx, verify_onnx
from tests.registry import builders


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]


def test_transformation_any_batch_equals_torch(tmp_path):
    module, _ = builders.transformation(0)
    module.train()  # exported in eval mode, and left as it came
    diff = export_onnx(module, tmp_path / "t.onnx", old_dim=6, side_info_dim=4)
    assert module.training
    module.eval()
    assert diff is not None and diff <= 1e-5
    session, _ = _run(
        tmp_path / "t.onnx", {"old_embedding": torch.zeros(2, 6), "side_info": torch.zeros(2, 4)}
    )
    assert [i.name for i in session.get_inputs()] == ["old_embedding", "side_info"]
    assert session.get_outputs()[0].name == "new_embedding"
    for batch in (1, 37):  # not the export batch: the batch dimension is dynamic
        old, side = torch.randn(batch, 6), torch.randn(batch, 4)
        _, got = _run(tmp_path / "t.onnx", {"old_embedding": old, "side_info": side})
        with torch.no_grad():
            want = module(old, side).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    onnx.checker.check_model(str(tmp_path / "t.onnx"))


def test_chain_is_one_graph_equal_to_hops_in_turn(tmp_path):
    a, _ = builders.transformation(1, old_dim=6, new_dim=5)
    b, _ = builders.transformation(2, old_dim=5, new_dim=7)
    export_onnx(TransformationChain([a, b]), tmp_path / "c.onnx", old_dim=6, side_info_dim=4)
    old, side = torch.randn(9, 6), torch.randn(9, 4)
    _, got = _run(tmp_path / "c.onnx", {"old_embedding": old, "side_info": side})
    with torch.no_grad():
        want = b(a(old, side), side).numpy()
    assert got.shape == (9, 7)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_no_side_info_graph_takes_only_the_old_embedding(tmp_path):
    module, _ = builders.transformation(3, kind="fct-no-side-info")
    export_onnx(module, tmp_path / "n.onnx", old_dim=6, side_info_dim=0)
    old = torch.randn(4, 6)
    session, got = _run(tmp_path / "n.onnx", {"old_embedding": old})
    assert [i.name for i in session.get_inputs()] == ["old_embedding"]
    with torch.no_grad():
        np.testing.assert_allclose(got, module(old, torch.zeros(4, 0)).numpy(), atol=1e-5)


def test_image_model(tmp_path):  # side-info models: tests/registry/test_flavor.py
    module, spec = builders.embedding(4)
    diff = export_onnx(module, tmp_path / "m.onnx", spec["kind"], input_shape=spec["input_shape"])
    assert diff <= 1e-5
    images = torch.rand(3, 1, 12, 12)
    _, got = _run(tmp_path / "m.onnx", {"images": images})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(images).numpy(), atol=1e-5)


def test_verify_onnx_raises_on_a_different_model(tmp_path):
    module, _ = builders.transformation(5)
    other, _ = builders.transformation(6)
    export_onnx(module, tmp_path / "t.onnx", old_dim=6, side_info_dim=4)
    inputs = (torch.randn(5, 6), torch.randn(5, 4))
    assert verify_onnx(module, tmp_path / "t.onnx", inputs) <= 1e-5
    with pytest.raises(OnnxExportError, match="differs from PyTorch"):
        verify_onnx(other, tmp_path / "t.onnx", inputs)


def test_bad_arguments_name_the_fix(tmp_path):
    module, _ = builders.transformation(8)
    with pytest.raises(OnnxExportError, match="old_dim"):
        export_onnx(module, tmp_path / "t.onnx")
    with pytest.raises(OnnxExportError, match="input_shape"):
        export_onnx(module, tmp_path / "t.onnx", "embedding")
    with pytest.raises(OnnxExportError, match="unknown model kind 'gallery'"):
        export_onnx(module, tmp_path / "t.onnx", "gallery")
