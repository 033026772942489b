"""Upgrade a sentence-embedding index from one encoder to another, with no re-embedding.

    python examples/text-upgrade/run.py [--work DIR]

1. builds a small corpus and three encoders (``encoders.py``: old, new, side-info; no downloads),
2. writes each encoder's train/test embeddings as Parquet tables (id, vector, label),
3. runs the pipeline on ``params.yaml`` (prepare, side-info, versions, transformation, evaluate:
   a family given as embedding tables, no images and no models),
4. registers it in a local MLflow store (``sqlite:///DIR/mlflow.db``),
5. writes the old index (the test sentences embedded by the old encoder, with side-info) as a
   gallery, upgrades it to version 2 with ``fct upgrade``, and searches it with new-encoder
   queries (``fct search``), printing top-1 before and after.

Runs in about a minute on two CPU cores. Everything goes under ``--work`` (default
``examples/text-upgrade/work``, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # encoders.py, beside this script

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from encoders import build_encoders, corpus  # noqa: E402

FAMILY = "sentences"
TRAIN, TEST = 3000, 800


def write_table(path: Path, ids: list[str], vectors: np.ndarray, labels: np.ndarray) -> None:
    dim = vectors.shape[1]
    flat = pa.array(vectors.astype(np.float32).reshape(-1))
    pq.write_table(
        pa.table(
            {
                "id": pa.array(ids, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                "label": pa.array(labels, pa.int64()),
            }
        ),
        path,
    )


def embed_corpus(work: Path) -> dict[str, float]:
    """The corpus through the three encoders, as Parquet tables under ``work/tables``."""
    train, train_labels = corpus(TRAIN, seed=0)
    test, test_labels = corpus(TEST, seed=1)
    encoders = build_encoders(train)
    tables = work / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    ids = {
        "train": [f"train-{i:05d}" for i in range(TRAIN)],
        "test": [f"doc-{i:05d}" for i in range(TEST)],
    }
    texts = {"train": train, "test": test}
    labels = {"train": train_labels, "test": test_labels}
    for name, encoder in encoders.items():
        for split in ("train", "test"):
            write_table(
                tables / f"{name}-{split}.parquet",
                ids[split],
                encoder.encode(texts[split]),
                labels[split],
            )
    sentences = dict(zip(ids["test"], test, strict=True))
    (tables / "test-sentences.json").write_text(json.dumps(sentences))
    return {name: encoder.dim for name, encoder in encoders.items()}


def fct(*argv: str) -> dict:
    """One ``fct`` command in this process (as the shell would run it); its JSON output."""
    from contextlib import redirect_stdout
    from io import StringIO

    from fct_registry.cli import main

    out = StringIO()
    with redirect_stdout(out):
        status = main(list(argv))
    if status != 0:
        raise SystemExit(f"fct {' '.join(argv)} exited with {status}")
    text = out.getvalue()
    return json.loads(text) if text.lstrip().startswith("{") else {"output": text}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / "work")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    start = time.perf_counter()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dims = embed_corpus(work)
    shutil.copy(HERE / "params.yaml", work / "params.yaml")
    os.chdir(work)  # params.yaml names the tables relative to here
    print(
        f"embedded {TRAIN} + {TEST} sentences: old {dims['old']}-d, new {dims['new']}-d, "
        f"side-info {dims['side']}-d"
    )

    from fct_registry.layout import Layout
    from fct_registry.registry.register import register_pipeline
    from fct_registry.stages.params import load_checked_params
    from fct_registry.stages.run_all import run_pipeline

    params = load_checked_params("params.yaml")
    layout = Layout(Path("outputs"))
    report = run_pipeline(params, layout)  # what `dvc repro` runs, stage by stage
    uri = f"sqlite:///{work / 'mlflow.db'}"
    register_pipeline(params, layout, uri, root=work)
    edge = report["transformations"]["v1_to_v2"]
    print(
        f"evaluate: old/old top-1 {report['self']['1']['top1']:.1f}%, new/new "
        f"{report['self']['2']['top1']:.1f}%, new vs transformed old {edge['top1']:.1f}% "
        f"(closes {edge['gap_closed_top1']:.0f}% of the gap); registered in {uri}"
    )

    # The old index, as a gallery of version 1 with the side-info of the same sentences, and
    # new-encoder queries: the same sentences embedded by version 2 (no side-info needed).
    store = ["--tracking-uri", uri]
    old_index = [
        "--embeddings",
        "tables/old-test.parquet",
        "--side-info",
        "tables/side-test.parquet",
    ]
    fct(
        "gallery",
        "import",
        "--version",
        f"{FAMILY}@1",
        *old_index,
        "--out",
        "galleries/index-v1",
        *store,
    )
    queries = ["--embeddings", "tables/new-test.parquet"]
    fct(
        "gallery",
        "import",
        "--version",
        f"{FAMILY}@2",
        *queries,
        "--out",
        "galleries/queries-v2",
        *store,
    )
    fct(
        "upgrade",
        "--gallery",
        "galleries/index-v1",
        "--to",
        f"{FAMILY}@2",
        "--out",
        "galleries/index-v1-to-2",
        "--tracking-uri",
        uri,
        "--no-progress",
        "--json",
    )
    found = fct(
        "search",
        "--gallery",
        "galleries/index-v1-to-2",
        "--query-gallery",
        "galleries/queries-v2",
        "--exclude-self",
        "-k",
        "3",
        "--json",
    )
    sentences = json.loads((work / "tables" / "test-sentences.json").read_text())
    print(f"search the upgraded index (top-1 {found['accuracy']['top1']:.1f}%), first queries:")
    for result in found["results"][:3]:
        print(f"  query {sentences[result['query']]!r}")
        print(f"    top hit {sentences[result['ids'][0]]!r}")
    print(f"done in {time.perf_counter() - start:.0f} s; everything is under {work}")
    summary = {
        "old_old_top1": report["self"]["1"]["top1"],
        "new_new_top1": report["self"]["2"]["top1"],
        "upgraded_top1": found["accuracy"]["top1"],
        "gap_closed_top1": edge["gap_closed_top1"],
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
