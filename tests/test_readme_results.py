"""docs/results.md is exactly what scripts/readme_results.py renders from outputs/eval/."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.readme_results import (
    ADOPT_BEGIN,
    ADOPT_END,
    BACKFILL_BEGIN,
    BACKFILL_END,
    BACKFILL_RUN,
    BEGIN,
    END,
    FRONT_PAGE,
    PAGE,
    adopt_markdown,
    backfill_markdown,
    checks,
    main,
)

EVAL = ROOT / "outputs" / "eval"


def test_readme_has_the_generated_section():
    text = (ROOT / PAGE).read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.count(BACKFILL_BEGIN) == 1 and text.count(BACKFILL_END) == 1
    front = (ROOT / FRONT_PAGE).read_text()
    assert front.count(ADOPT_BEGIN) == 1 and front.count(ADOPT_END) == 1


@pytest.mark.skipif(
    not (EVAL / "uncertainty.json").exists(), reason="no pipeline outputs: run `dvc repro`"
)
def test_readme_results_equal_the_tracked_outputs(capsys):
    args = ["--check", "--page", str(ROOT / PAGE), "--eval-dir", str(EVAL)]
    args += ["--backfill", str(ROOT / BACKFILL_RUN), "--front-page", str(ROOT / FRONT_PAGE)]
    code = main([*args, "--params", str(ROOT / "params.yaml")])
    assert code == 0, capsys.readouterr().out


def test_backfill_table_counts_seeds_and_reads_the_interval():
    def stat(mean, ci):
        return {"mean": mean, "ci95": ci, "n": 3, "std": 0.0}

    curves = [(80.0, 79.0), (80.0, 80.5), (81.0, 80.0)]  # (uncertainty, random) per seed
    m = {
        "from": 1,
        "to": 3,
        "enabled": True,
        "seeds": ["0", "1", "2"],
        "per_seed": {
            str(i): {
                "curves": {
                    "uncertainty": {"auc_top1": u, "auc_mAP": u},
                    "random": {"auc_top1": r, "auc_mAP": r + 2},
                }
            }
            for i, (u, r) in enumerate(curves)
        },
        "auc": {
            p: {"top1": stat(80, 0.5), "mAP": stat(70, 0.1)}
            for p in ("random", "uncertainty", "oracle")
        },
        "auc_uncertainty_minus_random": {"top1": stat(0.5, 0.4), "mAP": stat(-1.5, 2.0)},
        "transform_only": {
            k: {"top1": stat(78, 0.2), "mAP": stat(66, 0.1)} for k in ("plain", "uncertainty")
        },
        "transform_only_uncertainty_minus_plain": {"top1": stat(-0.1, 0.2), "mAP": stat(0.0, 0.01)},
    }
    text = backfill_markdown(m)
    assert "**+0.50 ± 0.40** (2/3 seeds > 0; interval excludes 0)" in text
    assert "**-1.50 ± 2.00** (0/3 seeds > 0; interval includes 0)" in text
    assert "| top-1 | 78.00 ± 0.20 | 78.00 ± 0.20 | -0.10 ± 0.20 |" in text
    assert "switched off" in backfill_markdown({"enabled": False})


def test_adopt_table_pairs_each_transformation_with_its_no_side_info_twin():
    def edge(src, dst, top1, m):
        gap = {"estimate": top1, "ci_low": top1 - 1, "ci_high": top1 + 1}
        return {"from": src, "to": dst, "gap_closed_top1": gap, "gap_closed_mAP": gap | m}

    u = {
        "level": 0.95,
        "edges": {
            "a": edge(1, 2, 89.74, {}),
            "a_bare": edge(1, 2, 43.58, {"estimate": 70.0}),
            "b": edge(2, 3, 10.0, {}),  # no twin: not in the table
        },
        "side_info_gain": {
            "a": {
                "with": "a",
                "without": "a_bare",
                "top1": {"estimate": 7.88, "ci_low": 7.0, "ci_high": 8.7},
            },
        },
    }
    text = adopt_markdown(u)
    rows = [line for line in text.splitlines() if line.startswith("| with") or "`a_bare`" in line]
    assert rows == [
        "| with side-info | `a` (1→2) | 89.7 [88.7, 90.7] | 89.7 [88.7, 90.7] |",
        "| without | `a_bare` (1→2) | 43.6 [42.6, 44.6] | 70.0 [42.6, 44.6] |",
    ]
    assert "`b`" not in text and "+7.9 [+7.0, +8.7] top-1 points on 1→2" in text


def test_a_target_met_only_by_its_point_estimate_is_not_yet_shown():
    def gap(estimate, low, high):
        return {"estimate": estimate, "ci_low": low, "ci_high": high}

    u = {
        "edges": {
            "met": {
                "side_info": True,
                "gap_closed_top1": gap(80, 72, 88),
                "gap_closed_mAP": gap(95, 91, 99),
            },
            "point": {
                "side_info": True,
                "gap_closed_top1": gap(70.5, 61.9, 79.9),
                "gap_closed_mAP": gap(85, 80, 90),
            },
        },
        "side_info_gain": {},
        "bct_backward": {},
        "chain_vs_direct": {},
    }
    met, point = (line for line in checks(u) if line.startswith("- "))
    assert met.endswith(
        "top-1 gap (80.0 [72.0, 88.0]%): yes; ≥ 90% of the mAP gap (95.0 [91.0, 99.0]%): yes"
    )
    assert "(70.5 [61.9, 79.9]%): not yet shown (interval 61.9 to 79.9)" in point
    assert point.endswith("(85.0 [80.0, 90.0]%): **no**")
