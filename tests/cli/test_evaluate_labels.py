"""``fct evaluate`` compares labels by class name: string labels are names, matched across the
two files whatever classes each side lacks; names on one side only are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.cli import main
from fct_registry.evaluation.retrieval import retrieval_scores

GALLERY = np.array(["Coat", "Shirt", "Sneaker"])
QUERY = np.array(["Coat", "Sneaker"])  # no Shirt: sorted unique names give Sneaker id 1


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    centre = {name: rng.normal(size=6) * 2 for name in GALLERY}
    g_names = GALLERY[rng.integers(0, 3, 40)]
    q_names = QUERY[rng.integers(0, 2, 15)]
    arrays = {
        "query": np.stack([centre[n] for n in q_names]) + rng.normal(size=(15, 6)),
        "gallery": np.stack([centre[n] for n in g_names]) + rng.normal(size=(40, 6)),
        "query_labels": q_names,
        "gallery_labels": g_names,
        "query_ids": np.searchsorted(QUERY, q_names),  # each file's own sorted-name ids
    }
    out = {}
    for key, array in arrays.items():
        out[key] = tmp_path / f"{key}.npy"
        np.save(out[key], array.astype(np.float32) if array.dtype.kind == "f" else array)
    return out


def _argv(files: dict[str, Path], query_labels: str = "query_labels") -> list[str]:
    return [
        "evaluate",
        *("--query", str(files["query"]), "--gallery", str(files["gallery"])),
        *("--query-labels", str(files[query_labels])),
        *("--gallery-labels", str(files["gallery_labels"]), "--json"),
    ]


def test_names_missing_on_one_side_are_matched_by_name(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(files)) == 0
    got = json.loads(capsys.readouterr().out)
    q_names, g_names = np.load(files["query_labels"]), np.load(files["gallery_labels"])
    same = {n: i for i, n in enumerate(GALLERY)}  # one id per name, by a plain loop
    want = retrieval_scores(
        torch.from_numpy(np.load(files["query"])),
        torch.from_numpy(np.load(files["gallery"])),
        torch.tensor([same[str(n)] for n in q_names]),
        torch.tensor([same[str(n)] for n in g_names]),
    ).as_dict()
    assert got == pytest.approx(want)


def test_ids_against_names_are_refused_naming_both_lists(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(files, "query_ids")) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and "\n" not in err
    assert "names: --gallery-labels; ids only: --query-labels" in err
    assert "['Coat', 'Shirt', 'Sneaker']" in err and "class-name strings" in err
