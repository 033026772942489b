"""Export a model (or a resolved chain) to ONNX with a dynamic batch dimension, and check it.

An ONNX graph is the pickle-free, framework-free form of a model: the MLflow flavor stores one
beside the safetensors weights and serves pyfunc predictions from it. Every export is verified
numerically against PyTorch with onnxruntime (:func:`verify_onnx`) before it is trusted.

Graph interface (fixed, so every consumer can rely on it):

* transformations and chains: inputs ``old_embedding`` ``[N, old_dim]`` and, when any hop reads
  side-info, ``side_info`` ``[N, side_info_dim]``; output ``new_embedding`` ``[N, new_dim]``.
  An uncertainty-aware transformation (or a chain ending in one) has a second output,
  ``log_variance`` ``[N]`` (see :mod:`fct_registry.models.uncertainty`).
* embedding and side-info models: input ``images`` ``[N, C, H, W]`` (float in [0, 1]); output
  ``embedding`` ``[N, dim]``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fct_registry.errors import FctError
from fct_registry.models.uncertainty import WithUncertainty, chain_predicts_uncertainty

# The interface names are the shipped runtime's, so the graph and its pyfunc always agree.
from fct_registry.registry._runtime.fct_pyfunc import (
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    OLD_INPUT,
    SIDE_INFO_INPUT,
    TRANSFORMATION_OUTPUT,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

# Second output of an uncertainty-aware transformation (not served by the pyfunc, which returns
# the embedding; read by the upgrade's runner into the gallery's uncertainty column).
UNCERTAINTY_OUTPUT = "log_variance"

KINDS = ("transformation", "embedding", "side_info")
EXPORT_BATCH = 4  # > 1, so the exporter cannot specialise the batch dimension to a constant


class OnnxExportError(FctError):
    """The ONNX graph could not be written, or disagrees with PyTorch."""


def input_names(kind: str, side_info_dim: int = 0) -> list[str]:
    """The graph's input names for a model ``kind`` (see the module docstring)."""
    _check_kind(kind)
    if kind != "transformation":
        return [IMAGE_INPUT]
    return [OLD_INPUT, SIDE_INFO_INPUT] if side_info_dim else [OLD_INPUT]


def output_name(kind: str) -> str:
    _check_kind(kind)
    return TRANSFORMATION_OUTPUT if kind == "transformation" else IMAGE_OUTPUT


def example_inputs(
    kind: str,
    *,
    batch: int = EXPORT_BATCH,
    old_dim: int | None = None,
    side_info_dim: int = 0,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random inputs in the graph's order: ``(old, side_info)``, ``(old,)`` or ``(images,)``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    if kind == "transformation":
        if not old_dim:
            raise OnnxExportError(
                "exporting a transformation needs old_dim (the old embedding "
                "width); pass old_dim=spec['old_dim']"
            )
        old = torch.randn(batch, old_dim, generator=gen)
        if not side_info_dim:
            return (old,)
        return old, torch.randn(batch, side_info_dim, generator=gen)
    _check_kind(kind)
    if not input_shape or len(input_shape) != 3:
        raise OnnxExportError(
            f"exporting an {kind} model needs input_shape=(C, H, W); pass "
            "input_shape=spec['input_shape']"
        )
    return (torch.rand(batch, *input_shape, generator=gen),)


def export_onnx(
    module: nn.Module,
    path: str | Path,
    kind: str = "transformation",
    *,
    old_dim: int | None = None,
    side_info_dim: int = 0,
    input_shape: Sequence[int] | None = None,
    verify: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> float | None:
    """Write ``module`` as ONNX at ``path`` with a dynamic batch dimension.

    ``module`` is a transformation or a :class:`~fct_registry.models.TransformationChain` (called
    as ``module(old, side_info)``; pass ``old_dim`` and ``side_info_dim``, 0 when no hop reads
    side-info) or an image model (``kind="embedding"``/``"side_info"``, pass ``input_shape``).
    Uses the dynamo exporter (the legacy one is deprecated). With ``verify`` the graph is run by
    onnxruntime on a batch of a different size and compared with PyTorch; returns the max
    absolute difference (None without ``verify``). A CPU copy of the module is exported, in
    eval mode; the module itself is left as it came (device and mode).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(
        kind, old_dim=old_dim, side_info_dim=side_info_dim, input_shape=input_shape
    )
    names = input_names(kind, side_info_dim)
    outputs = [output_name(kind)]
    # A CPU copy: exporting must not move the caller's module off its device.
    inner = copy.deepcopy(module)
    if kind == "transformation" and chain_predicts_uncertainty(module):
        inner, outputs = WithUncertainty(inner), [*outputs, UNCERTAINTY_OUTPUT]
    graph = graph_module(inner, kind, side_info_dim).cpu()
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in names)
    with _eval_mode(graph), _quiet():
        try:
            program = torch.onnx.export(
                graph,
                inputs,
                dynamo=True,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=dynamic,
                optimize=True,
                verbose=False,
            )
            program.save(str(path))
        except Exception as exc:  # the exporter raises many private types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxExportError(
                f"could not export the {kind} model to ONNX ({first}); check "
                "that the module is one of fct_registry.models and its spec "
                "matches it"
            ) from exc
    if not verify:
        return None
    check = example_inputs(
        kind,
        batch=EXPORT_BATCH + 3,
        old_dim=old_dim,
        side_info_dim=side_info_dim,
        input_shape=input_shape,
        seed=1,
    )
    return verify_onnx(graph, path, check, atol=atol, rtol=rtol)


def verify_onnx(
    module: nn.Module,
    onnx_path: str | Path,
    example_inputs: Sequence[torch.Tensor],
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> float:
    """Run the graph with onnxruntime on ``example_inputs`` and compare with ``module``.

    ``example_inputs`` are in the graph's input order (the module is called with them, so pass
    ``(old, side_info)`` for any transformation even when the graph takes only ``old``; extra
    inputs the graph does not declare are not fed to it). A module returning a tuple is compared
    output by output with the graph's outputs. Raises :class:`OnnxExportError` when
    any element differs by more than ``atol + rtol * |torch value|``; returns the max absolute
    difference.
    """
    import numpy as np
    import torch

    session = _session(onnx_path)
    declared = [i.name for i in session.get_inputs()]
    feeds = {
        name: t.detach().cpu().numpy().astype(np.float32)
        for name, t in zip(declared, example_inputs, strict=False)
    }
    gots = session.run(None, feeds)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    with _eval_mode(module), torch.no_grad():
        out = module(*(t.to(device) for t in example_inputs))
    wants = [w.detach().cpu().numpy() for w in (out if isinstance(out, tuple) else (out,))]
    if len(gots) != len(wants):
        raise OnnxExportError(
            f"{onnx_path}: the graph has {len(gots)} output(s), PyTorch returns "
            f"{len(wants)}; re-export the model"
        )
    worst, ok = 0.0, True
    for got, want in zip(gots, wants, strict=True):
        if got.shape != want.shape:
            raise OnnxExportError(
                f"{onnx_path}: ONNX output shape {got.shape} != PyTorch "
                f"{want.shape}; re-export the model"
            )
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        bound = atol + rtol * np.abs(want.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
        ok = ok and bool(np.all(diff <= bound))
    if not ok:
        raise OnnxExportError(
            f"{onnx_path}: ONNX output differs from PyTorch by up to {worst:.3g} "
            f"(allowed {atol:g} + {rtol:g}*|value|); re-export with this torch "
            "and onnxruntime, or raise atol if the model is numerically unstable"
        )
    return worst


def _session(onnx_path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise OnnxExportError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")


def graph_module(module: nn.Module, kind: str, side_info_dim: int = 0) -> nn.Module:
    """``module`` behind the graph's fixed interface: named inputs, ``side_info`` dropped when no
    hop reads it (the wrapped module then gets an empty ``[N, 0]`` side-info)."""
    from torch import nn

    _check_kind(kind)

    class Images(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner(images)

    class OldAndSideInfo(Images):
        def forward(self, old_embedding: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
            return self.inner(old_embedding, side_info)

    class OldOnly(Images):
        def forward(self, old_embedding: torch.Tensor) -> torch.Tensor:
            return self.inner(old_embedding, old_embedding.new_zeros(old_embedding.shape[0], 0))

    if kind != "transformation":
        return Images()
    return OldAndSideInfo() if side_info_dim else OldOnly()


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the block; then every submodule's own mode back (they may differ)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The dynamo exporter and the ONNX optimizer report progress ("Removed 31 unused nodes",
    "PassManager: ...") through their loggers, stdout and warnings: keep the command's output to
    what the command says. Stdout is silenced at the file-descriptor level too, for what native
    code or a copied ``sys.stdout`` writes (nothing else prints while a model is exported)."""
    loggers = [
        logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            _stdout_fd_silenced(),  # first: it flushes the real stdout
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _stdout_fd_silenced() -> Iterator[None]:
    """File descriptor 1 points at /dev/null for the block (restored after, even on errors)."""
    if sys.stdout is not None:
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
