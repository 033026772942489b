"""The issue end to end: two ImageFolder trees, the query tree without a ``Shirt/`` folder, each
indexed with ``fct embed`` by a registered version, the gallery upgraded with ``fct upgrade``,
then ``fct search``. Its top-1/top-5 must be the ones counted by class *name* (a plain loop over
the folders each id names), not by the shifted folder indices; bare ids against a named gallery
are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fct_registry.cli import main
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from tests.data.images import encode, fashion_images
from tests.upgrade.conftest import TinyRegistry, registry, tiny_registry  # noqa: F401

pytestmark = pytest.mark.slow  # builds a small MLflow registry once (~30 s)

CLASSES = {4: "Coat", 5: "Sandal", 6: "Shirt", 7: "Sneaker"}  # Fashion-MNIST ids -> folders


def _tree(root: Path, images: np.ndarray, labels: np.ndarray, skip: str | None = None) -> None:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = CLASSES.get(int(label))
        if name is None or name == skip:
            continue
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / f"img-{i:04d}.png").write_bytes(encode(image))


def _embed(reg: TinyRegistry, version: int, images: Path, out: Path) -> None:
    argv = ["embed", "--model", f"tiny@{version}", "--images", str(images), "--out", str(out)]
    argv += ["--batch-size", "16", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--tracking-uri", reg.uri]) == 0


def _rows(location: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = pa.Table.from_batches(list(Gallery.open(location).batches())).combine_chunks()
    batch = table.to_batches()[0]
    labels = batch.column(gallery_schema.LABEL).to_numpy()
    return (
        batch.column(gallery_schema.ID).to_pylist(),
        gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t"),
        labels,
    )


def _cmc(q_emb: np.ndarray, q_key: list, g_emb: np.ndarray, g_key: list) -> dict[str, float]:
    """CMC top-1/top-5 by a plain loop: a hit is a gallery row with the query's key; queries
    whose key no gallery row has are skipped (as `fct search` and `fct evaluate` count)."""
    hits, counted = {1: 0, 5: 0}, 0
    for q, key in zip(q_emb.astype(np.float64), q_key, strict=True):
        if key not in g_key:
            continue
        counted += 1
        dist = [float(np.sqrt(((q - g) ** 2).sum())) for g in g_emb]
        ranked = [g_key[j] for _, j in sorted(zip(dist, range(len(dist)), strict=True))]
        for k in hits:
            hits[k] += key in ranked[:k]
    return {"top1": 100 * hits[1] / counted, "top5": 100 * hits[5] / counted, "queries": counted}


def test_search_with_a_query_folder_missing_a_class(
    registry: TinyRegistry,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, labels = fashion_images(400)
    _tree(tmp_path / "gallery", images[:250], labels[:250])
    _tree(tmp_path / "queries", images[250:], labels[250:], skip="Shirt")
    _embed(registry, 1, tmp_path / "gallery", tmp_path / "g1")
    upgrade = ["upgrade", "--gallery", str(tmp_path / "g1"), "--to", "tiny@2"]
    upgrade += ["--out", str(tmp_path / "g1-to-2"), "--tracking-uri", registry.uri, "--no-progress"]
    assert main(upgrade) == 0
    _embed(registry, 2, tmp_path / "queries", tmp_path / "q2")
    gallery_names = tuple(sorted({p.name for p in (tmp_path / "gallery").iterdir()}))
    query_names = tuple(sorted({p.name for p in (tmp_path / "queries").iterdir()}))
    assert "Shirt" in gallery_names and "Shirt" not in query_names
    capsys.readouterr()

    search = ["search", "--gallery", str(tmp_path / "g1-to-2"), "-k", "5", "--json"]
    assert main([*search, "--query-gallery", str(tmp_path / "q2")]) == 0
    got = json.loads(capsys.readouterr().out)["accuracy"]
    q_ids, q_emb, q_labels = _rows(tmp_path / "q2")
    g_ids, g_emb, g_labels = _rows(tmp_path / "g1-to-2")
    by_name = _cmc(q_emb, [i.split("/")[0] for i in q_ids], g_emb, [i.split("/")[0] for i in g_ids])
    assert got == pytest.approx(by_name, abs=1e-9)
    # the test can tell: comparing the shifted folder indices gives other numbers
    by_index = _cmc(q_emb, q_labels.tolist(), g_emb, g_labels.tolist())
    assert (by_index["top1"], by_index["top5"]) != (by_name["top1"], by_name["top5"])
    assert Gallery.open(tmp_path / "g1-to-2").manifest.classes == gallery_names  # via upgrade
    assert Gallery.open(tmp_path / "q2").manifest.classes == query_names

    # queries whose labels are bare folder indices cannot be matched to the gallery's names
    np.save(tmp_path / "q.npy", q_emb)
    np.save(tmp_path / "q-ids.npy", q_labels)
    bare = ["--query", str(tmp_path / "q.npy"), "--query-version", "2"]
    assert main([*search, *bare, "--query-labels", str(tmp_path / "q-ids.npy")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ids only: --query-labels" in captured.err and "'Shirt'" in captured.err
