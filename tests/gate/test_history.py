"""The gate history: one MLflow run per recorded evaluation, read back newest first.

A bare SQLite store in tmp with three versions of ``fashion`` (no models: the verdicts are
built by hand, so these tests are fast); the real gate on a real pipeline records through the
same code in ``test_gate_e2e.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fct_registry.gate.errors import GateError
from fct_registry.gate.history import (
    REPORT_ARTIFACT,
    finish_record,
    gate_history,
    start_record,
)
from fct_registry.gate.promote import record_and_promote
from fct_registry.gate.report import format_table
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.store import ensure_schema
from tests.gate.conftest import FAMILY, gate_result


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_schema(uri)
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(FAMILY)
    for _ in range(3):
        client.create_model_version(FAMILY, source=str(tmp_path / "model"))
    return uri


def client_of(uri: str) -> MlflowClient:
    return MlflowClient(uri, registry_uri=uri)


def production(uri: str) -> int | None:
    value = client_of(uri).get_registered_model(FAMILY).aliases.get(fct_tags.PRODUCTION_ALIAS)
    return None if value is None else int(value)


def test_every_recorded_verdict_is_one_more_entry_newest_first(store: str) -> None:
    client = client_of(store)
    client.set_registered_model_alias(FAMILY, fct_tags.PRODUCTION_ALIAS, "1")
    assert gate_history(client, FAMILY) == []  # no experiment yet

    fail = gate_result(2, 1, upgraded_top1=55.0)
    outcome = record_and_promote(fail, promote=True, tracking_uri=store)
    assert not outcome["moved"] and production(store) == 1
    (first,) = gate_history(client, FAMILY)
    assert (first.candidate, first.baseline, first.verdict, first.promoted) == (2, 1, "fail", False)
    assert first.run_id == outcome["run"] and first.status == "FINISHED"
    assert "not promoted: the gate failed" in first.promotion

    passing = gate_result(3, 1, upgraded_top1=75.5)
    assert record_and_promote(passing, promote=True, tracking_uri=store)["moved"]
    assert production(store) == 3
    # The DVC stage records without promoting; the same version gated again is a new entry.
    assert not record_and_promote(passing, promote=False, tracking_uri=store)["moved"]

    history = gate_history(client, FAMILY)
    assert len(history) == 3
    assert [(r.candidate, r.verdict, r.promoted) for r in history] == [
        (3, "pass", False),
        (3, "pass", True),
        (2, "fail", False),
    ]
    assert [r.at for r in history] == sorted((r.at for r in history), reverse=True)
    assert history[1].promotion == "fashion@production moved from version 1 to version 3"
    # Each rule as measured: status, value and bound; the unmeasured one is skipped, not lost.
    checks = {c.name: c for c in history[2].checks}
    assert [c.name for c in history[2].checks] == [c.name for c in fail.checks]
    assert checks["upgraded_top1_vs_baseline"].status == "fail"
    assert checks["upgraded_top1_vs_baseline"].measured == pytest.approx(55.0)
    assert checks["upgraded_top1_vs_baseline"].bound == pytest.approx(70.0)
    assert checks["raw_top1"].status == "skipped" and checks["raw_top1"].measured is None
    assert (history[2].passed, history[2].failed) == (1, 1)

    # The version's tags stay the *latest* verdict, and point at its history run.
    tags = client.get_model_version(FAMILY, "3").tags
    assert tags[fct_tags.GATE_VERDICT] == "pass" and tags[fct_tags.GATE_RUN] == history[0].run_id
    assert client.get_model_version(FAMILY, "2").tags[fct_tags.GATE_RUN] == history[2].run_id


def test_a_gate_run_holds_params_metrics_and_the_report(store: str, tmp_path: Path) -> None:
    client = client_of(store)
    client.set_registered_model_alias(FAMILY, fct_tags.PRODUCTION_ALIAS, "1")
    result = gate_result(3, 1, upgraded_top1=75.5)
    outcome = record_and_promote(result, promote=True, tracking_uri=store)
    run = client.get_run(outcome["run"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == f"fct-{FAMILY}"
    # Artifacts beside the SQLite store, like registration's (never ./mlruns).
    assert experiment.artifact_location.endswith(f"/mlartifacts/fct-{FAMILY}")
    assert (
        run.data.tags[fct_tags.ROLE] == fct_tags.ROLE_GATE
        and run.data.tags[fct_tags.GATE_PROMOTED] == "true"
    )
    assert run.data.params["check.upgraded_top1_vs_baseline.status"] == "pass"
    assert run.data.params["upgrade_path"] == "1->3"
    metrics = run.data.metrics
    assert metrics["check.upgraded_top1_vs_baseline.margin"] == pytest.approx(5.5)
    assert metrics["score.upgraded.top1"] == pytest.approx(75.5)
    assert "score.upgraded.mAP" not in metrics  # NaN is not a measurement
    report = json.loads(
        Path(client.download_artifacts(run.info.run_id, REPORT_ARTIFACT, str(tmp_path))).read_text()
    )
    assert report["verdict"] == "pass" and report["promotion"]["moved"] is True
    assert "Release gate PASS" in run.data.tags["mlflow.note.content"]
    table = format_table(result)
    assert f"history: recorded as run {run.info.run_id} of experiment fct-fashion" in table


def test_order_is_by_time_and_the_history_is_bounded(store: str) -> None:
    """Entries recorded out of order come back by their time; registration runs in the same
    experiment are not gate runs."""
    client = client_of(store)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for day, candidate in ((2, 2), (0, 3), (5, 1), (1, 2)):
        result = gate_result(candidate, None, upgraded_top1=80.0)
        result.promotion = {"moved": False, "message": f"day {day}"}
        run_id = start_record(client, result, at=t0 + timedelta(days=day))
        finish_record(client, run_id, result)
    experiment = client.get_experiment_by_name(f"fct-{FAMILY}").experiment_id
    client.create_run(
        experiment, tags={fct_tags.ROLE: fct_tags.ROLE_EMBEDDING}
    )  # a registration's run
    history = gate_history(client, FAMILY)
    assert [r.promotion for r in history] == ["day 5", "day 2", "day 1", "day 0"]
    assert history[0].at == t0 + timedelta(days=5)
    assert [r.promotion for r in gate_history(client, FAMILY, limit=2)] == ["day 5", "day 2"]


def test_a_raced_promotion_is_recorded_as_not_promoted(store: str) -> None:
    client = client_of(store)
    client.set_registered_model_alias(
        FAMILY, fct_tags.PRODUCTION_ALIAS, "2"
    )  # moved since measuring
    with pytest.raises(GateError, match="moved to version 2 while the gate compared"):
        record_and_promote(gate_result(3, 1, upgraded_top1=75.5), promote=True, tracking_uri=store)
    (entry,) = gate_history(client, FAMILY)
    assert entry.verdict == "pass" and not entry.promoted and entry.status == "FINISHED"
    assert entry.promotion.startswith("not promoted: fashion@production moved to version 2")
    assert production(store) == 2


def test_nothing_to_gate_records_nothing(store: str) -> None:
    result = gate_result(3, 3, upgraded_top1=80.0)
    result.verdict = "skip"
    assert record_and_promote(result, promote=False, tracking_uri=store)["tagged"] is False
    assert gate_history(client_of(store), FAMILY) == []


def test_a_report_that_cannot_be_uploaded_leaves_a_complete_entry(
    store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only or failing artifact store: the alias has moved by then, so the gate does not
    turn into a crash; the run's tags, params and metrics still hold the entry."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("artifact store is read-only")

    client = client_of(store)
    client.set_registered_model_alias(FAMILY, fct_tags.PRODUCTION_ALIAS, "1")
    monkeypatch.setattr(MlflowClient, "log_text", refuse)
    assert record_and_promote(gate_result(3, 1, 75.5), promote=True, tracking_uri=store)["moved"]
    (entry,) = gate_history(client, FAMILY)
    assert entry.status == "FINISHED" and entry.promoted and entry.verdict == "pass"
    assert "report could not be uploaded" in caplog.text and "read-only" in caplog.text
    assert client.list_artifacts(entry.run_id) == []
