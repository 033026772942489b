"""The operator's path end to end, through the CLI: a folder of PNG files -> ``fct embed`` ->
``fct upgrade`` -> ``fct backfill plan`` -> ``fct backfill run``, which re-embeds the planned rows
from the files their ``source_uri`` names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.cli import main
from fct_registry.data.decode import ImageTransform
from fct_registry.data.image_sources import open_source
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from fct_registry.training.embed import embed_images
from tests.data.images import write_imagefolder
from tests.upgrade.conftest import TinyRegistry, registry, snapshot, tiny_registry  # noqa: F401

pytestmark = pytest.mark.slow  # builds a small MLflow registry once (~30 s)


def _rows(root: Path) -> dict[str, tuple]:
    out = {}
    for batch in Gallery.open(str(root)).batches():
        emb = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t")
        cols = batch.to_pydict()
        for k, item in enumerate(cols[gallery_schema.ID]):
            out[item] = (
                emb[k],
                cols.get(gallery_schema.BACKFILLED, [None] * len(emb))[k],
                cols[gallery_schema.SOURCE_URI][k],
            )
    return out


def test_folder_embed_upgrade_plan_run(
    registry: TinyRegistry,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    tree = tmp_path / "tree"
    write_imagefolder(tree, 40, fmt="PNG")
    uri = ["--tracking-uri", registry.uri]
    g1, g2, plan = tmp_path / "g1", tmp_path / "g2", tmp_path / "plan.json"
    assert main(["embed", "--model", "tiny@1", "--images", str(tree), "--out", str(g1),
                 "--shard-rows", "16", "--batch-size", "8", "--workers", "0", "--device", "cpu",
                 "--no-progress", *uri]) == 0  # fmt: skip
    assert main(["upgrade", "--gallery", str(g1), "--to", "tiny@2", "--out", str(g2),
                 "--no-progress", *uri]) == 0  # fmt: skip
    upgraded = _rows(g2)
    source = open_source(str(tree))
    transform = ImageTransform.for_input_shape([1, 28, 28])
    items = {item.id: item for item in source.items()}
    ids = list(items)
    new = embed_images(
        registry.models["v2"],
        torch.stack([source.load(items[i], transform) for i in ids]),
        torch.device("cpu"),
    ).numpy()

    # The oracle re-embeds every candidate from its file: largest true error first.
    oracle = tmp_path / "oracle.json"
    assert main(["backfill", "plan", "--gallery", str(g2), "--budget", "5", "--policy",
                 "oracle", "--device", "cpu", "--out", str(oracle), *uri]) == 0  # fmt: skip
    error = {i: float(((upgraded[i][0] - new[k]) ** 2).mean()) for k, i in enumerate(ids)}
    top = sorted(ids, key=lambda i: -error[i])[:5]
    assert [i["id"] for i in json.loads(oracle.read_text())["items"]] == top

    # tiny's transformation predicts no uncertainty: plan a random 25% (10 rows)
    assert main(["backfill", "plan", "--gallery", str(g2), "--budget", "25%", "--policy",
                 "random", "--seed", "4", "--out", str(plan)]) == 0  # fmt: skip
    planned = [i["id"] for i in json.loads(plan.read_text())["items"]]
    assert len(planned) == 10
    capsys.readouterr()
    assert main(["backfill", "run", "--plan", str(plan), "--device", "cpu", "--json", *uri]) == 0
    assert json.loads(capsys.readouterr().out)["planned"] == 10

    # Each file decoded alone as `fct embed` decodes it, embedded by tiny@2.
    expected = new[[ids.index(i) for i in planned]]
    after = _rows(g2)
    assert set(after) == set(upgraded) == set(items)
    for k, item in enumerate(planned):
        emb, backfilled, src = after[item]
        assert backfilled is True and src == str(tree / item)
        np.testing.assert_allclose(emb, expected[k], rtol=1e-5, atol=1e-5)
        assert not np.allclose(emb, upgraded[item][0], atol=1e-3)  # it did change
    for item in set(items) - set(planned):
        assert after[item][1] is False and np.array_equal(after[item][0], upgraded[item][0])

    # Rerunning the finished plan changes nothing.
    before = snapshot(g2)
    assert main(["backfill", "run", "--plan", str(plan), "--device", "cpu", *uri]) == 0
    assert "already applied" in capsys.readouterr().out and snapshot(g2) == before
