"""Stage entry points fail early and clearly on bad input, before any training starts."""

from __future__ import annotations

import subprocess
import sys

import yaml

from fct_registry.config import parse_params
from fct_registry.pipeline.entry import run_stage
from fct_registry.pipeline.layout import Layout
from fct_registry.pipeline.stages import prepare_stage
from tests.conftest import ROOT, needs_fashion, tiny_params


def _write(tmp_path, raw: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_missing_dataset_path_fails_in_prepare(tmp_path, capsys):
    raw = tiny_params()
    raw["data"]["root"] = str(tmp_path / "nowhere")
    code = run_stage("prepare", lambda p, layout, _: prepare_stage(p, layout),
                     ["--params", str(_write(tmp_path, raw)), "--outputs", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "nowhere does not exist" in err and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "o" / "data" / "train.safetensors").exists()


def test_unknown_backbone_fails_before_training(tmp_path):
    raw = tiny_params()
    raw["versions"]["3"]["backbone"]["name"] = "resnet19"
    proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--params",
                           str(_write(tmp_path, raw)), "--outputs", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "versions.3.backbone.name: unknown backbone 'resnet19'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@needs_fashion
def test_class_outside_dataset_is_rejected(tmp_path):
    import pytest

    from fct_registry.errors import ConfigError

    raw = tiny_params()
    raw["versions"]["1"]["classes"] = [0, 1, 12]
    with pytest.raises(ConfigError, match=r"versions.1.classes has \[12\].*classes 0..9"):
        prepare_stage(parse_params(raw), Layout(tmp_path))


def test_stage_help_works():
    for script in ("prepare", "train_side_info", "train_version", "train_bct",
                   "train_transformation", "evaluate"):
        proc = subprocess.run([sys.executable, "-m", f"pipelines.{script}", "--help"], cwd=ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "--params" in proc.stdout, script
