"""Correctly rounded replacements for the few CPU ops of PyTorch whose bits depend on the CPU's
vendor, whatever the kernel pins (:mod:`fct_registry.kernel_env`).

ATen's elementwise float ``sqrt`` on CPU calls MKL's vector math (VML). On an AMD CPU, and on an
Intel one under ``MKL_CBWR=COMPATIBLE``, VML's path starts from ``rsqrtps``, an approximation
whose bits differ between CPU makers (and QEMU, which computes it exactly), then refines it: the
result is not the IEEE square root, and not the same on every machine. Found by running the
portable golden run under QEMU's Haswell and EPYC-Rome CPU models (docs/determinism.md). NumPy's
``sqrt`` is the ``sqrtps``/``sqrtpd`` instruction, which IEEE 754 makes exact on every x86, and
CUDA's ``sqrt`` is correctly rounded by default, so :func:`sqrt_` uses those.

AdamW's update takes the same square root; ``training.loop`` uses the fused optimiser, whose
kernel calls the instruction itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def sqrt_(x: Tensor) -> Tensor:
    """The IEEE square root of ``x``, in place; returns ``x``. For values, not for autograd."""
    if x.requires_grad:
        raise ValueError("numerics.sqrt_ takes no gradient: call it on a tensor without grad")
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        # a view of the same memory (a non-contiguous tensor's view too): written in place
        array = x.detach().numpy()
        np.sqrt(array, out=array)
        return x
    return x.sqrt_()
