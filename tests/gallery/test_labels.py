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
from fct_registry.gallery import (
    MANIFEST,
    Gallery,
    GalleryWriter,
    Manifest,
    make_batch,
    open_storage,
)
from fct_registry.gallery.search import search, topk_accuracy

GALLERY_CLASSES = ("Coat", "Shirt", "Sneaker")
QUERY_CLASSES = ("Coat", "Sneaker")  # the query tree has no Shirt/ folder
DIM = 8


def write_named(
    root: Path, emb: np.ndarray, labels: np.ndarray, classes: tuple[str, ...] | None, prefix: str
) -> Gallery:
    """A gallery whose manifest records ``classes`` where ``fct embed`` records them."""
    writer = GalleryWriter(open_storage(root), "tiny", shard_rows=40)
    writer.write(
        make_batch([f"{prefix}{i}" for i in range(len(emb))], emb, model_version=1, labels=labels)
    )
    manifest = writer.close()
    if classes is not None:
        source = {"kind": "imagefolder", "uri": str(root), "classes": list(classes)}
        named = Manifest(manifest.family, manifest.shards, {"source": source})
        (root / MANIFEST).write_bytes(named.to_json())
    return Gallery.open(root)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Items cluster by class *name*: the same name has the same centre on both sides."""
    rng = np.random.default_rng(0)
    centre = {name: rng.normal(size=DIM) * 2.0 for name in GALLERY_CLASSES}
    g_labels = rng.integers(0, len(GALLERY_CLASSES), 90)
    q_labels = rng.integers(0, len(QUERY_CLASSES), 40)

    def embed(labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
        points = np.stack([centre[classes[i]] for i in labels])
        return (points + rng.normal(size=points.shape)).astype(np.float32)

    root = tmp_path_factory.mktemp("labels")
    g_emb, q_emb = embed(g_labels, GALLERY_CLASSES), embed(q_labels, QUERY_CLASSES)
    return {
        "root": root,
        "gallery": write_named(root / "g", g_emb, g_labels, GALLERY_CLASSES, "g"),
        "queries": write_named(root / "q", q_emb, q_labels, QUERY_CLASSES, "q"),
        "g_emb": g_emb,
        "q_emb": q_emb,
        "g_labels": g_labels,
        "q_labels": q_labels,
    }


def naive_topk(pair: dict, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """CMC top-k by names, one query at a time: skip queries whose class the gallery lacks."""
    g_names = [GALLERY_CLASSES[i] for i in pair["g_labels"]]
    hits = {k: 0 for k in ks}
    counted = 0
    for q, label in zip(pair["q_emb"], pair["q_labels"], strict=True):
        name = QUERY_CLASSES[label]
        if name not in g_names:
            continue
        counted += 1
        dist = [float(np.sqrt(((q.astype(np.float64) - g) ** 2).sum())) for g in pair["g_emb"]]
        ranked = [g_names[j] for _, j in sorted(zip(dist, range(len(dist)), strict=True))]
        for k in ks:
            hits[k] += name in ranked[:k]
    return {**{f"top{k}": 100.0 * hits[k] / counted for k in ks}, "queries": float(counted)}


def test_manifest_reads_the_recorded_class_names(pair: dict) -> None:
    assert pair["gallery"].manifest.classes == GALLERY_CLASSES
    assert pair["queries"].manifest.classes == QUERY_CLASSES


def test_topk_accuracy_compares_class_names_not_ids(pair: dict) -> None:
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
    pair: dict, capsys: pytest.CaptureFixture[str]
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
    pair: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    assert "name their classes but --query-labels" in err and "record only class ids" in err
    assert "['Coat', 'Shirt', 'Sneaker']" in err and "save .npy labels as class-name strings" in err


def test_a_gallery_without_names_and_named_queries_are_refused(
    pair: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = write_named(tmp_path / "bare", pair["g_emb"], pair["g_labels"], None, "g")
    assert bare.manifest.classes is None
    result = search(bare, pair["q_emb"], k=1)
    with pytest.raises(DataError, match=r"the queries name their classes but the gallery record"):
        topk_accuracy(result, pair["q_labels"], query_classes=QUERY_CLASSES)
    argv = ["search", "--gallery", str(tmp_path / "bare"), "--query-gallery"]
    assert main([*argv, str(pair["root"] / "q")]) == 2
    err = capsys.readouterr().err
    assert str(pair["root"] / "q") in err and "['Coat', 'Sneaker']" in err
    # ids on both sides and no names: compared as ids, as before
    assert topk_accuracy(result, pair["g_labels"][: len(pair["q_emb"])])["queries"] > 0


def test_a_label_past_the_class_list_is_refused(pair: dict, tmp_path: Path) -> None:
    short = write_named(tmp_path / "s", pair["g_emb"], pair["g_labels"], ("Coat", "Shirt"), "g")
    result = search(short, pair["q_emb"], k=1)
    with pytest.raises(DataError, match=r"the gallery hold class id 2 but name only 2 classes"):
        topk_accuracy(result, pair["q_labels"], query_classes=QUERY_CLASSES)


def test_a_malformed_class_list_is_named(pair: dict, tmp_path: Path) -> None:
    gallery = write_named(tmp_path / "m", pair["g_emb"][:3], pair["g_labels"][:3], None, "g")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    manifest["provenance"] = {"source": {"classes": "Coat,Shirt"}}
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"provenance.source.classes is not a list of class names"):
        _ = Gallery.open(tmp_path / "m").manifest.classes
    assert gallery.manifest.classes is None
