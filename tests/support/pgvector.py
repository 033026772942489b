"""An embedded PostgreSQL with pgvector (the ``pgserver`` wheel) for the pgvector tests, and
helpers to put synthetic rows into it. Started once per session (~1 s) in a temporary folder,
on a Unix socket (no TCP port), and stopped by its own handle at teardown."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fct_registry.gallery import make_batch
from fct_registry.gallery.pg.catalogue import TableInfo, served
from fct_registry.gallery.pg.connection import connect
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.read import read_batches
from fct_registry.gallery.pg.server import embedded_server
from fct_registry.gallery.pg.tables import HnswParams
from fct_registry.gallery.pg.write import write_gallery


@dataclass(frozen=True)
class PgServer:
    folder: Path
    url: str

    def gallery(self, name: str | None = None) -> str:
        return f"{self.url}&gallery={name or 'g_' + uuid.uuid4().hex[:10]}"

    def start(self) -> None:
        assert embedded_server(str(self.folder)) == self.url

    def stop(self) -> None:
        embedded_server(str(self.folder), stop=True)

    def postmaster_pid(self) -> int:
        return int((self.folder / "postmaster.pid").read_text().splitlines()[0])


@contextlib.contextmanager
def embedded() -> Iterator[PgServer]:
    """A private server in a fresh folder, stopped and removed afterwards. Not under pytest's
    tmp_path: as root, pgserver runs PostgreSQL as its own user, which cannot enter pytest's
    0700 folders."""
    pytest.importorskip("pgserver", reason="pip install pgserver==0.1.4 (requirements.txt)")
    folder = Path(tempfile.mkdtemp(prefix="fct-pgtest-"))
    folder.chmod(0o755)
    server = PgServer(folder / "data", embedded_server(str(folder / "data")))
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def serve_embedded() -> Iterator[PgServer]:
    """The body of a test module's session fixture: ``yield from serve_embedded()``."""
    with embedded() as server:
        yield server


def load_rows(
    url: str,
    ids: list[str],
    emb: np.ndarray,
    side: np.ndarray | None,
    *,
    version: int = 1,
    side_ref: str | None = "tiny-side-info/1",
    labels: np.ndarray | None = None,
    family: str = "tiny",
    hnsw: HnswParams | None = None,
) -> TableInfo:
    """A pgvector gallery holding these rows (one version)."""
    batch = make_batch(
        ids, emb, model_version=version, side_info=side, side_info_version=side_ref, labels=labels
    )
    info, _ = write_gallery(
        PgLocation.parse(url),
        iter([batch]),
        family=family,
        source_uri="test://rows",
        rows=len(ids),
        groups={(version, side_ref): len(ids)},
        embedding_dim=emb.shape[1],
        side_info_dim=None if side is None else side.shape[1],
        labels=labels is not None,
        hnsw=hnsw,
    )
    return info


def read_all(url: str) -> pa.Table:
    """Every row the gallery's view serves, in id order."""
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc, autocommit=True)) as conn:
        info = served(conn, loc)
        return pa.Table.from_batches(list(read_batches(conn, info, batch_size=1000)))


def matrix(table: pa.Table, column: str) -> np.ndarray:
    arr = table.column(column).combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), -1)


# --- chains without torch ------------------------------------------------------------------------


@dataclass(frozen=True)
class GemmChain:
    """A transformation-shaped ONNX graph, ``relu([old, side] @ w1 + b1) @ w2 + b2`` (or without
    side-info), built with onnx.helper: no torch import, so these tests start in a second."""

    path: Path
    weights: tuple[np.ndarray, ...]
    reads_side_info: bool

    def numpy(self, old: np.ndarray, side: np.ndarray | None) -> np.ndarray:
        w1, b1, w2, b2 = self.weights
        x = np.concatenate([old, side], axis=1) if self.reads_side_info else old
        return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def gemm_chain(
    path: Path, old_dim: int, new_dim: int, side_dim: int, seed: int, hidden: int = 16
) -> GemmChain:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    width = old_dim + side_dim
    weights = tuple(
        w.astype(np.float32)
        for w in (
            rng.standard_normal((width, hidden)) / np.sqrt(width),
            rng.standard_normal(hidden),
            rng.standard_normal((hidden, new_dim)) / np.sqrt(hidden),
            rng.standard_normal(new_dim),
        )
    )
    inputs = [helper.make_tensor_value_info("old_embedding", TensorProto.FLOAT, ["n", old_dim])]
    nodes = []
    x = "old_embedding"
    if side_dim:
        inputs.append(
            helper.make_tensor_value_info("side_info", TensorProto.FLOAT, ["n", side_dim])
        )
        nodes.append(helper.make_node("Concat", ["old_embedding", "side_info"], ["x"], axis=1))
        x = "x"
    nodes += [
        helper.make_node("MatMul", [x, "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["new_embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        inputs,
        [helper.make_tensor_value_info("new_embedding", TensorProto.FLOAT, ["n", new_dim])],
        [
            numpy_helper.from_array(w, n)
            for w, n in zip(weights, ["w1", "b1", "w2", "b2"], strict=True)
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return GemmChain(path, weights, bool(side_dim))
