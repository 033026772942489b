"""Human-facing renderings of a compatibility report: a markdown table and a heatmap."""

from __future__ import annotations

import math
from pathlib import Path


def _fmt(value: float | None) -> str:
    return (
        "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"
    )


def markdown_table(report: dict, family: str) -> str:
    """The paper's table: each case's top-1 / top-5 / mAP and the share of the gap it closes."""
    rows = [
        "| case (query / gallery) | top-1 | top-5 | mAP | top-1 gap closed | mAP gap closed |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, s: dict) -> None:
        rows.append(
            f"| {label} | {_fmt(s['top1'])} | {_fmt(s['top5'])} | {_fmt(s['mAP'])} | "
            f"{_fmt(s.get('gap_closed_top1'))} | {_fmt(s.get('gap_closed_mAP'))} |"
        )

    for v, s in report["self"].items():
        row(f"{family}@{v} / {family}@{v}", s)
    for name, s in report["transformations"].items():
        how = "FCT" if s["side_info"] else "FCT, no side-info"
        row(f"{family}@{s['to']} / h({family}@{s['from']}) — {how} `{name}`", s)
    for name, s in report["chains"].items():
        row(f"{family}@{s['to']} / chain {name.replace('-', '→')}", s)
    for name, s in report["raw"].items():
        new, old = name.split("-")
        row(f"{family}@{new} / {family}@{old} — no transformation", s)
    for name, s in report["bct"].items():
        row(f"BCT {family}@{s['to']} / {family}@{s['from']} `{name}`", s["new_old"])
        row(f"BCT {family}@{s['to']} / BCT {family}@{s['to']} `{name}`", s["new_new"])
    return "\n".join(rows) + "\n"


def matrix_rows(report: dict) -> list[dict]:
    """Long-format rows for ``dvc plots`` (query, gallery, top1)."""
    return [
        {"query": q, "gallery": g, "top1": v}
        for q, row in report["matrix"].items()
        for g, v in row.items()
        if v is not None
    ]


def plot_matrix(report: dict, family: str, path: Path) -> None:
    """Heatmap of the compatibility matrix (query version x gallery version, top-1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    versions = list(report["matrix"])
    grid = np.array(
        [
            [np.nan if report["matrix"][q][g] is None else report["matrix"][q][g] for g in versions]
            for q in versions
        ],
        dtype=float,
    )
    fig, ax = plt.subplots(figsize=(1.4 * len(versions) + 2, 1.2 * len(versions) + 1.5))
    image = ax.imshow(grid, cmap="viridis", vmin=np.nanmin(grid) - 5, vmax=100)
    ax.set_xticks(range(len(versions)), [f"{family}@{v}" for v in versions])
    ax.set_yticks(range(len(versions)), [f"{family}@{v}" for v in versions])
    ax.set_xlabel("gallery version (upgraded by the best transformation)")
    ax.set_ylabel("query version")
    for i in range(len(versions)):
        for j in range(len(versions)):
            if np.isnan(grid[i, j]):  # newer gallery, older query: FCT has no backward edges
                ax.text(
                    j,
                    i,
                    "no backward\ntransformation",
                    ha="center",
                    va="center",
                    color="gray",
                    fontsize=8,
                )
            else:
                dark = grid[i, j] < np.nanmean(grid)
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.1f}",
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                )
    ax.set_title(f"{family}: cross-version top-1 (%)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
