"""Portable determinism: the same bits from a stage on any x86-64 CPU with AVX2.

PyTorch, MKL, oneDNN and NumPy each pick their CPU kernels from the instruction set they find,
and kernels for different instruction sets round differently (a matmul + softmax already differs
between AVX2 and AVX-512). ``determinism: portable`` pins one kernel set: every library at its
AVX2 (or older) code path, a fixed thread count, deterministic algorithms. ``fast`` leaves the
libraries to choose, as before. See docs/determinism.md for what is covered and what is not.

Most pins are environment variables that the libraries read once, when they first start, so
they must be in place before torch is imported: :mod:`fct_registry.kernel_env` holds them
(torch-free) and ``fct_registry.stages.early`` re-executes a stage under them before it imports
torch. :func:`apply_in_process` sets the rest (flags that torch reads at run time) and checks
that the pins took effect.
"""

from __future__ import annotations

import torch

from fct_registry.errors import ConfigError
from fct_registry.kernel_env import PORTABLE_THREADS


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
