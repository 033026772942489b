"""Portable determinism: the same bits from a stage on any x86-64 CPU with AVX2.

PyTorch, MKL, oneDNN and NumPy each pick their CPU kernels from the instruction set they find,
and kernels for different instruction sets round differently (a matmul + softmax already differs
between AVX2 and AVX-512). ``determinism: portable`` pins one kernel set: every library at its
AVX2 (or older) code path, a fixed thread count, deterministic algorithms. ``fast`` leaves the
libraries to choose, as before. See docs/determinism.md for what is covered and what is not.

Most pins are environment variables that the libraries read once, when they first start, so
they must be in place before torch is imported: :func:`portable_env` builds that environment
and ``fct_registry.stages.entry`` re-executes a stage under it. :func:`apply_in_process` sets
the rest (flags that torch reads at run time) and checks that the pins took effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from fct_registry.errors import ConfigError

Mode = Literal["portable", "fast"]

# Intra-op threads in portable mode. Reductions split their work per thread, so the count is
# part of the result: it is fixed, not taken from the machine (2 suits a 2-core CI runner).
PORTABLE_THREADS = 2

PINNED_ENV: dict[str, str] = {
    # ATen's vectorised kernels (softmax, exp, reductions, optimiser steps): the AVX2 build.
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL (linear layers, matmul). Conditional numerical reproducibility: MKL documents the
    # AVX2/AVX512 branches for Intel CPUs only; on this AMD machine MKL_CBWR=AVX2 and SSE4_2
    # give the bits of AUTO (ignored), so only COMPATIBLE (SSE2) is the same code on every x86.
    "MKL_CBWR": "COMPATIBLE",
    # oneDNN (convolutions, batch norm). Both spellings: a user's DNNL_ value must not win.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    # NumPy (input statistics in prepare): its AVX-512 dispatch targets off, AVX2 (X86_V3) on.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    # A fixed thread count, never adjusted at run time (MKL's reproducibility conditions).
    "OMP_NUM_THREADS": str(PORTABLE_THREADS),
    "MKL_NUM_THREADS": str(PORTABLE_THREADS),
    "OMP_DYNAMIC": "FALSE",
    "MKL_DYNAMIC": "FALSE",
    # cuBLAS: deterministic reductions (best effort on CUDA; the claim is CPU bit identity).
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}
# Variables that would override a pin (NumPy refuses ENABLE beside DISABLE; MKL's instruction
# cap and its old AMD switch select other kernels).
UNSET_ENV: tuple[str, ...] = (
    "NPY_ENABLE_CPU_FEATURES",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
)
# Set by the re-executed stage: if the pins are still missing then, something in the
# environment (a wrapper script, sitecustomize) undoes them, and re-executing again would loop.
MARKER = "FCT_DETERMINISM_PINNED"


def is_pinned(env: Mapping[str, str]) -> bool:
    """Whether ``env`` already holds every portable pin (and none of the overriding variables)."""
    return all(env.get(k) == v for k, v in PINNED_ENV.items()) and not any(
        k in env for k in UNSET_ENV
    )


def portable_env(base_env: Mapping[str, str]) -> dict[str, str]:
    """``base_env`` with the portable pins; they override whatever the user forced."""
    env = {k: v for k, v in base_env.items() if k not in UNSET_ENV}
    env.update(PINNED_ENV)
    env[MARKER] = "1"
    return env


def unpinned(env: Mapping[str, str]) -> list[str]:
    """Names of the pins ``env`` lacks or overrides, for the error message."""
    wrong = [k for k, v in PINNED_ENV.items() if env.get(k) != v]
    return wrong + [k for k in UNSET_ENV if k in env]


def cpu_has_avx2() -> bool:
    """Whether this CPU can run torch's AVX2 kernels (cpuinfo: x86-64 with AVX2 and FMA); what
    the hardware offers, whatever ``ATEN_CPU_CAPABILITY`` asks for."""
    return bool(torch.cpu._is_avx2_supported())


def check_kernels() -> None:
    """Raise :class:`ConfigError` unless torch runs its AVX2 kernels, naming why and the fix.

    Two causes, two fixes: a CPU without AVX2 (or not x86-64) cannot run the pinned kernels at
    all, and would silently produce other bits, so portable mode is refused there; a CPU with
    AVX2 whose torch started without the pin only needs the stage started the usual way.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX2":
        return
    if not cpu_has_avx2():
        raise ConfigError(
            "determinism: portable needs an x86-64 CPU with AVX2, and this one has none (torch "
            f"runs its {capability} kernels here, so the bits would differ from the tracked "
            "outputs); set `determinism: fast` in the params file to run with this CPU's own "
            "kernels (results then match the tracked ones only to rounding)"
        )
    raise ConfigError(
        f"determinism: portable runs the AVX2 kernels, but torch started with CPU capability "
        f"{capability!r}: ATEN_CPU_CAPABILITY=avx2 must be set before torch starts; run the "
        "stage as `python -m pipelines.NAME` (it sets the pins), or use `determinism: fast`"
    )


def apply_in_process() -> None:
    """The run-time half of portable mode; call it in a process started with :func:`portable_env`.

    Raises :class:`ConfigError` when torch does not run the pinned kernels
    (:func:`check_kernels`): the stage would silently produce other bits.
    """
    check_kernels()
    torch.set_num_threads(PORTABLE_THREADS)
    # warn_only: CUDA has ops without a deterministic kernel (adaptive_avg_pool2d backward);
    # on CPU every op the stages use is deterministic.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.mkldnn.deterministic = True
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    # Full fp32: no TF32 on CUDA (some machines only). Through the legacy flags: the new
    # ``fp32_precision`` API mixed with them breaks torch.export (the register stage's ONNX
    # export reads them with ``cudnn.set_flags``). oneDNN keeps its default, full fp32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
