"""Benchmark: galleries served from PostgreSQL + pgvector (the embedded pgserver), in one run.

    .venv/bin/python benchmarks/bench_pgvector.py                       # everything (long: 1M HNSW)
    .venv/bin/python benchmarks/bench_pgvector.py --rows 20000 --hnsw-rows 20000   # a quick look
    .venv/bin/python benchmarks/bench_pgvector.py --only recall --trained outputs  # 3a, trained

All numbers come from this one run, side by side, on this machine (CPU; random weights for the
chain of items 1, 2 and 3b, whose cost does not depend on them):

1. Upgrade throughput, rows per second, for the default family's transformation into its newest
   version (params.yaml widths), on the same synthetic rows: Parquet -> Parquet
   (``upgrade_gallery``, the existing path), pgvector -> pgvector and Parquet -> pgvector
   (``upgrade_to_pg``: keyset reads, the chain, binary COPY, a checkpoint per batch; the HNSW
   build excluded, it is item 2), and re-embedding images per second with the newest version's
   backbone (the faster of PyTorch and ONNX Runtime). Rounds are interleaved, medians reported.
   Target: pgvector -> pgvector >= 50% of the Parquet path's rows/s.
2. HNSW build time (pgvector's defaults m=16, ef_construction=64, the family's l2 distance) on
   upgraded galleries of each ``--hnsw-rows`` size (default 100k and 1M), with the upgrade's
   own copy time beside it.
3. recall@10 of HNSW against exact search at pgvector's default ef_search (40), at 100 (and at
   any ``--ef-search`` values):
   (a) on the default family's upgraded gallery of real images: the Fashion-MNIST train split
   embedded with the source version's embedding model and the side-info extractor, upgraded
   through the chain (the default family's newest edge, exported to ONNX as the registry does)
   into pgvector; queries are the test split through the same pipeline. With ``--trained
   OUTPUTS`` (default: the repository's ``outputs/`` when it holds the trained models) these are
   the pipeline's trained models and transformation; otherwise (a fresh checkout, or
   ``--random-weights``) randomly initialised networks, which say little about a real gallery.
   The output names the weights used. Top-1 label accuracy of the upgraded queries is printed
   beside recall, as a check that the gallery is a trained one. (b) on the largest synthetic
   gallery of item 2 (Gaussian inputs: no cluster structure, the hard case for HNSW).
   Target: (a) >= 0.95 at the defaults.

4. The binary COPY codec: ``--codec-rows`` rows (default 100k, ``--codec-dim`` 128-d, labels)
   written into tables of the store's layout by the hand-written column-wise encoder it uses
   (:func:`fct_registry.gallery.pg.codec.copy_in`, psycopg2) and by psycopg 3's ``Copy.write_row``
   with the ``pgvector`` package's binary dumper (one Python row at a time, its documented bulk
   load), alternating, ``--rounds`` each; both tables are checked equal. psycopg 3 and pgvector
   are not project dependencies: ``pip install "psycopg[binary]" pgvector`` to run this item.
   Measured on the 2-CPU shared dev machine (docs/pgvector.md): equal within its noise (hand /
   psycopg 3 = 1.24 and 0.86 at 128-d in two runs, 0.94 at 512-d), so the store keeps the hand
   codec and psycopg2.

``--only recall`` runs item 3a alone (minutes, not the 1M-row build's half hour); ``--only codec``
item 4 alone (seconds). PostgreSQL's own
CPU time is not in this process's CPU time, so only wall time is compared; the load average is
printed, since the machine may be shared. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_upgrade import (  # noqa: E402  (a sibling script, not a package)
    default_family,
    export_chain,
    reembed_measures,
    write_synthetic,
)

from fct_registry.gallery import Gallery, make_batch, open_storage  # noqa: E402
from fct_registry.gallery import schema as gallery_schema  # noqa: E402
from fct_registry.gallery.manifest import GroupKey  # noqa: E402
from fct_registry.gallery.pg.catalogue import (  # noqa: E402  # noqa: E402
    ALIASES,
    TABLES,
    TableInfo,
    ensure_metadata,
    gallery_tables,
)
from fct_registry.gallery.pg.codec import COPY_COLUMNS, copy_in  # noqa: E402
from fct_registry.gallery.pg.connection import connect  # noqa: E402
from fct_registry.gallery.pg.location import PgLocation  # noqa: E402
from fct_registry.gallery.pg.search import HNSW_EF_SEARCH, recall_at_k, search  # noqa: E402
from fct_registry.gallery.pg.server import embedded_server  # noqa: E402
from fct_registry.gallery.pg.tables import HnswParams, build_index, create_table  # noqa: E402
from fct_registry.gallery.pg.transfer import copy_gallery  # noqa: E402
from fct_registry.upgrade import UpgradePlan, upgrade_gallery  # noqa: E402
from fct_registry.upgrade.pgvector import Source, upgrade_to_pg  # noqa: E402

TARGET_RATIO = 0.5
TARGET_RECALL = 0.95
SIDE = "bench-side-info/1"


def say(text: str) -> None:
    print(text, flush=True)


def drop_gallery(url: str) -> None:
    """Remove a benchmark gallery: its view, its tables and their metadata."""
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
        tables = [t.table for t in gallery_tables(conn, loc.gallery)]
        cur.execute(f"DROP VIEW IF EXISTS {loc.gallery}")
        cur.execute(f"DELETE FROM {ALIASES} WHERE gallery = %s", (loc.gallery,))
        for table in tables:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"DELETE FROM {TABLES} WHERE gallery = %s", (loc.gallery,))
        cur.execute("DELETE FROM fct_gallery_jobs WHERE gallery = %s", (loc.gallery,))
        conn.commit()


def build_chain(fam: dict[str, Any], workdir: Path) -> Path:
    from fct_registry.models.transformations import TRANSFORMATIONS, TransformationChain

    hop = TRANSFORMATIONS.build(
        fam["kind"],
        old_dim=fam["old_dim"],
        new_dim=fam["new_dim"],
        side_info_dim=fam["side_dim"],
        hidden_dim=fam["hidden"],
    )
    return export_chain(
        TransformationChain([hop]), workdir / "chain.onnx", fam["old_dim"], fam["side_dim"]
    )


# --- 1. throughput -------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, fam: dict[str, Any], plan: UpgradePlan, url: str,
               workdir: Path) -> dict[str, list[float]]:  # fmt: skip
    src = workdir / "src"
    write_synthetic(src, args.rows, fam["old_dim"], fam["side_dim"])
    pg_src = f"{url}&gallery=bench_src"
    copy_gallery(str(src), pg_src, index=False)
    say(f"  source: {args.rows:,} rows as Parquet ({src}) and in pgvector (bench_src)")

    from fct_registry.models.io import build_from_spec

    backbone = build_from_spec(fam["backbone_spec"])
    reembed = reembed_measures(backbone, fam["shape"], args.images, 512, workdir, "backbone")
    rates: dict[str, list[float]] = {
        "parquet": [],
        "pg->pg": [],
        "parquet->pg": [],
        "reembed": [],
    }
    for r in range(args.rounds):
        dst = workdir / f"dst-{r}"
        start = time.perf_counter()
        report = upgrade_gallery(
            Gallery.open(src), open_storage(dst), plan, batch_size=args.batch_size
        )
        rates["parquet"].append(report.rows / (time.perf_counter() - start))
        shutil.rmtree(dst)

        for name, source_loc in (("pg->pg", pg_src), ("parquet->pg", str(src))):
            dest = f"{url}&gallery=bench_up_{r}_{name.replace('->', '_')}"
            source = Source.open(source_loc)
            try:
                up = upgrade_to_pg(source, PgLocation.parse(dest), plan,
                                   batch_size=args.batch_size, index=False)  # fmt: skip
            finally:
                source.close()
            rates[name].append(up.rows_per_second)
            drop_gallery(dest)

        for m in reembed.values():
            m.sample()
        rates["reembed"].append(max(max(m.rates()[-1:]) for m in reembed.values()))
        say(
            f"  round {r + 1}: parquet {rates['parquet'][-1]:,.0f}, pg->pg "
            f"{rates['pg->pg'][-1]:,.0f}, parquet->pg {rates['parquet->pg'][-1]:,.0f} rows/s; "
            f"re-embedding {rates['reembed'][-1]:,.0f} images/s"
        )
    drop_gallery(pg_src)
    shutil.rmtree(src)
    return rates


# --- 2. HNSW build, 3b. recall on synthetic -----------------------------------------------------


def hnsw_at(rows: int, args: argparse.Namespace, fam: dict[str, Any], plan: UpgradePlan,
            url: str, workdir: Path, recall: bool) -> dict[str, Any]:  # fmt: skip
    import numpy as np

    src = workdir / f"hnsw-src-{rows}"
    write_synthetic(src, rows, fam["old_dim"], fam["side_dim"])
    dest = f"{url}&gallery=bench_hnsw_{rows}"
    source = Source.open(str(src))
    try:
        up = upgrade_to_pg(source, PgLocation.parse(dest), plan,
                           batch_size=args.batch_size, index=False)  # fmt: skip
    finally:
        source.close()
    shutil.rmtree(src)
    loc = PgLocation.parse(dest)
    params = HnswParams(maintenance_work_mem=args.maintenance_work_mem)
    with contextlib.closing(connect(loc)) as conn:
        seconds = build_index(conn, up.table, "l2", params)
        out = {"rows": rows, "copy_rows_per_second": up.rows_per_second, "build_seconds": seconds}
        say(
            f"  {rows:,} rows: upgrade into pgvector {up.copy_seconds:.1f} s "
            f"({up.rows_per_second:,.0f} rows/s), HNSW build {seconds:.1f} s"
        )
        if recall:
            runner = next(iter(plan.routes.values())).runner
            rng = np.random.default_rng(99)
            n = args.recall_queries
            queries = runner(
                rng.standard_normal((n, fam["old_dim"]), dtype=np.float32),
                rng.standard_normal((n, fam["side_dim"]), dtype=np.float32),
            )
            out["recall"] = recall_table(conn, loc, queries)
    drop_gallery(dest)
    return out


def recall_table(conn: Any, loc: PgLocation, queries: Any, labels: Any = None,
                 ef_search: tuple[int, ...] = (HNSW_EF_SEARCH, 100),
                 ) -> dict[int, tuple[float, float, float | None]]:  # fmt: skip
    """``ef_search -> (recall@10 against exact, queries/s, top-1 label accuracy or None)``; key 0
    is exact search itself. ``labels``: the queries' true labels, for the accuracy."""
    import numpy as np

    def top1(result: Any) -> float | None:
        if labels is None or result.labels is None:
            return None
        return float(np.mean(result.labels[:, 0] == np.asarray(labels)))

    exact = search(conn, loc, queries, k=10, exact=True)
    out = {}
    for ef in ef_search:
        hnsw = search(conn, loc, queries, k=10, ef_search=ef)
        out[ef] = (recall_at_k(hnsw.ids, exact.ids), hnsw.qps, top1(hnsw))
    out[0] = (1.0, exact.qps, top1(exact))  # exact search's own speed, for comparison
    return out


# --- 3a. recall on the default family's upgraded Fashion-MNIST gallery ------------------------


@dataclass
class RecallModels:
    """What step 3a embeds and upgrades with, and a sentence saying which weights those are."""

    weights: str
    model: Any  # the source version's embedding model
    side: Any  # the side-info extractor
    plan: UpgradePlan  # the chain into the newest version, as ONNX
    stored: Path | None = None  # the source version's stored embeddings, to check the model


def newest_edge(params: Any, fam: dict[str, Any]) -> str:
    """The params.yaml name of the transformation ``default_family`` picked (its newest edge)."""
    for name, t in params.transformations.items():
        if (t.source, t.target, t.kind, t.hidden_dim) == (
            fam["source"], fam["newest"], fam["kind"], fam["hidden"],
        ):  # fmt: skip
            return name
    raise SystemExit(f"params.yaml has no transformation {fam['source']} -> {fam['newest']}")


def trained_missing(root: Path, fam: dict[str, Any]) -> list[Path]:
    from fct_registry.config import load_params
    from fct_registry.layout import Layout

    layout = Layout(root)
    name = newest_edge(load_params(REPO_ROOT / "params.yaml"), fam)
    dirs = (layout.version(fam["source"]), layout.side_info, layout.transformation(name))
    return [
        d / f for d in dirs for f in ("spec.json", "model.safetensors") if not (d / f).is_file()
    ]


def trained_models(root: Path, fam: dict[str, Any], workdir: Path,
                   threads: int | None) -> RecallModels:  # fmt: skip
    """The pipeline's trained models under ``root`` (an ``outputs/`` folder), the chain exported
    to ONNX as the registry exports it (``TransformationChain`` of the hops, ``export_onnx``,
    checked against PyTorch)."""
    from fct_registry._files import sha256_file
    from fct_registry.config import load_params
    from fct_registry.layout import Layout
    from fct_registry.models.io import load_model
    from fct_registry.models.transformations import TransformationChain

    layout = Layout(root)
    name = newest_edge(load_params(REPO_ROOT / "params.yaml"), fam)
    model, spec = load_model(layout.version(fam["source"]))
    side, side_spec = load_model(layout.side_info)
    hop, hop_spec = load_model(layout.transformation(name))
    got = (spec["embedding_dim"], side_spec["dim"], hop_spec["old_dim"], hop_spec["new_dim"])
    want = (fam["old_dim"], fam["side_dim"], fam["old_dim"], fam["new_dim"])
    if got != want or (hop_spec["from"], hop_spec["to"]) != (fam["source"], fam["newest"]):
        raise SystemExit(
            f"{root} was trained with other widths or versions than params.yaml "
            f"(embedding, side-info, transformation in/out: {got}, want {want}); pass the "
            "outputs of a `dvc repro` of this params.yaml"
        )
    onnx = export_chain(
        TransformationChain([hop]), workdir / "trained-chain.onnx", fam["old_dim"], fam["side_dim"]
    )
    plan = UpgradePlan.from_onnx(
        "bench", fam["newest"], {(fam["source"], SIDE): [onnx]}, threads=threads
    )
    files = [
        layout.version(fam["source"]) / "model.safetensors",
        layout.side_info / "model.safetensors",
        layout.transformation(name) / "model.safetensors",
    ]
    sums = ", ".join(f"{f.relative_to(root)} sha256 {sha256_file(f)[:12]}" for f in files)
    weights = (
        f"TRAINED weights from {root}: version {fam['source']}'s embedding model, the side-info "
        f"extractor ({side_spec.get('name', 'side_info')}) and transformation {name} "
        f"({hop_spec['type']}, hidden {hop_spec['hidden_dim']}, seed {hop_spec.get('seed')}); "
        f"{sums}"
    )
    stored = layout.version_embeddings(fam["source"])
    return RecallModels(weights, model, side, plan, stored if stored.is_file() else None)


def random_models(fam: dict[str, Any], plan: UpgradePlan, why: str) -> RecallModels:
    import torch

    from fct_registry.config import load_params
    from fct_registry.models.io import build_from_spec

    params = load_params(REPO_ROOT / "params.yaml")
    src_cfg, side_cfg = params.versions[fam["source"]], params.side_info
    common = {"in_channels": 1, "input_shape": [1, 28, 28], "mean": [0.286], "std": [0.353]}
    torch.manual_seed(0)
    model = build_from_spec({
        "kind": "embedding", "backbone": src_cfg.backbone.name,
        "backbone_kwargs": dict(src_cfg.backbone.kwargs), "embedding_dim": src_cfg.embedding_dim,
        "num_classes": 10, **common,
    }).eval()  # fmt: skip
    side = build_from_spec({
        "kind": "side_info", "backbone": side_cfg.backbone.name,
        "backbone_kwargs": dict(side_cfg.backbone.kwargs), "dim": side_cfg.dim,
        "projection_dim": side_cfg.projection_dim, **common,
    }).eval()  # fmt: skip
    weights = (
        f"RANDOMLY INITIALISED weights ({why}): embedding model, side-info extractor and "
        "transformation; recall on such a gallery says little about a trained one"
    )
    return RecallModels(weights, model, side, plan)


def fashion_recall(args: argparse.Namespace, models: RecallModels, url: str,
                   workdir: Path) -> dict[str, Any] | None:  # fmt: skip
    import numpy as np
    import torch

    from fct_registry.data.fashion_mnist import load_fashion_mnist
    from fct_registry.gallery import GalleryWriter, make_batch
    from fct_registry.layout import load_embeddings
    from fct_registry.training.embed import embed_images

    say(f"  weights: {models.weights}")
    root = Path(args.fashion)
    if not root.is_dir():
        say(f"  skipped: {root} not found (dataset-fashion-mnist)")
        return None
    splits = {}
    for split in ("train", "test"):
        images, labels = load_fashion_mnist(root, split)
        images = torch.from_numpy(images)
        start = time.perf_counter()
        emb = embed_images(models.model, images, torch.device("cpu"), batch_size=512).numpy()
        side_info = embed_images(models.side, images, torch.device("cpu"), batch_size=512).numpy()
        splits[split] = (emb, side_info, labels)
        say(f"  embedded {split}: {len(images):,} images in {time.perf_counter() - start:.0f} s")
    if models.stored is not None:
        # The pipeline stored the whole test split in order: the loaded model must reproduce it.
        stored = load_embeddings(models.stored)["test"].numpy()
        n = min(len(stored), len(splits["test"][0]))
        diff = float(np.abs(stored[:n] - splits["test"][0][:n]).max())
        say(f"  check: test embeddings vs the pipeline's {models.stored.name}, {n:,} rows: "
            f"max |diff| {diff:.2e}")  # fmt: skip
        if diff > 1e-3:
            raise SystemExit(f"the loaded model does not reproduce {models.stored}")
    emb, side_info, labels = splits["train"]
    source_version = next(iter(models.plan.routes))[0]
    gallery = workdir / "fashion"
    writer = GalleryWriter(open_storage(gallery), "bench")
    ids = [f"train-{i:05d}" for i in range(len(emb))]
    writer.write(
        make_batch(ids, emb, model_version=source_version, side_info=side_info,
                   side_info_version=SIDE, labels=labels)
    )  # fmt: skip
    writer.close()
    dest = f"{url}&gallery=bench_fashion"
    source = Source.open(str(gallery))
    try:
        up = upgrade_to_pg(source, PgLocation.parse(dest), models.plan, batch_size=args.batch_size)
    finally:
        source.close()
    say(f"  upgraded {up.rows:,} rows into pgvector, HNSW build {up.index_seconds:.1f} s")
    runner = next(iter(models.plan.routes.values())).runner
    q_emb, q_side, q_labels = splits["test"]
    n = args.fashion_queries
    queries = runner(q_emb[:n], q_side[:n])
    loc = PgLocation.parse(dest)
    with contextlib.closing(connect(loc)) as conn:
        out = {
            "rows": up.rows,
            "queries": len(queries),
            "index_seconds": up.index_seconds,
            "weights": models.weights,
            "recall": recall_table(conn, loc, queries, q_labels[:n], args.ef_search),
        }
    drop_gallery(dest)
    shutil.rmtree(gallery)
    return out


# --- 4. the binary COPY codec -------------------------------------------------------------------


def codec_race(args: argparse.Namespace, url: str) -> dict[str, list[float]]:
    """Rows per second of the hand codec (psycopg2) and of psycopg 3 + pgvector's dumper, each
    loading the same batches into an empty table of the store's layout, alternating."""
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError:
        raise SystemExit('item 4 needs psycopg 3 and pgvector: pip install "psycopg[binary]" '
                         "pgvector") from None  # fmt: skip
    n, d, step = args.codec_rows, args.codec_dim, args.batch_size
    rng = np.random.default_rng(0)
    batches = [
        make_batch(
            [f"item-{i:08d}" for i in range(lo, min(lo + step, n))],
            rng.standard_normal((min(step, n - lo), d), dtype=np.float32),
            model_version=1,
            labels=rng.integers(0, 10, min(step, n - lo)),
            source_uris=["s3://bench/images"] * min(step, n - lo),
        )
        for lo in range(0, n, step)
    ]
    groups: dict[GroupKey, int] = {(1, None): n}
    loc = PgLocation.parse(f"{url}&gallery=bench_codec")
    tables = {"hand": "bench_codec_hand", "psycopg3": "bench_codec_psycopg3"}
    with contextlib.closing(connect(loc)) as conn:
        ensure_metadata(conn)
        with conn.cursor() as cur:
            for table in tables.values():
                info = TableInfo(table, "bench_codec", "bench", n, d, None, True, "l2", groups)
                create_table(cur, info)
        conn.commit()

    def hand() -> None:
        with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
            cur.execute(f"TRUNCATE {tables['hand']}")
            for batch in batches:
                copy_in(cur, tables["hand"], batch, None, "bench")
            conn.commit()

    def psycopg3() -> None:
        with psycopg.connect(loc.dsn) as conn:
            register_vector(conn)  # before the cursor, which copies the connection's adapters
            cur = conn.cursor()
            cur.execute(f"TRUNCATE {tables['psycopg3']}")
            sql = (
                f"COPY {tables['psycopg3']} ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            )
            with cur.copy(sql) as copy:
                copy.set_types(
                    ["text", "vector", "vector", "int4", "text", "text", "int8", "float4", "bool"]
                )
                for batch in batches:
                    ids = batch.column("id").to_pylist()
                    emb = gallery_schema.vectors(batch, "embedding", "bench")
                    labels = batch.column("label").to_pylist()
                    src = batch.column("source_uri").to_pylist()
                    for i, item in enumerate(ids):
                        copy.write_row((item, emb[i], None, 1, None, src[i], labels[i], None, None))

    rates: dict[str, list[float]] = {name: [] for name in tables}
    for _ in range(args.rounds):
        for name, load in (("hand", hand), ("psycopg3", psycopg3)):
            start = time.perf_counter()
            load()
            rates[name].append(n / (time.perf_counter() - start))
    with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
        digests = []
        for table in tables.values():
            cur.execute(
                f"SELECT count(*), md5(string_agg(id || embedding::text || label || source_uri, "
                f"',' ORDER BY id)) FROM {table}"
            )
            digests.append(cur.fetchone())
            cur.execute(f"DROP TABLE {table}")
        cur.execute(f"DELETE FROM {TABLES} WHERE gallery = 'bench_codec'")
        conn.commit()
    if digests[0] != digests[1] or digests[0][0] != n:
        raise SystemExit(f"the two loads differ: {digests}")
    hand_rate, pg3_rate = statistics.median(rates["hand"]), statistics.median(rates["psycopg3"])
    say(
        f"  {n:,} rows x {d}-d: hand codec (psycopg2) {hand_rate:,.0f} rows/s, psycopg 3 + "
        f"pgvector {pg3_rate:,.0f} rows/s (medians of {args.rounds}); hand / psycopg 3 = "
        f"{hand_rate / pg3_rate:.2f}x; tables equal"
    )
    ratios = [h / p for h, p in zip(rates["hand"], rates["psycopg3"], strict=True)]
    say(f"  per round, hand / psycopg 3: {', '.join(f'{r:.2f}' for r in ratios)}")
    return rates


# --- main ---------------------------------------------------------------------------------------


def recall_models(args: argparse.Namespace, fam: dict[str, Any], plan: UpgradePlan,
                  workdir: Path) -> RecallModels:  # fmt: skip
    """Trained models when asked for (or found in the repository's outputs/), else random."""
    if args.random_weights:
        return random_models(fam, plan, "--random-weights")
    root = Path(args.trained) if args.trained else REPO_ROOT / "outputs"
    missing = trained_missing(root, fam)
    if not missing:
        return trained_models(root, fam, workdir, args.threads)
    if args.trained:
        raise SystemExit(
            f"--trained {root}: {missing[0]} not found; pass the outputs/ folder of a finished "
            "`dvc repro` (with the DVC-cached model folders checked out), or --random-weights"
        )
    return random_models(fam, plan, f"no trained models in {root}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all)")
    parser.add_argument("--images", type=int, default=4096, help="images per re-embed round")
    parser.add_argument(
        "--hnsw-rows", default="100000,1000000", help="gallery sizes of the HNSW build timings"
    )
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--fashion-queries", type=int, default=500)
    parser.add_argument(
        "--ef-search",
        type=lambda v: tuple(int(x) for x in v.split(",") if x),
        default=(HNSW_EF_SEARCH, 100),
        help="step 3a's HNSW ef_search values, comma-separated (default 40,100; 40 and 100 "
        "are always added)",
    )
    parser.add_argument(
        "--trained",
        metavar="OUTPUTS",
        help="the pipeline's outputs/ folder: step 3a uses its trained models and transformation "
        "(default: the repository's outputs/ when it holds them, else random weights)",
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="step 3a with random weights, always"
    )
    parser.add_argument(
        "--only",
        choices=("all", "recall", "codec"),
        default="all",
        help="recall: step 3a alone (the Fashion-MNIST gallery's recall), minutes not hours; "
        "codec: step 4 alone (hand COPY codec against psycopg 3 + pgvector)",
    )
    parser.add_argument("--codec-rows", type=int, default=100_000, help="rows of step 4")
    parser.add_argument("--codec-dim", type=int, default=128, help="embedding width of step 4")
    parser.add_argument("--maintenance-work-mem", default="2GB")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.trained and args.random_weights:
        parser.error("--trained and --random-weights exclude each other")
    # the summary reports 40 (pgvector's default) and 100 whatever else is asked for
    args.ef_search = tuple(sorted({*args.ef_search, HNSW_EF_SEARCH, 100}))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pgvector-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # pgserver runs PostgreSQL as its own user when we are root
    fam = default_family()
    say(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; default family "
        f"{fam['family']}: @{fam['source']} ({fam['old_dim']}-d) + side-info "
        f"({fam['side_dim']}-d) -> @{fam['newest']} ({fam['new_dim']}-d), {fam['kind']} "
        f"hidden {fam['hidden']}"
    )
    url = embedded_server(str(workdir / "pgdata"))
    rates: dict[str, list[float]] = {}
    builds: list[dict[str, Any]] = []
    if args.only == "codec":
        try:
            say("\n4. binary COPY: the hand codec against psycopg 3 + pgvector")
            codec_race(args, url)
        finally:
            with contextlib.suppress(Exception):
                embedded_server(str(workdir / "pgdata"), stop=True)
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        return 0
    try:
        plan = UpgradePlan.from_onnx(
            "bench", 2, {(1, SIDE): [build_chain(fam, workdir)]}, threads=args.threads
        )
        if args.only == "all":
            say("\n1. upgrade throughput (HNSW build excluded for pgvector)")
            rates = throughput(args, fam, plan, url, workdir)
        say("\n3a. recall on the default family's upgraded Fashion-MNIST gallery")
        models = recall_models(args, fam, plan, workdir)
        fashion = fashion_recall(args, models, url, workdir)
        if fashion:
            print_recall(fashion["recall"], f"{fashion['rows']:,} rows")
        if args.only == "all":
            say("\n2. HNSW build (m=16, ef_construction=64, l2)")
            sizes = [int(s) for s in args.hnsw_rows.split(",") if s]
            builds = [
                hnsw_at(n, args, fam, plan, url, workdir, recall=n == max(sizes)) for n in sizes
            ]
            if builds and "recall" in builds[-1]:
                say("\n3b. recall on the largest synthetic upgraded gallery")
                print_recall(builds[-1]["recall"], f"{builds[-1]['rows']:,} rows")
    finally:
        with contextlib.suppress(Exception):
            embedded_server(str(workdir / "pgdata"), stop=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return summary(args, rates, fashion, builds)


def print_recall(table: dict[int, tuple[float, float, float | None]], what: str) -> None:
    for ef, (recall, qps, top1) in table.items():
        mode = "exact" if ef == 0 else f"HNSW ef_search={ef}"
        extra = "" if ef == 0 else f"recall@10 {recall:.4f}, "
        acc = "" if top1 is None else f", top-1 label accuracy {top1:.4f}"
        say(f"  {what}, {mode}: {extra}{qps:,.0f} queries/s{acc}")


def summary(args: argparse.Namespace, rates: dict[str, list[float]],
            fashion: dict[str, Any] | None, builds: list[dict[str, Any]]) -> int:  # fmt: skip
    ok = True
    if rates:
        med = {k: statistics.median(v) for k, v in rates.items()}
        ratio = med["pg->pg"] / med["parquet"]
        say(f"\nsummary ({args.rows:,} rows, batch {args.batch_size}, medians of {args.rounds}):")
        say(f"  Parquet -> Parquet     {med['parquet']:>10,.0f} rows/s")
        say(f"  pgvector -> pgvector   {med['pg->pg']:>10,.0f} rows/s  ({ratio:.0%} of Parquet; "
            f"target >= {TARGET_RATIO:.0%})")  # fmt: skip
        say(f"  Parquet -> pgvector    {med['parquet->pg']:>10,.0f} rows/s  "
            f"({med['parquet->pg'] / med['parquet']:.0%} of Parquet)")  # fmt: skip
        say(f"  re-embedding           {med['reembed']:>10,.0f} images/s (pgvector upgrade is "
            f"{med['pg->pg'] / med['reembed']:.0f}x faster)")  # fmt: skip
        ok = ratio >= TARGET_RATIO
    else:
        say(f"\nsummary (--only {args.only}):")
    for b in builds:
        say(f"  HNSW build at {b['rows']:>9,} rows: {b['build_seconds']:8.1f} s")
    if fashion:
        recall = fashion["recall"][HNSW_EF_SEARCH][0]
        trained = "trained" if fashion["weights"].startswith("TRAINED") else "random-weight"
        say(f"  recall@10 at defaults, {trained} upgraded Fashion-MNIST ({fashion['rows']:,} rows, "
            f"{fashion['queries']} queries): {recall:.4f} (target >= {TARGET_RECALL}); "
            f"at ef_search 100: {fashion['recall'][100][0]:.4f}")  # fmt: skip
        ok = ok and recall >= TARGET_RECALL
    if builds and "recall" in builds[-1]:
        say(f"  recall@10 at defaults, synthetic {builds[-1]['rows']:,} rows: "
            f"{builds[-1]['recall'][HNSW_EF_SEARCH][0]:.4f}")  # fmt: skip
    say("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
