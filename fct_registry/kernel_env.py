"""The portable kernel pins as environment variables: what ``determinism: portable`` sets before
torch, MKL, oneDNN and NumPy start.

Torch-free, so that a stage can put them in place before it imports torch (the libraries read
them once, when they load): see :mod:`fct_registry.determinism` for why each pin exists and for
the run-time half, and :mod:`fct_registry.stages.early` for the re-execution.
"""

from __future__ import annotations

from collections.abc import Mapping

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
