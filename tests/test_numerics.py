"""fct_registry.numerics: the IEEE square root whatever MKL would have returned."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest
import torch

from fct_registry.numerics import sqrt_
from tests.conftest import ROOT


def _ieee(values: np.ndarray) -> np.ndarray:
    """The correctly rounded square root: in float64 (exact for float32 inputs' roots to well
    past float32 precision), rounded once; for float64, Python's math.sqrt value by value."""
    if values.dtype == np.float32:
        return np.sqrt(values.astype(np.float64)).astype(np.float32)
    return np.array([math.sqrt(v) for v in values.ravel()]).reshape(values.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sqrt_is_the_correctly_rounded_root_in_place(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.rand(10_000, generator=gen, dtype=dtype) * 10,
            torch.tensor([0.0, 1.0, 4.0, 2.0, 1e-30, 1e30, float("inf")], dtype=dtype),
        ]
    )
    want = _ieee(x.numpy().copy())
    got = sqrt_(x)
    assert got is x
    np.testing.assert_array_equal(x.numpy(), want)  # bit for bit, not approximately


def test_sqrt_writes_through_a_non_contiguous_view():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    view = base.T  # not contiguous
    want = _ieee(view.numpy().copy())
    sqrt_(view)
    np.testing.assert_array_equal(base.T.numpy(), want)


def test_sqrt_refuses_a_tensor_that_needs_a_gradient():
    # NumPy would write around autograd, and the backward pass would be silently wrong
    with pytest.raises(ValueError, match="no gradient"):
        sqrt_(torch.ones(3, requires_grad=True))


def test_sqrt_of_other_dtypes_falls_back_to_torch():
    x = torch.tensor([4.0, 9.0], dtype=torch.bfloat16)
    assert sqrt_(x).tolist() == [2.0, 3.0]


# Torch CPU ops whose bits were seen to differ between this AMD EPYC and QEMU's Intel and AMD
# models under the portable pins (MKL's vector math): the package must not call them.
_VENDOR_DEPENDENT = {"sqrt", "sqrt_", "cdist", "atan", "atan_", "arctan"}
_EXACT_MODULES = {"np", "numpy", "math"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node


def test_the_package_takes_square_roots_only_through_numerics():
    offenders = []
    for path in sorted((ROOT / "fct_registry").rglob("*.py")):
        if path.name == "numerics.py":
            continue
        for call in _calls(ast.parse(path.read_text())):
            func = call.func
            base = func.value.id if isinstance(func.value, ast.Name) else None
            if func.attr in _VENDOR_DEPENDENT and base not in _EXACT_MODULES:
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} .{func.attr}(")
            if func.attr in ("Adam", "AdamW") and not any(
                k.arg == "fused" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in call.keywords
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {func.attr} unfused")
    assert not offenders, f"use fct_registry.numerics.sqrt_ / fused=True: {offenders}"
