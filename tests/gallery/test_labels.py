"""Searching a gallery whose class list differs from the queries': labels are compared by name.

The issue: the query folder had no ``Shirt/``, so its class ids (sorted folder names) shifted,
and ``fct search`` compared them with the gallery's ids, reporting a wrong top-1 with no warning.
Here both sides are small synthetic galleries whose manifests record their class names, as
``fct embed`` records an ImageFolder tree's; the expected numbers come from a plain loop over
names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fct_registry.cli import main
from fct_registry.errors import DataError
from fct_registry.gallery import Gallery
from fct_registry.gallery.search import search, topk_accuracy
from tests.gallery.named_galleries import (
    GALLERY_CLASSES,
    QUERY_CLASSES,
    naive_topk,
    pair,  # noqa: F401  (module fixture)
    write_named,
)


def test_manifest_reads_the_recorded_class_names(
    pair: dict,  # noqa: F811  (the imported fixture)
) -> None:
    assert pair["gallery"].manifest.classes == GALLERY_CLASSES
    assert pair["queries"].manifest.classes == QUERY_CLASSES


def test_topk_accuracy_compares_class_names_not_ids(
    pair: dict,  # noqa: F811  (the imported fixture)
) -> None:
    result = search(pair["gallery"], pair["q_emb"], k=5)
    assert result.gallery_classes == GALLERY_CLASSES
    got = topk_accuracy(result, pair["q_labels"], query_classes=QUERY_CLASSES)
    want = naive_topk(pair)
    assert got == pytest.approx(want, abs=1e-9)
    assert want["top1"] > 90  # Sneaker queries find Sneaker items, not Shirt ones
    # the numbers the old id comparison gave (Sneaker = id 1 = Shirt) are far from these
    raw = np.mean(result.labels[:, 0] == pair["q_labels"]) * 100
    assert raw < want["top1"] - 20


def test_fct_search_aligns_a_query_folder_missing_a_class(
    pair: dict,  # noqa: F811  (the imported fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    g, q = pair["root"] / "g", pair["root"] / "q"
    assert main(["search", "--gallery", str(g), "--query-gallery", str(q), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == pytest.approx(naive_topk(pair), abs=1e-9)
    assert out["classes"] == list(GALLERY_CLASSES)  # what the result labels index
    assert main(["search", "--gallery", str(g), "--query-gallery", str(q), "--show", "1"]) == 0
    text = capsys.readouterr().out
    assert f"[label {QUERY_CLASSES[pair['q_labels'][0]]}]" in text  # names, not shifted ids


def test_npy_query_labels_as_names_are_aligned_and_bare_ids_refused(
    pair: dict,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    np.save(tmp_path / "q.npy", pair["q_emb"])
    np.save(tmp_path / "names.npy", np.array(QUERY_CLASSES)[pair["q_labels"]])
    np.save(tmp_path / "ids.npy", pair["q_labels"])
    base = ["search", "--gallery", str(pair["root"] / "g"), "--query", str(tmp_path / "q.npy")]
    base += ["--query-version", "1", "--json", "--query-labels"]
    assert main([*base, str(tmp_path / "names.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(naive_topk(pair))
    assert main([*base, str(tmp_path / "ids.npy")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "class names on one side only (names: " in err and "ids only: --query-labels" in err
    assert "['Coat', 'Shirt', 'Sneaker']" in err and "save .npy labels as class-name strings" in err


def test_a_gallery_without_names_and_named_queries_are_refused(
    pair: dict,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bare = write_named(tmp_path / "bare", pair["g_emb"], pair["g_labels"], None, "g")
    assert bare.manifest.classes is None
    result = search(bare, pair["q_emb"], k=1)
    with pytest.raises(DataError, match=r"names: the queries; ids only: the gallery"):
        topk_accuracy(result, pair["q_labels"], query_classes=QUERY_CLASSES)
    argv = ["search", "--gallery", str(tmp_path / "bare"), "--query-gallery"]
    assert main([*argv, str(pair["root"] / "q")]) == 2
    err = capsys.readouterr().err
    assert str(pair["root"] / "q") in err and "['Coat', 'Sneaker']" in err
    # ids on both sides and no names: compared as ids, as before
    assert topk_accuracy(result, pair["g_labels"][: len(pair["q_emb"])])["queries"] > 0


def test_a_label_past_the_class_list_is_refused(
    pair: dict,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    short = write_named(tmp_path / "s", pair["g_emb"], pair["g_labels"], ("Coat", "Shirt"), "g")
    result = search(short, pair["q_emb"], k=1)
    with pytest.raises(
        DataError, match=r"class id 2 of the gallery has no name: its class list has 2"
    ):
        topk_accuracy(result, pair["q_labels"], query_classes=QUERY_CLASSES)


def test_a_malformed_class_list_is_named(
    pair: dict,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    gallery = write_named(tmp_path / "m", pair["g_emb"][:3], pair["g_labels"][:3], None, "g")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    manifest["provenance"] = {"source": {"classes": "Coat,Shirt"}}
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"provenance.source.classes is not a list of class names"):
        _ = Gallery.open(tmp_path / "m").manifest.classes
    assert gallery.manifest.classes is None
