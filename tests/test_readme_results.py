"""docs/results.md is exactly what scripts/readme_results.py renders from outputs/eval/."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.readme_results import (
    BACKFILL_BEGIN,
    BACKFILL_END,
    BACKFILL_RUN,
    BEGIN,
    END,
    PAGE,
    backfill_markdown,
    main,
)

EVAL = ROOT / "outputs" / "eval"


def test_readme_has_the_generated_section():
    text = (ROOT / PAGE).read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.count(BACKFILL_BEGIN) == 1 and text.count(BACKFILL_END) == 1


@pytest.mark.skipif(
    not (EVAL / "uncertainty.json").exists(), reason="no pipeline outputs: run `dvc repro`"
)
def test_readme_results_equal_the_tracked_outputs(capsys):
    args = ["--check", "--page", str(ROOT / PAGE), "--eval-dir", str(EVAL)]
    args += ["--backfill", str(ROOT / BACKFILL_RUN)]
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
