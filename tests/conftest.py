from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The DVC projects tests create in temporary folders lack the repository's `analytics = false`:
# DVC's analytics daemon would then try the network and leave its report in /tmp.
os.environ["DVC_NO_ANALYTICS"] = "1"


def tiny_params(raw: dict | None = None, *, train: int = 600, test: int = 300) -> dict:
    """The project's params.yaml shrunk to a few batches per stage (same structure)."""
    p = copy.deepcopy(raw or yaml.safe_load((ROOT / "params.yaml").read_text()))
    p["data"].update(max_train=train, max_test=test)

    def shrink(optim: dict) -> None:
        optim.update(epochs=2, max_batches=3, batch_size=64)

    shrink(p["side_info"]["optim"])
    p["side_info"]["backbone"]["kwargs"] = {"width": 4}
    for v in p["versions"].values():
        shrink(v["optim"])
        v["backbone"] = {"name": "smallcnn", "kwargs": {"width": 4}}
    for t in p["transformations"].values():
        shrink(t["optim"])
        t["hidden_dim"] = 32
    b = p.get("backfill")
    if b and b.get("enabled", True):
        b.update(seeds=[0], steps=4, queries=min(100, test - 1), random_orders=2)
        b.setdefault("transformation", {}).update(hidden_dim=32)
        shrink(b["transformation"].setdefault("optim", {}))
    return p


@pytest.fixture
def default_raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="dataset-fashion-mnist not installed (run `make setup`)"
)
