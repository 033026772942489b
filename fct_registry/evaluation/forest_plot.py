"""Forest plot of the protocol's claims: each estimate with its paired-bootstrap interval."""

from __future__ import annotations

from pathlib import Path


def plot_intervals(u: dict, path: Path) -> None:
    """Forest plot of every claim's estimate and CI (top-1 points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, dict]] = []
    rows += [(f"gain {n}", g["top1"]) for n, g in u["side_info_gain"].items()]
    rows += [(f"FCT−BCT {c['bct_kind']} {c['fct']}", c["top1"]) for c in u["fct_vs_bct"].values()]
    rows += [
        (f"BCT {n} new/old−old/old", b["new_old_minus_old_old_top1"])
        for n, b in u["bct_backward"].items()
    ]
    rows += [(f"chain {n}−direct", c["top1"]) for n, c in u["chain_vs_direct"].items()]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(rows), 1) + 1.2))
    for i, (_, d) in enumerate(rows):
        ax.errorbar(
            d["estimate"],
            i,
            xerr=[[d["estimate"] - d["ci_low"]], [d["ci_high"] - d["estimate"]]],
            fmt="o",
            color="tab:blue",
            capsize=3,
        )
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"top-1 difference, points ({round(100 * u['level'])}% paired-bootstrap CI)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
