"""PostgreSQL + pgvector as a gallery store: the binary COPY encoder against a plain loop, URLs
and secrets, lossless moves between Parquet/S3 and pgvector, search against brute force, the
``fct gallery`` / ``fct search`` commands, and each bad input with its own test."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fct_registry.cli import main
from fct_registry.errors import NotFoundError
from fct_registry.gallery import Gallery, make_batch, open_storage
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError, NonFiniteError, SchemaError
from fct_registry.gallery.manifest import MANIFEST, Manifest
from fct_registry.gallery.pg import write
from fct_registry.gallery.pg.catalogue import ensure_metadata, gallery_tables, served
from fct_registry.gallery.pg.codec import SOURCE_URI, encode_copy
from fct_registry.gallery.pg.connection import connect
from fct_registry.gallery.pg.errors import PgError, PgUnreachableError
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.search import recall_at_k, search
from fct_registry.gallery.pg.tables import HnswParams, swap
from fct_registry.gallery.pg.transfer import copy_gallery
from fct_registry.gallery.shards import write_shard
from fct_registry.gallery.writer import GalleryWriter
from tests.support.pgvector import PgServer, load_rows, matrix, read_all, serve_embedded
from tests.support.services import postgres  # noqa: F401  (session fixture: Debian's PostgreSQL 15)
from tests.upgrade.conftest import FAMILY, S3, SIDE, synthetic_rows, write_gallery

pytestmark = pytest.mark.services


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    yield from serve_embedded()


# --- pure functions (no server) -----------------------------------------------------------------


def _naive_copy(batch: pa.RecordBatch, source_uri: str) -> bytes:
    """The binary COPY stream built row by row with struct, as the PostgreSQL docs describe it."""
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack("!ii", 0, 0)]
    rows = batch.to_pylist()

    def text(value: str | None) -> bytes:
        if value is None:
            return struct.pack("!i", -1)
        data = value.encode()
        return struct.pack("!i", len(data)) + data

    def vector(values: list[float] | None) -> bytes:
        if values is None:
            return struct.pack("!i", -1)
        body = struct.pack("!hh", len(values), 0) + struct.pack(f"!{len(values)}f", *values)
        return struct.pack("!i", len(body)) + body

    def scalar(fmt: str, value: object) -> bytes:
        if value is None:
            return struct.pack("!i", -1)
        return struct.pack("!i", struct.calcsize(f"!{fmt}")) + struct.pack(f"!{fmt}", value)

    for row in rows:
        out.append(
            struct.pack("!h", 9)
            + text(row[gallery_schema.ID])
            + vector(row[gallery_schema.EMBEDDING])
            + vector(row.get(gallery_schema.SIDE_INFO))
            + struct.pack("!ii", 4, row[gallery_schema.MODEL_VERSION])
            + text(row.get(gallery_schema.SIDE_INFO_VERSION))
            + text(row.get(SOURCE_URI) or source_uri)
            + scalar("q", row.get(gallery_schema.LABEL))
            + scalar("f", row.get(gallery_schema.UNCERTAINTY))
            + scalar("?", row.get(gallery_schema.BACKFILLED))
        )
    out.append(struct.pack("!h", -1))
    return b"".join(out)


def test_copy_encoder_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    n = 37
    batch = make_batch(
        [f"item-{i}" if i % 5 else f"ünï\tcødé\n{i}" for i in range(n)],
        rng.standard_normal((n, 5), dtype=np.float32),
        model_version=3,
        side_info=rng.standard_normal((n, 2), dtype=np.float32),
        side_info_version="side/1",
        labels=rng.integers(-3, 10**12, n),
    )
    labels = pc.if_else(pa.array(np.arange(n) % 4 == 0), pa.nulls(n, pa.int64()), batch["label"])
    batch = batch.set_column(
        batch.schema.get_field_index(gallery_schema.LABEL), gallery_schema.LABEL, labels
    )
    some = np.arange(n) % 3 != 0  # the partial-backfill columns, with nulls
    unc = rng.standard_normal(n).astype(np.float32)
    batch = batch.append_column(
        gallery_schema.uncertainty_field(), pa.array(unc, pa.float32(), mask=~some)
    )
    batch = batch.append_column(
        gallery_schema.backfilled_field(), pa.array(unc > 0, mask=np.arange(n) % 5 == 0)
    )
    parts = encode_copy(batch.slice(3), "s3://b/g", "test")  # a slice: offsets matter
    assert b"".join(bytes(p) for p in parts) == _naive_copy(batch.slice(3), "s3://b/g")
    bare = make_batch(["a", "b"], np.ones((2, 3), np.float32), model_version=1)  # no side-info
    parts = encode_copy(bare, "here", "test")
    assert b"".join(bytes(p) for p in parts) == _naive_copy(bare, "here")


def test_urls_name_a_gallery_and_never_show_the_password() -> None:
    loc = PgLocation.parse("postgresql://app:s3cr%40t@db:5432/search?sslmode=require&gallery=fa")
    assert loc.gallery == "fa"
    assert "s3cr" not in loc.uri and "s3cr" not in repr(loc) and "s3cr" not in loc.server
    assert loc.uri == "postgresql://app:***@db:5432/search?sslmode=require&gallery=fa"
    assert "gallery" not in loc.dsn and "s3cr%40t" in loc.dsn
    assert "pw9" not in PgLocation.parse("postgres://u@h/d?password=pw9&gallery=g").uri
    for bad in (
        "postgresql://h/d",
        "postgresql://h/d?gallery=Bad-Name",
        "postgresql://h/d?gallery=1x",
    ):
        with pytest.raises(PgError, match="gallery=NAME"):
            PgLocation.parse(bad)


def test_recall_at_k_against_a_loop() -> None:
    approx = np.array([["a", "b", "c"], ["d", None, None], ["x", "y", "z"]], dtype=object)
    exact = np.array([["a", "c", "e"], ["d", "f", None], ["p", "q", "r"]], dtype=object)
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


# --- moving galleries --------------------------------------------------------------------------


def test_parquet_to_pgvector_to_parquet_is_lossless(pg_server: PgServer, tmp_path: Path) -> None:
    rows = synthetic_rows(250)
    rows.old[7] = np.float32(1e-45)  # subnormal, and extremes: still bit for bit
    rows.old[8] = np.float32(3.4e38)
    write_gallery(tmp_path / "src", rows, shard_rows=100)
    url = pg_server.gallery()
    report = copy_gallery(str(tmp_path / "src"), url, hnsw=HnswParams(m=8, ef_construction=32))
    assert report.rows == 250 and report.table
    copy_gallery(url, str(tmp_path / "back"))
    src = pa.Table.from_batches(list(Gallery.open(tmp_path / "src").batches())).sort_by(
        gallery_schema.ID
    )
    back = pa.Table.from_batches(list(Gallery.open(tmp_path / "back").batches()))
    for column in (
        gallery_schema.ID,
        gallery_schema.EMBEDDING,
        gallery_schema.SIDE_INFO,
        gallery_schema.MODEL_VERSION,
        gallery_schema.SIDE_INFO_VERSION,
        gallery_schema.LABEL,
    ):
        assert back[column].equals(src[column]), column
    assert (
        matrix(back, gallery_schema.EMBEDDING).view(np.uint32).tolist()
        == matrix(src, gallery_schema.EMBEDDING).view(np.uint32).tolist()
    )
    assert set(back[SOURCE_URI].to_pylist()) == {str((tmp_path / "src").resolve())}
    assert (
        gallery_schema.UNCERTAINTY not in back.schema.names
        and gallery_schema.BACKFILLED not in back.schema.names
    )


def test_partial_backfill_columns_survive_pgvector(pg_server: PgServer, tmp_path: Path) -> None:
    """An upgraded, partly backfilled gallery keeps ``uncertainty`` (bit for bit) and
    ``backfilled`` through pgvector; a table written before those columns existed reads back
    without them and can still be served."""
    rows = synthetic_rows(90, seed=5)
    rng = np.random.default_rng(5)
    batch = make_batch(
        rows.ids, rows.old, model_version=1, side_info=rows.side, side_info_version=SIDE,
        labels=rows.labels,
    )  # fmt: skip
    unc = rng.standard_normal(90).astype(np.float32)
    unc[3] = np.float32(1e-45)  # subnormal: the text form must still be exact
    unc[4] = np.float32(-3.4e38)
    batch = batch.append_column(
        gallery_schema.uncertainty_field(), pa.array(unc, pa.float32(), mask=np.arange(90) % 7 == 0)
    )
    batch = batch.append_column(
        gallery_schema.backfilled_field(), pa.array(unc > 0.5, mask=unc < -1)
    )
    writer = GalleryWriter(open_storage(tmp_path / "src"), FAMILY, shard_rows=40)
    writer.write(batch)
    writer.close()
    url = pg_server.gallery()
    copy_gallery(str(tmp_path / "src"), url, index=False)
    copy_gallery(url, str(tmp_path / "back"))
    src = pa.Table.from_batches(list(Gallery.open(tmp_path / "src").batches())).sort_by(
        gallery_schema.ID
    )
    back = pa.Table.from_batches(list(Gallery.open(tmp_path / "back").batches()))
    assert back[gallery_schema.BACKFILLED].equals(src[gallery_schema.BACKFILLED])
    got, want = (
        back[gallery_schema.UNCERTAINTY].combine_chunks(),
        src[gallery_schema.UNCERTAINTY].combine_chunks(),
    )
    assert got.is_null().equals(want.is_null())
    bits = lambda a: a.fill_null(0).to_numpy(zero_copy_only=False).view(np.uint32)  # noqa: E731
    assert bits(got).tolist() == bits(want).tolist()

    loc = PgLocation.parse(url)  # a table from before the columns: drop them, serve it again
    with contextlib.closing(connect(loc)) as conn:
        table = served(conn, loc).table
        with conn.cursor() as cur:
            cur.execute(f"DROP VIEW {loc.gallery}")
            cur.execute(f"ALTER TABLE {table} DROP COLUMN uncertainty, DROP COLUMN backfilled")
        swap(conn, loc, table)
    old = read_all(url)
    assert gallery_schema.UNCERTAINTY not in old.schema.names and old.num_rows == 90


def test_pgvector_to_s3_and_back(pg_server: PgServer, s3: S3) -> None:
    rows = synthetic_rows(120, seed=3)
    url = pg_server.gallery()
    load_rows(url, rows.ids, rows.old, rows.side, labels=rows.labels)
    copy_gallery(url, s3.uri("g/v1"))
    assert Gallery.open(s3.uri("g/v1")).manifest.rows == 120
    again = pg_server.gallery()
    copy_gallery(s3.uri("g/v1"), again)
    a, b = read_all(url), read_all(again)
    assert a[gallery_schema.ID].equals(b[gallery_schema.ID]) and a[gallery_schema.EMBEDDING].equals(
        b[gallery_schema.EMBEDDING]
    )
    assert a[gallery_schema.SIDE_INFO].equals(b[gallery_schema.SIDE_INFO]) and a[
        gallery_schema.LABEL
    ].equals(b[gallery_schema.LABEL])


# --- search --------------------------------------------------------------------------------------


def _brute_force(gallery: np.ndarray, queries: np.ndarray, k: int, distance: str) -> np.ndarray:
    if distance == "cosine":
        g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1 - q @ g.T
    else:
        d = np.linalg.norm(queries[:, None, :] - gallery[None, :, :], axis=2)
    return np.argsort(d, axis=1, kind="stable")[:, :k], np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_exact_search_is_brute_force_and_hnsw_recalls_it(
    pg_server: PgServer, distance: str
) -> None:
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((20, 16)).astype(np.float32) * 3
    gallery = (centers[rng.integers(0, 20, 1500)] + rng.standard_normal((1500, 16))).astype(
        np.float32
    )
    queries = (centers[rng.integers(0, 20, 30)] + rng.standard_normal((30, 16))).astype(np.float32)
    ids = [f"r{i:05d}" for i in range(len(gallery))]
    url = pg_server.gallery()
    batch = make_batch(ids, gallery, model_version=1)
    write.write_gallery(
        PgLocation.parse(url), iter([batch]), family="tiny", source_uri="t", rows=1500,
        groups={(1, None): 1500}, embedding_dim=16, side_info_dim=None, labels=False,
        distance=distance,
    )  # fmt: skip
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as conn:
        exact = search(conn, loc, queries, k=10, exact=True)
        hnsw = search(conn, loc, queries, k=10, ef_search=100)
        low = search(conn, loc, queries, k=10, ef_search=10)
    want, want_d = _brute_force(gallery, queries, 10, distance)
    assert (np.vectorize(lambda s: int(s[1:]))(exact.ids) == want).mean() > 0.99  # ties aside
    np.testing.assert_allclose(exact.distances, want_d, rtol=1e-4, atol=1e-4)
    assert recall_at_k(hnsw.ids, exact.ids) >= 0.95
    assert recall_at_k(low.ids, exact.ids) <= recall_at_k(hnsw.ids, exact.ids)


# --- the commands ------------------------------------------------------------------------------


def test_fct_gallery_and_search_commands(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = synthetic_rows(300, seed=5)
    write_gallery(tmp_path / "g", rows)
    url = pg_server.gallery()
    assert main(["gallery", "copy", str(tmp_path / "g"), url, "--hnsw-m", "8"]) == 0
    assert "copied 300 rows" in capsys.readouterr().out
    assert main(["gallery", "list", url]) == 0
    listing = capsys.readouterr().out
    assert "served" in listing and "300 rows" in listing and "tiny" in listing
    args = ["search", "--gallery", url, "--query-gallery", str(tmp_path / "g"), "--exclude-self"]
    assert main([*args, "--limit", "20", "--recall-queries", "20"]) == 0
    out = capsys.readouterr().out
    assert "queries/s" in out and "recall@10 of HNSW against exact search" in out
    assert "top-1" in out  # labels on both sides: CMC accuracy as `fct search` prints it
    assert main([*args, "--limit", "5", "--exact", "--show", "0"]) == 0
    assert "exact" in capsys.readouterr().out
    assert main(["gallery", "rollback", url]) == 2  # never swapped
    assert "no earlier table" in capsys.readouterr().err
    assert main(["gallery", "copy", str(tmp_path / "g"), url]) == 0  # a second table
    assert main(["gallery", "prune", url, "--dry-run"]) == 0
    assert "would drop 1 table" in capsys.readouterr().out.splitlines()[-2]
    assert main(["gallery", "rollback", url]) == 0
    assert main(["gallery", "prune", url]) == 0
    assert "dropped 1 table" in capsys.readouterr().out


def test_fct_gallery_server_starts_and_stops(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    import tempfile

    pytest.importorskip("pgserver")
    folder = Path(tempfile.mkdtemp(prefix="fct-pgcli-"))
    folder.chmod(0o755)
    try:
        assert main(["gallery", "server", str(folder / "data")]) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith("postgresql://") and str(folder) in url
        with contextlib.closing(connect(PgLocation.parse(url + "&gallery=x"))):
            pass  # pgvector is there
        assert main(["gallery", "server", str(folder / "data"), "--stop"]) == 0
        with pytest.raises(PgUnreachableError):
            connect(PgLocation.parse(url + "&gallery=x"))
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


# --- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def debian_pg(postgres: object) -> object:  # noqa: F811  (the imported fixture)
    """Debian's PostgreSQL 15 (no pgvector package): tests/support/services.py's role and
    database."""
    return postgres


def _debian_url(pg: object, password: str) -> str:
    from tests.support.services import PG_HOST, PG_PORT

    return f"postgresql://{pg.user}:{password}@{PG_HOST}:{PG_PORT}/{pg.database}?gallery=g"


def test_a_server_without_pgvector_is_named_with_the_fix(
    debian_pg: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(10))
    url = _debian_url(debian_pg, debian_pg.password)
    assert main(["gallery", "copy", str(tmp_path / "g"), url]) == 2
    err = capsys.readouterr().err
    assert "PostgreSQL 15 server" in err and "has no pgvector extension" in err
    assert "apt install postgresql-15-pgvector" in err and "fct gallery server" in err
    assert debian_pg.password not in err and "Traceback" not in err


def test_wrong_credentials_never_print_the_password(
    debian_pg: object, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = _debian_url(debian_pg, "Wr0ng-Pa55word")
    queries = tmp_path / "q.npy"
    np.save(queries, np.ones((2, 3), np.float32))
    args = ["search", "--gallery", url, "--query", str(queries), "--query-version", "1"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "refused the credentials" in captured.err and "password authentication failed" in (
        captured.err
    )
    for secret in ("Wr0ng-Pa55word", debian_pg.password):
        assert secret not in captured.err and secret not in captured.out


def test_a_missing_gallery_lists_the_known_ones(
    pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_server.gallery()
    load_rows(url, ["a", "b"], np.ones((2, 3), np.float32), None)
    name = PgLocation.parse(url).gallery
    missing = pg_server.gallery("nope")
    assert main(["gallery", "list", missing]) == 2
    err = capsys.readouterr().err
    assert "no gallery 'nope'" in err and name in err and "fct gallery copy" in err
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP VIEW {name}")  # dropped by hand: damaged, and said so
        conn.commit()
        with pytest.raises(NotFoundError, match="damaged: its view is gone"):
            served(conn, loc)


def test_a_gallery_name_taken_by_another_relation_is_refused(pg_server: PgServer) -> None:
    url = pg_server.gallery()
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE VIEW {loc.gallery} AS SELECT 1 AS x")  # someone else's view
        conn.commit()
    with pytest.raises(GalleryError, match="not an fct gallery"):
        load_rows(url, ["a"], np.ones((1, 3), np.float32), None)
    with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT x FROM {loc.gallery}")  # still there, untouched
        assert cur.fetchone() == (1,)
        assert gallery_tables(conn, loc.gallery) == []  # and nothing was created


def test_nan_vectors_are_refused_naming_the_row(pg_server: PgServer, tmp_path: Path) -> None:
    rows = synthetic_rows(20)
    rows.old[13, 2] = np.nan
    batch = make_batch(rows.ids, rows.old, model_version=1, side_info=rows.side,
                       side_info_version="s/1")  # fmt: skip
    storage = open_storage(tmp_path / "nan")  # written past GalleryWriter's own check
    info = write_shard(storage, "part-00000.parquet", batch.schema, [batch])
    storage.write_bytes(MANIFEST, Manifest("tiny", (info,)).to_json())
    url = pg_server.gallery()
    with pytest.raises(NonFiniteError, match=r"row 13 \(id 'item-00013'\) holds nan"):
        copy_gallery(str(tmp_path / "nan"), url)
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as conn:
        ensure_metadata(conn)
        assert gallery_tables(conn, loc.gallery) == []  # nothing half-written
    good = pg_server.gallery()
    load_rows(good, ["a", "b"], np.ones((2, 3), np.float32), None)
    loc = PgLocation.parse(good)
    with contextlib.closing(connect(loc)) as conn, pytest.raises(NonFiniteError):
        search(conn, loc, np.array([[1.0, np.nan, 0.0]], np.float32))


def test_a_dimension_other_than_the_tables_is_refused(pg_server: PgServer) -> None:
    url = pg_server.gallery()
    load_rows(url, ["a", "b"], np.ones((2, 3), np.float32), None)
    loc = PgLocation.parse(url)
    with (
        contextlib.closing(connect(loc)) as conn,
        pytest.raises(SchemaError, match=r"shape \[1, 4\] but .* holds 3-d embeddings"),
    ):
        search(conn, loc, np.ones((1, 4), np.float32))
    wide = make_batch(["c"], np.ones((1, 4), np.float32), model_version=1)
    with pytest.raises(SchemaError, match=r"vectors are 4-d, but .* reads 3-d"):
        write.write_gallery(
            PgLocation.parse(pg_server.gallery()), iter([wide]), family="tiny",
            source_uri="t", rows=1, groups={(1, None): 1}, embedding_dim=3, side_info_dim=None,
            labels=False,
        )  # fmt: skip
