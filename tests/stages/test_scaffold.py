"""``fct init``: a validated params.yaml from model URIs or embedding tables (stages/scaffold)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fct_registry.cli import main
from fct_registry.config import load_params
from fct_registry.stages.scaffold import edges, source_for
from tests.conftest import ROOT
from tests.stages.test_embeddings_only import write_tables


@pytest.mark.parametrize(
    ("text", "kind", "spec"),
    [
        ("models:/prod/4", "mlflow", {"uri": "models:/prod/4"}),
        ("models:/prod@champion", "mlflow", {"uri": "models:/prod@champion"}),
        ("runs:/abc123/model", "mlflow", {"uri": "runs:/abc123/model"}),
        ("./new.onnx", "onnx", {"path": "./new.onnx"}),
        ("s3://bucket/m.ONNX", "onnx", {"path": "s3://bucket/m.ONNX"}),
        ("model.pt", "torchscript", {"path": "model.pt"}),
        ("m.torchscript", "torchscript", {"path": "m.torchscript"}),
        ("pkg.models:build", "entrypoint", {"factory": "pkg.models:build"}),
        (
            "pkg.mod:fn,weights.bin",
            "entrypoint",
            {"factory": "pkg.mod:fn", "weights": "weights.bin"},
        ),
        (
            "a-train.parquet,a-test.safetensors",
            "embeddings",
            {"train": "a-train.parquet", "test": "a-test.safetensors"},
        ),
    ],
)
def test_source_kind_by_syntax(text: str, kind: str, spec: dict) -> None:
    given = source_for(text, "--version 1", read_widths=False)
    assert given.source == {kind: spec} and given.kind == kind


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just-a-name", "cannot tell what 'just-a-name' is"),
        ("only-train.parquet", "come as a pair TRAIN,TEST"),
        ("a.parquet,b.parquet,c.parquet", "come as a pair TRAIN,TEST"),
    ],
)
def test_unknown_syntax_is_refused_with_the_forms(text: str, message: str) -> None:
    from fct_registry.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        source_for(text, "--version 1", read_widths=False)


def test_edges_pair_consecutive_versions_and_first_to_last() -> None:
    assert edges([1, 2], "first") == [
        ("v1_to_v2", 1, 2, "fct"),
        ("v1_to_v2_no_side_info", 1, 2, "fct-no-side-info"),
    ]
    names = [e[0] for e in edges([1, 3, 4], "first")]
    assert names == [
        "v1_to_v3",
        "v1_to_v3_no_side_info",
        "v3_to_v4",
        "v1_to_v4",
        "v1_to_v4_no_side_info",
    ]
    assert [e[0] for e in edges([1, 2, 3], "none")] == ["v1_to_v2", "v2_to_v3", "v1_to_v3"]
    assert len(edges([1, 2, 3], "all")) == 6


def _tables(root: Path) -> dict[str, str]:
    raw = write_tables(root / "tables", train=60, test=30)
    pair = {
        key: ",".join(cfg["source"]["embeddings"][s] for s in ("train", "test"))
        for key, cfg in [
            ("side", raw["side_info"]),
            *((f"v{k}", v) for k, v in raw["versions"].items()),
        ]
    }
    return pair


def test_init_from_embedding_tables_writes_params_the_pipeline_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = _tables(tmp_path)
    out = tmp_path / "params.yaml"
    args = ["init", "--family", "sentences", "--version", f"1={t['v1']}"]
    args += ["--version", f"2={t['v2']}", "--side-info", t["side"], "--out", str(out)]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("# fct-registry pipeline parameters, written by:\n#   fct init")
    assert "&id" not in text  # no YAML anchors: each entry stands on its own
    params = load_params(out)
    assert params.family == "sentences" and params.embeddings_only
    assert params.versions[1].embedding_dim == 16 and params.versions[2].embedding_dim == 32
    assert params.side_info.dim == 12  # widths read from the tables
    assert set(params.transformations) == {"v1_to_v2", "v1_to_v2_no_side_info"}
    assert params.transformations["v1_to_v2_no_side_info"].kind == "fct-no-side-info"
    # The pipeline's first stage accepts it as written (tables read and aligned).
    prepare = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.prepare",
            "--params",
            str(out),
            "--outputs",
            str(tmp_path / "outputs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prepare.returncode == 0, prepare.stderr
    assert (tmp_path / "outputs" / "data" / "info.json").exists()


def test_init_keeps_an_existing_file_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = _tables(tmp_path)
    out = tmp_path / "params.yaml"
    out.write_text("mine\n")
    args = ["init", "--family", "f", "--version", f"1={t['v1']}", "--version", f"2={t['v2']}"]
    args += ["--side-info", t["side"], "--out", str(out)]
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "mine\n"
    assert main([*args, "--force"]) == 0
    assert load_params(out).family == "f"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--version", "1=models:/x/1"], "give at least two --version"),
        (["--version", "one=a.onnx", "--version", "2=b.onnx"], "write N=SOURCE with N >= 1"),
        (["--version", "1=a.onnx", "--version", "1=b.onnx"], "--version 1 is given twice"),
        (["--version", "1=train", "--version", "2=train"], "give --data"),
        (["--version", "1=train", "--version", "2=train", "--data", "nope"], "--data 'nope'"),
        (
            ["--version", "1=train", "--version", "2=train", "--data", "x:/d", "--dim", "2=a"],
            "--dim '2=a': write N=WIDTH",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "params.yaml"
    assert main(["init", "--family", "f", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_tables_mixed_with_a_trained_side_info_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = _tables(tmp_path)
    args = ["init", "--family", "f", "--version", f"1={t['v1']}", "--version", f"2={t['v2']}"]
    assert main([*args, "--data", "imagefolder:/d", "--out", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "--side-info is not embedding tables while others are" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "p.yaml").exists()


def test_trained_versions_from_images(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    args = ["init", "--family", "shop", "--version", "1=train", "--version", "2=train"]
    assert (
        main([*args, "--dim", "2=64", "--data", "imagefolder:/data/shop/", "--out", str(out)]) == 0
    )
    params = load_params(out)
    assert params.data.source.train == "/data/shop/train"
    assert params.versions[2].embedding_dim == 64 and params.versions[1].source is None


def test_model_sources(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    args = ["init", "--family", "shop", "--version", "1=models:/prod/4"]
    args += ["--version", "2=./new.onnx", "--version", "3=ts.pt", "--version", "4=pkg.m:fn,w.pt"]
    args += ["--dim", "1=256", "--dim", "2=512", "--dim", "3=512", "--dim", "4=512"]
    args += ["--side-info", "train", "--data", "imagefolder:/data/shop", "--out", str(out)]
    pp = "{resize: 256, crop: 224, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}"
    assert main(args) == 2  # ONNX, TorchScript and entry points record no preprocessing
    for n in (2, 3, 4):
        args += ["--preprocess", f"{n}={pp}"]
    assert main(args) == 0
    params = load_params(out)
    kinds = {n: v.source.kind for n, v in params.versions.items()}
    assert kinds == {1: "mlflow", 2: "onnx", 3: "torchscript", 4: "entrypoint"}
    assert params.versions[1].embedding_dim == 256
    assert params.versions[1].preprocess is None and params.versions[2].preprocess.crop == 224
    assert yaml.safe_load(out.read_text())["versions"]["4"]["source"] == {
        "entrypoint": {"factory": "pkg.m:fn", "weights": "w.pt"}
    }
