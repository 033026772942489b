"""``fct backfill log``: the backfill stage's curves as MLflow metrics of the uncertainty-aware
transformation's version (a run in ``fct-<family>``, linked both ways)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from fct_registry.backfill.tracking import (
    METRICS_SHA_TAG,
    RUN_TAG,
    SUMMARY_TAG,
    VERSION_TAG,
    scalar_metrics,
)
from fct_registry.cli import main
from fct_registry.registry import tags as fct_tags

ROOT = Path(__file__).resolve().parents[2]
MEASURED = ROOT / "docs" / "backfill"  # the stage's measured run: real metrics and curves
NAME = "fam-transformations"


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, object]:
    """A registry with transformations 1: fct 1->3, 2: fct-uncertainty 1->3, 3: fct-uncertainty
    1->2 (tags only: logging reads no weights)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    for kind, source, target in (
        ("fct", 1, 3),
        ("fct-uncertainty", 1, 3),
        ("fct-uncertainty", 1, 2),
    ):
        tags = {fct_tags.KIND: kind, fct_tags.SOURCE: str(source), fct_tags.TARGET: str(target)}
        client.create_model_version(NAME, source=str(tmp_path / "artifact"), tags=tags)
    return uri, client


@pytest.fixture
def measured(tmp_path: Path) -> Path:
    out = tmp_path / "backfill"
    shutil.copytree(MEASURED, out, ignore=shutil.ignore_patterns("*.md"))
    return out / "metrics.json"


def test_log_links_a_run_to_the_version(store, measured, capsys, tmp_path) -> None:
    uri, client = store
    args = ["backfill", "log", "--metrics", str(measured), "--family", "fam", "--tracking-uri", uri]
    assert main(args) == 0
    assert f"{NAME}/2" in capsys.readouterr().out  # the newest fct-uncertainty 1 -> 3
    version = client.get_model_version(NAME, "2")
    run = client.get_run(version.tags[RUN_TAG])
    experiment = client.get_experiment_by_name("fct-fam")
    assert run.info.experiment_id == experiment.experiment_id
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "fct-fam").as_uri()
    assert run.data.tags[VERSION_TAG] == f"{NAME}/2" and run.data.tags[fct_tags.ROLE]
    assert RUN_TAG not in client.get_model_version(NAME, "3").tags

    # The numbers: recomputed from the per-seed curves, not copied from the summary.
    raw = json.loads(measured.read_text())
    per_seed = raw["per_seed"].values()
    for policy in ("random", "uncertainty", "oracle"):
        for metric in ("top1", "mAP"):
            values = [s["curves"][policy][f"auc_{metric}"] for s in per_seed]
            got = run.data.metrics[f"backfill.auc_{metric}.{policy}.mean"]
            assert got == pytest.approx(statistics.fmean(values), abs=1e-9)
            sd = run.data.metrics[f"backfill.auc_{metric}.{policy}.std"]
            assert sd == pytest.approx(statistics.stdev(values), abs=1e-9)
            half = run.data.metrics[f"backfill.auc_{metric}.{policy}.ci95"]
            assert half == pytest.approx(4.3027 * statistics.stdev(values) / 3**0.5, rel=1e-4)
    gain = [
        s["curves"]["uncertainty"]["auc_mAP"] - s["curves"]["random"]["auc_mAP"] for s in per_seed
    ]
    diff = run.data.metrics["backfill.auc_mAP.uncertainty_minus_random.mean"]
    assert diff == pytest.approx(statistics.fmean(gain), abs=1e-9)
    assert run.data.metrics["backfill.seeds"] == 3
    history = client.get_metric_history(run.info.run_id, "backfill.curve_top1.uncertainty")
    first = next(iter(per_seed))["curves"]["uncertainty"]
    assert sorted(m.step for m in history) == [round(100 * f) for f in first["fractions"]]
    at_50 = next(m.value for m in history if m.step == 50)
    k = [round(100 * f) for f in first["fractions"]].index(50)
    want = statistics.fmean(s["curves"]["uncertainty"]["top1"][k] for s in per_seed)
    assert at_50 == pytest.approx(want, abs=1e-9)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "backfill")}
    assert files == {"backfill/metrics.json", "backfill/curves.csv", "backfill/curves.png"}
    summary = json.loads(version.tags[SUMMARY_TAG])
    assert summary["auc_top1"]["uncertainty"] == round(raw["auc"]["uncertainty"]["top1"]["mean"], 4)

    # Idempotent: the same metrics.json again reuses the run; changed metrics make a new one.
    assert main(args) == 0
    assert "already logged" in capsys.readouterr().out
    assert client.get_model_version(NAME, "2").tags[RUN_TAG] == run.info.run_id
    raw["seeds"] = raw["seeds"][:2]
    raw["per_seed"] = dict(list(raw["per_seed"].items())[:2])
    measured.write_text(json.dumps(raw))
    assert main(args) == 0
    newer = client.get_model_version(NAME, "2").tags[RUN_TAG]
    assert newer != run.info.run_id
    assert client.get_run(newer).data.tags[METRICS_SHA_TAG] != run.data.tags[METRICS_SHA_TAG]


def test_log_refuses_the_wrong_version(store, measured, capsys) -> None:
    uri, client = store
    args = ["backfill", "log", "--metrics", str(measured), "--tracking-uri", uri]
    for extra, message in [
        (["--transformation", f"{NAME}/1"], "predicts no uncertainty"),
        (["--transformation", f"{NAME}/3"], "maps 1 -> 2, but the curves were measured for 1 -> 3"),
        (["--transformation", "nonsense"], "not NAME/VERSION"),
        ([], "other-transformations has no uncertainty-aware"),
    ]:
        assert main([*args, "--family", "fam" if extra else "other", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert all(RUN_TAG not in v.tags for v in client.search_model_versions(f"name = '{NAME}'"))
    assert client.get_experiment_by_name("fct-fam") is None  # nothing was logged


def test_disabled_stage_and_missing_family(store, tmp_path, capsys) -> None:
    uri, _ = store
    off = tmp_path / "off.json"
    off.write_text('{"enabled": false}\n')
    assert main(["backfill", "log", "--metrics", str(off), "--tracking-uri", uri]) == 2
    assert "disabled" in capsys.readouterr().err
    old = tmp_path / "old.json"
    old.write_text((MEASURED / "metrics.json").read_text())  # measured before "family" was kept
    assert main(["backfill", "log", "--metrics", str(old), "--tracking-uri", uri]) == 2
    assert "pass --family" in capsys.readouterr().err


def test_scalar_names_are_valid_mlflow_keys() -> None:
    import re

    names = scalar_metrics(json.loads((MEASURED / "metrics.json").read_text()))
    assert len(names) > 30 and all(re.fullmatch(r"[\w./ -]+", n) for n in names)
