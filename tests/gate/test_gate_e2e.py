"""``fct gate`` on a tiny real pipeline (see conftest): a weak candidate fails with exit 1 and is
not promoted, a good one passes and is promoted; a broken run exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml
from mlflow import MlflowClient

from fct_registry.cli import main
from fct_registry.gate.history import GateRecord, gate_history
from fct_registry.registry import tags as fct_tags
from tests.conftest import ROOT
from tests.gate.conftest import FAMILY, GateFamily

pytestmark = pytest.mark.slow


def client(family: GateFamily) -> MlflowClient:
    return MlflowClient(tracking_uri=family.uri, registry_uri=family.uri)


def production(family: GateFamily) -> int | None:
    value = client(family).get_registered_model(FAMILY).aliases.get(fct_tags.PRODUCTION_ALIAS)
    return None if value is None else int(value)


def set_production(family: GateFamily, version: int) -> None:
    client(family).set_registered_model_alias(FAMILY, fct_tags.PRODUCTION_ALIAS, str(version))


def gate_tags(family: GateFamily, version: int) -> dict[str, str]:
    tags = client(family).get_model_version(FAMILY, str(version)).tags
    return {k: v for k, v in tags.items() if k.startswith("fct.gate.")}


def history(family: GateFamily) -> list[GateRecord]:
    return gate_history(client(family), FAMILY)


def gate(family: GateFamily, *args: str) -> int:
    return main(["gate", "--tracking-uri", family.uri, "--outputs", str(family.outputs), *args])


def test_weak_candidate_fails_with_exit_1_and_is_not_promoted(
    family: GateFamily, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_production(family, 1)
    reports = {
        "--junit": tmp_path / "gate.xml",
        "--markdown": tmp_path / "gate.md",
        "--json-out": tmp_path / "gate.json",
    }
    argv = [a for k, v in reports.items() for a in (k, str(v))]
    assert gate(family, "--candidate", "fashion@2", "--promote", *argv) == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL" in out and "not promoted: the gate failed" in out

    assert production(family) == 1
    assert gate_tags(family, 2)[fct_tags.GATE_VERDICT] == "fail"
    recorded = json.loads(gate_tags(family, 2)[fct_tags.GATE_REPORT])
    assert recorded["checks"]["upgraded_top1_vs_baseline"]["status"] == "fail"
    (entry,) = history(family)  # the failure is in the history, with each rule as measured
    assert (entry.candidate, entry.baseline, entry.verdict, entry.promoted) == (2, 1, "fail", False)
    assert entry.run_id == gate_tags(family, 2)[fct_tags.GATE_RUN]

    data = json.loads(reports["--json-out"].read_text())
    measured = {c["name"]: c for c in data["checks"]}
    for check in entry.checks:
        assert check.status == measured[check.name]["status"]
        if measured[check.name]["bound"] is not None:
            assert check.measured == pytest.approx(measured[check.name]["measured"])
            assert check.bound == pytest.approx(measured[check.name]["bound"])
    assert data["promotion"]["run"] == entry.run_id
    capsys.readouterr()
    assert gate(family, "--candidate", "fashion@2", "--history") == 0  # lists, measures nothing
    listed = capsys.readouterr().out.splitlines()
    assert (
        listed[0]
        == "gate history of fashion, newest first: 1 recorded run of experiment fct-fashion"
    )
    counts = [str(entry.passed), str(entry.failed)]
    assert listed[2].split()[2:] == ["fashion@2", "@1", "fail", *counts, "-", entry.run_id]
    assert entry.failed >= 2
    scores = data["scores"]
    # The one-step transformation leaves the gallery barely searchable: far below the old model.
    assert scores["upgraded"]["top1"] < scores["baseline"]["top1"] - 10
    assert data["upgrade"]["path"] == [1, 2] and data["promotion"]["moved"] is False
    suite = ElementTree.parse(reports["--junit"]).getroot().find("testsuite")
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert {"upgraded_top1_vs_baseline", "upgraded_top1_vs_candidate"} <= failed
    assert "❌ Release gate FAIL: fashion@2 vs fashion@1" in reports["--markdown"].read_text()


def test_good_candidate_passes_and_is_promoted_then_nothing_to_gate(
    family: GateFamily, capsys: pytest.CaptureFixture[str]
) -> None:
    set_production(family, 1)
    assert gate(family, "--candidate", "fashion@3", "--promote", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "pass"
    assert all(c["status"] == "pass" for c in data["checks"]), data["checks"]
    assert data["upgrade"]["path"] == [1, 3]
    # The transformation is what makes the upgrade work: without it the gallery is useless.
    assert data["scores"]["upgraded"]["top1"] > data["scores"]["raw"]["top1"] + 20
    run = data["promotion"].pop("run")
    assert data["promotion"] == {
        "moved": True,
        "alias": "production",
        "tagged": True,
        "from": 1,
        "to": 3,
        "message": "fashion@production moved from version 1 to version 3",
    }
    assert production(family) == 3
    assert gate_tags(family, 3)[fct_tags.GATE_VERDICT] == "pass"
    (entry,) = history(family)
    assert (entry.run_id, entry.candidate, entry.verdict, entry.promoted) == (run, 3, "pass", True)
    assert entry.promotion == data["promotion"]["message"]
    assert gate(family, "--history", "5", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["run_id"] == run and listed["promoted"] is True and listed["failed"] == 0

    # CI reruns the gate on every push: once promoted, latest is production and nothing is gated.
    assert gate(family, "--promote") == 0
    out = capsys.readouterr().out
    assert "SKIP" in out and "nothing to gate" in out
    assert production(family) == 3
    assert len(history(family)) == 1  # nothing judged, nothing recorded


def test_first_release_needs_bootstrap(
    family: GateFamily, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gate(family, "--candidate", "fashion@3") == 2
    assert "no alias 'production' yet" in capsys.readouterr().err
    # Bootstrapping compares with the previous version; 2 -> 3 has no transformation: exit 1.
    assert gate(family, "--candidate", "fashion@3", "--bootstrap", "--promote") == 1
    out = capsys.readouterr().out
    assert "bootstrap: fashion@production does not exist yet" in out
    assert "no transformation path from fashion@2 to fashion@3" in out
    assert production(family) is None
    # The family's first version has nothing to compare with: it becomes production.
    assert gate(family, "--candidate", "fashion@1", "--bootstrap", "--promote") == 0
    assert production(family) == 1
    assert [(r.candidate, r.baseline, r.verdict, r.promoted) for r in history(family)] == [
        (1, None, "pass", True),
        (3, 2, "fail", False),
    ]


def test_exit_status_of_the_real_process(family: GateFamily) -> None:
    set_production(family, 1)
    env = {**os.environ, "MLFLOW_TRACKING_URI": family.uri, "OMP_WAIT_POLICY": "PASSIVE"}
    run = subprocess.run(
        [sys.executable, "-m", "fct_registry", "gate", "--candidate", "fashion@2"],
        cwd=family.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert "verdict: FAIL" in run.stdout
    assert history(family) == []  # without --record/--promote the gate is read-only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidate", "fashion@9"], "unknown version 9 of fashion; known: 1, 2, 3"),
        (["--candidate", "fashion"], "bad version reference 'fashion'"),
        (["--candidate", "shoes@1"], "unknown family 'shoes'; known: fashion"),
        (
            ["--candidate", "fashion@3", "--baseline", "fashion@1", "--promote"],
            "the baseline fashion@1 is not an alias",
        ),
    ],
)
def test_usage_errors_exit_2(
    family: GateFamily, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    set_production(family, 1)
    assert gate(family, *args) == 2
    assert message in capsys.readouterr().err


def test_unreachable_tracking_server_exits_2_with_an_error_report(
    family: GateFamily,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    junit = tmp_path / "gate.xml"
    code = main(
        [
            "gate",
            "--tracking-uri",
            "http://user:secret@127.0.0.1:9",
            "--candidate",
            "fashion@3",
            "--junit",
            str(junit),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot read the registry at http://127.0.0.1:9" in err and "secret" not in err
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite.get("errors") == "1" and suite.get("failures") == "0"


def test_outputs_of_another_run_are_refused(
    family: GateFamily, capsys: pytest.CaptureFixture[str]
) -> None:
    set_production(family, 1)
    client(family).set_model_version_tag(FAMILY, "1", fct_tags.CONTENT_HASH, "0" * 64)
    assert gate(family, "--candidate", "fashion@3") == 2
    assert "comes from another pipeline run" in capsys.readouterr().err


def test_dvc_stage_writes_reports_and_never_promotes(family: GateFamily) -> None:
    from fct_registry.config import load_params
    from fct_registry.gate.stage import JUNIT, REPORT, SUMMARY, gate_dir, gate_stage
    from fct_registry.layout import Layout

    set_production(family, 1)
    layout = Layout(family.outputs)
    params = load_params(family.root / "params.yaml")
    result = gate_stage(params, layout, family.uri)
    assert result.verdict == "pass" and result.candidate == 3 and result.baseline == 1
    out = gate_dir(layout)
    first = {name: (out / name).read_bytes() for name in (REPORT, JUNIT, SUMMARY)}
    # Rerun on the unchanged registry (the stage is always_changed): one more history entry,
    # and the tracked reports are the same bytes (no time or run id in them).
    gate_stage(params, layout, family.uri)
    assert {name: (out / name).read_bytes() for name in first} == first
    entries = history(family)
    assert [(r.candidate, r.baseline, r.verdict, r.promoted) for r in entries] == [
        (3, 1, "pass", False)
    ] * 2
    assert entries[0].at > entries[1].at
    assert gate_tags(family, 3)[fct_tags.GATE_RUN] == entries[0].run_id
    assert all(r.run_id.encode() not in b"".join(first.values()) for r in entries)
    assert json.loads((out / REPORT).read_text())["verdict"] == "pass"
    ElementTree.parse(out / JUNIT)
    assert "✅" in (out / SUMMARY).read_text()
    assert production(family) == 1
    # The verdict reaches the registry: tags and the release row of the candidate's page.
    assert gate_tags(family, 3)[fct_tags.GATE_VERDICT] == "pass"
    page = client(family).get_model_version(FAMILY, "3").description
    assert "release gate" in page and "PASS against @1" in page

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["gate"]
    assert list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])[-1] == "gate"
    assert stage["cmd"] == "python -m pipelines.gate"
    declared = {next(iter(o)) for o in stage["outs"] + stage["metrics"]}
    assert declared == {f"outputs/gate/{name}" for name in (REPORT, JUNIT, SUMMARY)}
    assert {"gate", "evaluation", "family"} <= set(stage["params"])
    assert (ROOT / "pipelines/gate.py").is_file()


def test_record_only_tags_and_a_raced_promotion_is_refused(family: GateFamily) -> None:
    from fct_registry.config import load_params
    from fct_registry.gate import GateError, record_and_promote, run_gate
    from fct_registry.layout import Layout

    set_production(family, 1)
    rules = load_params(family.root / "params.yaml").gate.rules
    result = run_gate(
        "fashion@3",
        "fashion@production",
        rules,
        layout=Layout(family.outputs),
        tracking_uri=family.uri,
    )
    assert result.verdict == "pass"
    outcome = record_and_promote(result, promote=False, tracking_uri=family.uri)
    assert outcome["tagged"] and not outcome["moved"]
    assert gate_tags(family, 3)[fct_tags.GATE_VERDICT] == "pass" and production(family) == 1

    set_production(family, 2)  # another promotion lands between measuring and promoting
    with pytest.raises(GateError, match="moved to version 2 while the gate compared"):
        record_and_promote(result, promote=True, tracking_uri=family.uri)
    assert production(family) == 2
