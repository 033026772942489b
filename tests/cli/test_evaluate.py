"""``fct evaluate`` end to end through ``fct_registry.cli.main`` with temporary .npy files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.cli import main
from fct_registry.evaluation.retrieval import retrieval_scores


@pytest.fixture
def npy(tmp_path: Path) -> dict[str, Path]:
    """Clustered query/gallery embeddings and labels saved as .npy files."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    q_labels, g_labels = rng.integers(3, size=20), rng.integers(3, size=30)
    arrays = {
        "query": (centers[q_labels] + rng.normal(size=(20, 8))).astype(np.float32),
        "gallery": (centers[g_labels] + rng.normal(size=(30, 8))).astype(np.float32),
        "query_labels": q_labels,
        "gallery_labels": g_labels,
    }
    paths = {}
    for name, array in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    return paths


def _args(paths: dict[str, Path], *names: str) -> list[str]:
    return [arg for n in names for arg in (f"--{n.replace('_', '-')}", str(paths[n]))]


ALL = ("query", "gallery", "query_labels", "gallery_labels")


def _expected(paths: dict[str, Path], **kwargs: object) -> dict[str, float]:
    q, g, ql, gl = (torch.from_numpy(np.load(paths[n])) for n in ALL)
    return retrieval_scores(q, g, ql, gl, **kwargs).as_dict()  # type: ignore[arg-type]


def test_json_output(npy: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *_args(npy, *ALL), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["top1", "top5", "mAP"]
    assert out == pytest.approx(_expected(npy))


def test_cosine_distance(npy: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *_args(npy, *ALL), "--distance", "cosine", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(_expected(npy, distance="cosine"))


def test_table_output(npy: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *_args(npy, *ALL)]) == 0
    out = capsys.readouterr().out
    assert "20 queries vs 30 gallery items, distance l2" in out
    expected = _expected(npy)
    for name in ("top1", "top5", "mAP"):
        assert f"{name:<8}{expected[name]:>9.2f}" in out


def test_leave_one_out_without_gallery(
    npy: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["evaluate", *_args(npy, "query", "query_labels"), "--leave-one-out", "--json"]) == 0
    )
    q, ql = torch.from_numpy(np.load(npy["query"])), torch.from_numpy(np.load(npy["query_labels"]))
    expected = retrieval_scores(q, q, ql, ql, leave_one_out=True).as_dict()
    assert json.loads(capsys.readouterr().out) == pytest.approx(expected)


def test_string_labels_are_matched_across_files(
    npy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = np.array(["cat", "dog", "eel"])
    for key in ("query_labels", "gallery_labels"):
        np.save(tmp_path / f"{key}_str.npy", names[np.load(npy[key])])
    strings = {**npy, **{k: tmp_path / f"{k}_str.npy" for k in ("query_labels", "gallery_labels")}}
    assert main(["evaluate", *_args(strings, *ALL), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(_expected(npy))


def test_missing_file_is_an_error_naming_the_path(
    npy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.npy"
    argv = ["evaluate", *_args(npy, "query", "query_labels", "gallery_labels")]
    assert main([*argv, "--gallery", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: --gallery file ")
    assert str(missing) in captured.err


def test_gallery_required_without_leave_one_out(
    npy: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", *_args(npy, "query", "query_labels")]) == 2
    assert "--gallery and --gallery-labels are required unless --leave-one-out" in (
        capsys.readouterr().err
    )


def test_dimension_mismatch_is_reported(
    npy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "wide.npy", np.zeros((30, 16), dtype=np.float32))
    argv = ["evaluate", *_args(npy, "query", "query_labels", "gallery_labels")]
    assert main([*argv, "--gallery", str(tmp_path / "wide.npy")]) == 2
    assert "query embeddings are 8-d but gallery embeddings are 16-d" in capsys.readouterr().err


def test_unknown_distance_lists_known_ones(
    npy: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", *_args(npy, *ALL), "--distance", "manhattan"]) == 2
    assert "unknown distance 'manhattan'; known: cosine, l2" in capsys.readouterr().err


def test_pickled_file_is_refused(
    npy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    argv = ["evaluate", *_args(npy, "query", "gallery", "gallery_labels")]
    assert main([*argv, "--query-labels", str(tmp_path / "objects.npy")]) == 2
    assert "is not a readable .npy array" in capsys.readouterr().err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--leave-one-out" in out
    assert "fct evaluate --query" in out
