"""Summaries of backfilling curves over seeds: means with t confidence intervals, and the plot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.306, 2.2622, 2.2281,
    2.201, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.093, 2.086,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
"""Student-t 0.975 quantiles for 1..30 degrees of freedom (scipy.stats.t.ppf), so the
interval needs no SciPy; beyond 30 the normal 1.96 is within 2%."""


def t_quantile(df: int) -> float:
    return T_975[df - 1] if df <= len(T_975) else 1.96


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation and the half-width of the two-sided 95% Student-t
    interval (``nan`` for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = t_quantile(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"mean": float(x.mean()), "std": sd, "ci95": half, "n": n}


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``a - b`` seed by seed, summarised by :func:`mean_ci` (the comparison that matters)."""
    return mean_ci([x - y for x, y in zip(a, b, strict=True)])


def plot_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: Path,
    title: str,
    references: Mapping[str, float] | None = None,
) -> None:
    """top-1 and mAP against the fraction backfilled, one line per policy (seed means, with
    the min-max band over seeds). ``curves[policy]``: ``fractions`` and ``top1``/``mAP`` as
    ``[seeds][points]`` lists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("top1", "mAP"), strict=True):
        for policy, c in curves.items():
            x = 100 * np.asarray(c["fractions"])
            y = np.asarray(c[metric], dtype=np.float64)
            (line,) = ax.plot(x, y.mean(axis=0), marker=".", label=policy)
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.2)
        for name, value in (references or {}).items():
            if name.endswith(metric):
                ax.axhline(value, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("gallery backfilled (%)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
