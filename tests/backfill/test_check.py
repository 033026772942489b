"""``fct backfill check``: a release rule on the backfilling curves ("backfilling 20% in
uncertainty order, the gallery reaches 98% of the new model's top-1")."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from fct_registry.cli import main
from fct_registry.gate.rules import check_backfill

MEASURED = Path(__file__).resolve().parents[2] / "docs" / "backfill" / "metrics.json"


@pytest.mark.parametrize("within", [0.0, 0.05, 0.2, 0.25, 0.333, 0.9, 1.0])
def test_reads_the_curve_like_numpy_interp(within: float) -> None:
    rng = np.random.default_rng(int(within * 1000))
    xs = np.linspace(0, 1, 9)
    ys = np.sort(rng.uniform(50, 90, 9))
    result = check_backfill("r", xs.tolist(), ys.tolist(), within=within, fraction=0.97)
    assert result.measured == pytest.approx(float(np.interp(within, xs, ys)), abs=1e-12)
    assert result.bound == pytest.approx(0.97 * ys[-1])
    assert result.status == ("pass" if result.measured >= result.bound else "fail")


def test_edges() -> None:
    flat = check_backfill("r", [0, 0.5, 1], [80, 90, 90], within=0.5, fraction=1.0)
    assert flat.status == "pass" and flat.margin == pytest.approx(0)  # equal is enough
    short = check_backfill("r", [0, 0.5], [80, 90], within=0.2, fraction=0.9)
    assert short.status == "skipped" and "100%" in short.reason


def _expected(policy: str, metric: str, within: float) -> tuple[float, float]:
    """Seed means read at ``within`` by hand: (value, value at 100%)."""
    seeds = json.loads(MEASURED.read_text())["per_seed"].values()
    curves = [s["curves"][policy] for s in seeds]
    k = [round(f, 9) for f in curves[0]["fractions"]].index(within)
    return (
        statistics.fmean(c[metric][k] for c in curves),
        statistics.fmean(c[metric][-1] for c in curves),
    )


def test_cli_on_the_measured_run(capsys) -> None:
    base = ["backfill", "check", "--metrics", str(MEASURED), "--json"]
    value, full = _expected("uncertainty", "top1", 0.2)
    fraction = round(value / full - 0.001, 4)  # just below what was reached: passes
    assert main([*base, "--within", "20%", "--fraction", str(fraction)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "pass" and out["measured"] == pytest.approx(value)
    assert out["bound"] == pytest.approx(fraction * full) and len(out["per_seed"]) == 3
    assert main([*base, "--within", "20%", "--fraction", str(fraction + 0.002)]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "fail"
    value, full = _expected("random", "mAP", 0.1)
    assert main([*base, "--within", "10%", "--metric", "mAP", "--policy", "random"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measured"] == pytest.approx(value) and out["bound"] == pytest.approx(0.98 * full)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--within", "120%"], "within 0..100%"),
        (["--within", "0.2"], "not a percentage"),
        (["--within", "20%", "--fraction", "1.5"], "--fraction"),
        (["--within", "20%", "--metrics", "missing.json"], "--metrics file missing.json"),
    ],
)
def test_usage_errors(argv, message, capsys) -> None:
    args = ["backfill", "check", *argv]
    if "--metrics" not in argv:
        args += ["--metrics", str(MEASURED)]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_planning_a_pgvector_gallery_names_the_copy_commands() -> None:
    from fct_registry.backfill.plan import BackfillPlanError, open_gallery

    url = "postgresql://fct:secret@db:5432/fct?gallery=fashion"
    with pytest.raises(BackfillPlanError) as err:
        open_gallery(url)
    text = str(err.value)
    assert "fct gallery copy URL galleries/to-backfill" in text and "secret" not in text
    assert "fct gallery copy galleries/to-backfill URL" in text
