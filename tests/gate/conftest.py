"""One tiny real pipeline per session, registered once, holding a weak and a good candidate.

Family ``fashion``: version 1 (classes 0-4) is the baseline; versions 2 and 3 (all classes) are
candidates. ``v1_to_v2`` is trained for one step (a deliberately weak transformation);
``v1_to_v3`` is trained properly. Stages run as library calls (``fct_registry.stages.run_all``),
registration through ``register_pipeline``, into a SQLite store beside the outputs.
:func:`gate_result` builds a verdict by hand, for tests of what is recorded (no models needed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fct_registry.gate.rules import CheckResult, verdict
from fct_registry.gate.run import GateResult
from tests.conftest import FASHION, tiny_params

FAMILY = "fashion"


def gate_params() -> dict:
    raw = tiny_params(train=1500, test=400)
    raw["device"] = "cpu"
    raw["bct"] = {}
    good = {"epochs": 40, "batch_size": 100, "lr": 0.003, "weight_decay": 0.0}
    for v in raw["versions"].values():
        v["embedding_dim"] = 32
        v["backbone"]["kwargs"] = {"width": 8}
        v["optim"].update(epochs=8, max_batches=None, batch_size=100, lr=0.003)
    # The baseline is a real upgrade away: half the classes, a few steps of training.
    raw["versions"]["1"]["optim"].update(epochs=1, max_batches=3)
    raw["versions"]["2"]["classes"] = None
    raw["versions"]["3"]["optim"]["lr"] = 0.004  # another model than 2 (registered apart)
    raw["transformations"] = {
        "v1_to_v2": {
            "from": 1,
            "to": 2,
            "kind": "fct",
            "hidden_dim": 64,
            "optim": {"epochs": 1, "max_batches": 1, "batch_size": 64, "lr": 0.001},
        },
        "v1_to_v3": {"from": 1, "to": 3, "kind": "fct", "hidden_dim": 64, "optim": good},
    }
    return raw


@dataclass(frozen=True)
class GateFamily:
    root: Path  # params.yaml, outputs/, mlflow.db, mlartifacts/
    uri: str

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def copy_to(self, dst: Path) -> GateFamily:
        """An independent copy (store and artifacts), for tests that change the registry."""
        shutil.copytree(self.root, dst)
        db = dst / "mlflow.db"
        return GateFamily(dst, f"sqlite:///{db}")


def build_family(root: Path) -> GateFamily:
    from fct_registry.config import parse_params
    from fct_registry.layout import Layout
    from fct_registry.registry.register import register_pipeline
    from fct_registry.stages.run_all import run_pipeline

    raw = gate_params()
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params, layout = parse_params(raw), Layout(root / "outputs")
    run_pipeline(params, layout)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register_pipeline(params, layout, uri, root=root)
    return GateFamily(root, uri)


@pytest.fixture(scope="session")
def gate_family(tmp_path_factory: pytest.TempPathFactory) -> GateFamily:
    if not FASHION.is_dir():
        pytest.skip("dataset-fashion-mnist not installed (run `make setup`)")
    return build_family(tmp_path_factory.mktemp("gate-family"))


@pytest.fixture
def family(
    gate_family: GateFamily, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GateFamily]:
    """A private copy of the registered family; the working directory is its project root."""
    copy = gate_family.copy_to(tmp_path / "project")
    monkeypatch.chdir(copy.root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield copy


def gate_result(candidate: int, baseline: int | None, upgraded_top1: float) -> GateResult:
    """A verdict as ``run_gate`` returns it: fails when the upgraded gallery loses accuracy."""
    checks = [
        CheckResult("upgrade-path", "a chain exists", "pass", reason=f"{baseline}->{candidate}"),
        CheckResult(
            "upgraded_top1_vs_baseline",
            "upgraded top1 >= 1.00 x baseline top1",
            "pass" if upgraded_top1 >= 70.0 else "fail",
            measured=upgraded_top1,
            bound=70.0,
        ),
        CheckResult("raw_top1", "raw top1 >= 1.00 x baseline top1", "skipped", reason="widths"),
    ]
    return GateResult(
        family=FAMILY,
        candidate=candidate,
        baseline=baseline,
        candidate_ref=f"{FAMILY}@{candidate}",
        baseline_ref=f"{FAMILY}@production",
        verdict=verdict(checks),
        scores={
            "candidate": {"top1": 80.0, "top5": 95.0, "mAP": 60.0},
            "baseline": {"top1": 70.0, "top5": 90.0, "mAP": 50.0},
            "upgraded": {"top1": upgraded_top1, "top5": 91.0, "mAP": float("nan")},
            "raw": None,
        },
        checks=checks,
        upgrade={
            "path": [baseline, candidate],
            "hops": [1],
            "uris": ["models:/fashion-transformations/1"],
            "side_info": None,
            "registry_top1": upgraded_top1,
            "basis": "measured",
            "decision": "only route",
            "gap_closed_top1": 50.0,
            "gap_closed_mAP": float("nan"),
        }
        if baseline
        else None,
        items=300,
        distance="l2",
        tracking_uri=None,
        bootstrap=False,
    )
