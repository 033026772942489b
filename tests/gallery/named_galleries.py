"""Two small labelled galleries whose manifests record different class lists (the query tree
lacks ``Shirt/``), as ``fct embed`` records an ImageFolder tree's, and CMC top-k computed by a
plain loop over class names: the oracle of the label-alignment tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fct_registry.gallery import (
    MANIFEST,
    Gallery,
    GalleryWriter,
    Manifest,
    make_batch,
    open_storage,
)

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
    writer.close()
    if classes is not None:
        with_classes(root, classes)
    return Gallery.open(root)


def with_classes(root: Path, classes: tuple[str, ...]) -> None:
    """Record ``classes`` in a local gallery's manifest, where ``fct embed`` records an
    ImageFolder tree's class folders."""
    manifest = Gallery.open(root).manifest
    source = {"kind": "imagefolder", "uri": str(root), "classes": list(classes)}
    named = Manifest(manifest.family, manifest.shards, {"source": source})
    (root / MANIFEST).write_bytes(named.to_json())


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
