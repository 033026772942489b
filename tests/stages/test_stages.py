"""Stage entry points fail early and clearly on bad input, before any training starts."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from fct_registry.config import parse_params
from fct_registry.layout import Layout
from fct_registry.stages.entry import run_stage
from fct_registry.stages.prepare import prepare_stage
from tests.conftest import ROOT, needs_fashion, tiny_params


def _write(tmp_path, raw: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_missing_dataset_path_fails_in_prepare(tmp_path, capsys):
    raw = tiny_params()
    raw["data"]["root"] = str(tmp_path / "nowhere")
    code = run_stage(
        "prepare",
        lambda p, layout, _: prepare_stage(p, layout),
        ["--params", str(_write(tmp_path, raw)), "--outputs", str(tmp_path / "o")],
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "nowhere does not exist" in err and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "o" / "data" / "train.safetensors").exists()


def test_unknown_backbone_fails_before_training(tmp_path):
    raw = tiny_params()
    raw["versions"]["3"]["backbone"]["name"] = "resnet19"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.prepare",
            "--params",
            str(_write(tmp_path, raw)),
            "--outputs",
            str(tmp_path / "o"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
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
    for script in (
        "prepare",
        "train_side_info",
        "train_version",
        "train_bct",
        "train_transformation",
        "evaluate",
    ):
        proc = subprocess.run(
            [sys.executable, "-m", f"pipelines.{script}", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and "--params" in proc.stdout, script


def test_torchrun_command_single_and_multi_node():
    from fct_registry.config import LauncherConfig
    from fct_registry.stages.entry import torchrun_command

    one = torchrun_command(
        LauncherConfig(kind="torchrun", nproc_per_node=4), "pipelines.x", ["--name", "a"]
    )
    assert one[1:] == [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=4",
        "--nnodes=1",
        "--standalone",
        "-m",
        "pipelines.x",
        "--name",
        "a",
    ]
    many = torchrun_command(
        LauncherConfig(kind="torchrun", nnodes=2, rdzv_endpoint="n0:29400"), "pipelines.x", []
    )
    assert "--rdzv-endpoint=n0:29400" in many and "--standalone" not in many


def test_multi_node_without_rendezvous_is_rejected():
    import pytest

    from fct_registry.errors import ConfigError

    raw = tiny_params()
    raw["launcher"] = {"kind": "torchrun", "nnodes": 2}
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        parse_params(raw)


def test_transformation_stage_under_torchrun(tmp_path):
    """`launcher.kind: torchrun` makes the DVC stage relaunch itself as 2 gloo processes; rank 0
    alone writes the outputs, which load as a working transformation."""
    import torch

    from fct_registry.layout import save_embeddings
    from fct_registry.models.io import load_model

    layout = Layout(tmp_path / "out")
    gen = torch.Generator().manual_seed(0)
    for path, dim in (
        (layout.version_embeddings(1), 128),
        (layout.version_embeddings(2), 128),
        (layout.side_info_embeddings, 128),
    ):
        save_embeddings(path, torch.randn(256, dim, generator=gen), torch.randn(32, dim))
    raw = tiny_params()
    raw["launcher"] = {"kind": "torchrun", "nproc_per_node": 2}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.train_transformation",
            "--name",
            "v1_to_v2",
            "--params",
            str(_write(tmp_path, raw)),
            "--outputs",
            str(layout.root),
        ],
        cwd=ROOT,
        # torchrun keeps its log folder (torchelastic_*) in the temp folder: here, not /tmp.
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("transform v1_to_v2 epoch 2/2") == 1  # only rank 0 reports
    model, spec = load_model(layout.transformation("v1_to_v2"))
    assert spec["from"] == 1 and spec["to"] == 2
    assert model(torch.randn(4, 128), torch.randn(4, 128)).shape == (4, 128)
    assert layout.history("transform-v1_to_v2").read_text().count("\n") == 3  # header + 2 epochs


def test_checkpoint_fingerprint_follows_the_code(tmp_path, monkeypatch):
    """DVC reruns a stage whose code changed; a finished checkpoint must then not resume, or
    the old code's model would come back as the new one's."""
    import types

    from fct_registry.stages.fingerprint import fingerprint

    source = tmp_path / "probe.py"
    source.write_text("X = 1\n")
    module = types.ModuleType("fct_registry._fingerprint_probe")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    data = tmp_path / "input.bin"
    data.write_bytes(b"images")
    first = fingerprint({"epochs": 3}, 0, [data])
    assert fingerprint({"epochs": 3}, 0, [data]) == first  # nothing changed: resumes
    source.write_text("X = 2\n")
    assert fingerprint({"epochs": 3}, 0, [data]) != first  # an edited stage module
    source.write_text("X = 1\n")
    assert fingerprint({"epochs": 4}, 0, [data]) != first  # the config
    data.write_bytes(b"other images")
    assert fingerprint({"epochs": 3}, 0, [data]) != first  # an input
