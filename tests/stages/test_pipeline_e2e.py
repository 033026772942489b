"""The real pipeline (`dvc repro`) end to end on a few batches per stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, needs_fashion, tiny_params

pytestmark = [pytest.mark.slow, needs_fashion]


def _env(cwd: Path) -> dict[str, str]:
    # The project's own store, never the developer's mlflow.db that `make` points at.
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlflow.db",
    )


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=_env(cwd),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    for item in ("dvc.yaml", ".dvcignore", "pipelines", "fct_registry"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    assert _dvc(work, "init", "--no-scm", "-q").returncode == 0
    run = _dvc(work, "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return work


def test_repro_writes_every_case(project):
    metrics = json.loads((project / "outputs/eval/metrics.json").read_text())
    assert set(metrics["self"]) == {"1", "2", "3"}
    assert set(metrics["transformations"]) == {
        "v1_to_v2",
        "v2_to_v3",
        "v1_to_v3",
        "v1_to_v2_no_side_info",
        "v1_to_v2_ml_fct",
    }
    uncertainty = json.loads((project / "outputs/eval/uncertainty.json").read_text())
    assert set(uncertainty["side_info_gain"]) == {"v1_to_v2"}
    assert uncertainty["edges"]["v1_to_v2"]["seeds"] == 3
    assert "1-2-3" in metrics["chains"]
    assert set(metrics["raw"]) == {"3-2"}  # version 1 is 8-d: no raw case against it
    assert set(metrics["bct"]["v1_to_v2"]) >= {"new_old", "new_new"}
    for case in metrics["transformations"].values():
        assert 0 <= case["top1"] <= 100 and 0 <= case["mAP"] <= 100
    assert metrics["matrix"]["1"]["3"] is None  # no backward edge
    assert (project / "outputs/eval/compatibility.png").stat().st_size > 1000
    assert "FCT" in (project / "outputs/eval/compatibility.md").read_text()


def test_resolve_after_repro_compares_measured_routes(project):
    run = subprocess.run(
        [sys.executable, "-m", "fct_registry", "resolve", "fashion@1", "fashion@3", "--json"],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    answer = json.loads(run.stdout)
    metrics = json.loads((project / "outputs/eval/metrics.json").read_text())
    routes = [answer["chosen"], *answer["alternatives"]]
    direct = next(r for r in routes if r["path"] == [1, 3])
    chain = next(r for r in routes if r["path"] == [1, 2, 3] and r["measured"])
    # The registry holds what the evaluate stage measured: direct edge and the recorded chain.
    assert direct["top1"] == pytest.approx(metrics["transformations"]["v1_to_v3"]["top1"], abs=1e-3)
    assert chain["top1"] == pytest.approx(metrics["chains"]["1-2-3"]["top1"], abs=1e-3)
    best = max(direct["top1"], chain["top1"])
    assert answer["chosen"]["top1"] == pytest.approx(best)


@pytest.mark.parametrize("bytecode", ["written", "not written"])
def test_second_repro_reruns_only_register_and_gate_and_changes_nothing(
    project, monkeypatch, bytecode
):
    """Nothing is stale, also when Python writes __pycache__ into the code deps (as on any
    machine without PYTHONDONTWRITEBYTECODE); only the always_changed stages that read or
    write the MLflow store rerun, and they rewrite the same bytes."""
    if bytecode == "written":
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    else:
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    tracked = [
        *sorted((project / "outputs" / "gate").glob("*")),
        project / "outputs" / "registry.json",
        project / "outputs" / "eval" / "metrics.json",
    ]
    before = {p: p.read_bytes() for p in tracked}
    run = _dvc(project, "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = [line for line in run.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'register':", "Running stage 'gate':"], run.stdout
    assert {p: p.read_bytes() for p in tracked} == before
    if bytecode == "written":
        assert any((project / "fct_registry").rglob("__pycache__"))


def test_repro_without_the_store_registers_again(project):
    """A fresh clone has the tracked outputs (registry.json, dvc.lock) but no MLflow store:
    `dvc repro` must fill the store again before the gate reads it, not skip `register`."""
    tracked = [project / "outputs" / "registry.json", *sorted((project / "outputs/gate").glob("*"))]
    before = {p: p.read_bytes() for p in tracked}
    (project / "mlflow.db").unlink()
    for folder in ("mlartifacts", "mlruns"):
        shutil.rmtree(project / folder, ignore_errors=True)
    run = _dvc(project, "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Running stage 'register':" in run.stdout
    assert {p: p.read_bytes() for p in tracked} == before


def test_metrics_and_plots_readable(project):
    shown = _dvc(project, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "transformations" in shown.stdout
    plots = _dvc(project, "plots", "show", "-o", str(project / "plots"))
    assert plots.returncode == 0, plots.stderr
    assert (project / "plots" / "index.html").exists()


def test_changing_one_version_reruns_only_its_dependants(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["versions"]["3"]["optim"]["lr"] = 0.0015
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    status = _dvc(project, "status", "--json")
    changed = set(json.loads(status.stdout))
    assert "train@3" in changed and "evaluate" in changed
    assert not {"train@1", "train@2", "side_info", "prepare"} & changed
