"""PostgreSQL + pgvector as a gallery store: where retrieval systems actually serve galleries.

A location is a ``postgresql://`` URL naming the database plus ``gallery=NAME`` (the URL's other
parameters go to libpq unchanged), e.g. ``postgresql://app:PW@db:5432/search?gallery=fashion``
or, for the embedded server, ``postgresql://postgres:@/postgres?host=/srv/pg&gallery=fashion``.

Layout in the database (created on first use, in the connection's default schema):

* one table per gallery version, ``<gallery>__v<version>_<tag>``: ``id`` (primary key, C
  collation so keyset paging is byte order), ``embedding vector(d)``, ``side_info
  vector(d_s)``, ``model_version``, ``side_info_version`` (the extractor), ``source_uri``,
  ``label``, and the partial-backfill columns ``uncertainty`` (the log-variance an
  uncertainty-aware transformation predicted) and ``backfilled``; an HNSW index on ``embedding``
  with the gallery's distance;
* a view named ``<gallery>``: the alias readers query. A swap replaces it in one transaction, so
  a reader sees the old table or the new one, never a mix and never nothing;
* ``fct_gallery_tables``: what the Parquet manifest holds, per table (rows, widths, rows per
  (version, extractor), distance, provenance: chains and transformation checksums);
* ``fct_gallery_aliases``: the table each gallery serves, and the one before (for rollback).

Rows move as binary COPY in both directions: float32 vectors are written and read bit for bit
(pgvector's binary format is big-endian float4), so Parquet -> pgvector -> Parquet is lossless.
Every message names the server by :attr:`PgLocation.uri`, which never contains the password.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fct_registry.gallery import schema as S
from fct_registry.gallery.errors import (
    GalleryError,
    NonFiniteError,
    NotFoundError,
    SchemaError,
    StorageError,
    StorageUnreachableError,
)
from fct_registry.gallery.manifest import GroupKey, Manifest, ShardInfo
from fct_registry.gallery.reader import Gallery
from fct_registry.gallery.storage import open_storage
from fct_registry.gallery.writer import GalleryWriter

SCHEMES = ("postgresql://", "postgres://")
SOURCE_URI = "source_uri"
TABLES = "fct_gallery_tables"
ALIASES = "fct_gallery_aliases"
DISTANCE_OPS = {"l2": ("vector_l2_ops", "<->"), "cosine": ("vector_cosine_ops", "<=>")}
DEFAULT_DISTANCE = "l2"  # params.yaml evaluation.distance's default
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 16, 64, 40  # pgvector's defaults
READ_BATCH = 8192
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
_META_LOCK = 0x46435447  # advisory key serialising creation of the metadata tables ("FCTG")


# --- errors ------------------------------------------------------------------------------------


class PgError(StorageError):
    """A PostgreSQL server that cannot be used as a gallery store (message names the fix)."""


class PgAuthError(PgError):
    """The server refused the URL's credentials."""


class PgUnreachableError(PgError, StorageUnreachableError):
    """No server answers at the URL's host, port or socket."""


class PgvectorMissingError(PgError):
    """The server has no pgvector extension (``CREATE EXTENSION vector`` fails)."""


class GalleryBusyError(PgError):
    """Another job holds the gallery's advisory lock."""


# --- locations ---------------------------------------------------------------------------------


def is_pg_url(text: object) -> bool:
    return isinstance(text, str) and text.startswith(SCHEMES)


def redact(url: str) -> str:
    """``url`` with the password (user-info or ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if password else f"{user}@{host}"
    query = urlencode(
        [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, True)],
        safe="/",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class PgLocation:
    """A gallery in a PostgreSQL database. ``dsn`` holds the credentials: never print it."""

    dsn: str = field(repr=False)
    gallery: str
    uri: str  # redacted, with the gallery: what messages show

    @classmethod
    def parse(cls, url: str) -> PgLocation:
        if not is_pg_url(url):
            raise PgError(f"{url!r} is not a postgresql:// URL")
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True)
        names = [v for k, v in params if k == "gallery"]
        rest = [(k, v) for k, v in params if k != "gallery"]
        shown = redact(url)
        if len(names) != 1 or not _NAME.match(names[0]):
            raise PgError(
                f"{shown}: name the gallery with one gallery=NAME parameter (lower-case "
                "letters, digits and _, at most 40, not starting with a digit), e.g. "
                "postgresql://user@host/db?gallery=fashion"
            )
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest, safe="/"), ""))
        return cls(dsn, names[0], shown)

    def with_gallery(self, name: str) -> PgLocation:
        parts = urlsplit(self.uri)
        query = [(k, v) for k, v in parse_qsl(parts.query, True) if k != "gallery"]
        query.append(("gallery", name))
        shown = urlunsplit(parts._replace(query=urlencode(query, safe="/")))
        return PgLocation(self.dsn, name, shown)

    @property
    def server(self) -> str:
        """The redacted URL without the gallery (the database)."""
        parts = urlsplit(self.uri)
        query = [(k, v) for k, v in parse_qsl(parts.query, True) if k != "gallery"]
        return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def _scrub(text: str, loc: PgLocation) -> str:
    """A driver message with any secret of ``loc`` removed (libpq may echo parts of the DSN)."""
    password = urlsplit(loc.dsn).password
    secrets = [password] if password else []
    secrets += [v for k, v in parse_qsl(urlsplit(loc.dsn).query, True) if k == "password"]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text.strip().replace("\n", " ")


def connect(loc: PgLocation, *, autocommit: bool = False, check_vector: bool = True) -> Any:
    """A psycopg2 connection to ``loc``'s database; errors say what to fix, without secrets.

    ``client_connection_check_interval`` makes the server notice a client killed mid-statement
    (kill -9 during an index build) and release its locks within a second, so a rerun can resume.
    """
    import psycopg2

    try:
        conn = psycopg2.connect(loc.dsn, connect_timeout=10, application_name="fct")
    except psycopg2.OperationalError as exc:
        raise _connect_error(exc, loc) from None
    except psycopg2.ProgrammingError as exc:  # a malformed URL
        raise PgError(
            f"{loc.uri} is not a usable PostgreSQL URL ({_scrub(str(exc), loc)})"
        ) from None
    conn.autocommit = True
    with conn.cursor() as cur:
        if conn.server_version >= 140000:
            cur.execute("SET client_connection_check_interval = '250ms'")
    if check_vector:
        ensure_vector(conn, loc)
    conn.autocommit = autocommit
    return conn


def _connect_error(exc: Exception, loc: PgLocation) -> PgError:
    text = _scrub(str(exc), loc)
    low = text.lower()
    if "password" in low or "authentication" in low or ("role" in low and "not exist" in low):
        return PgAuthError(
            f"PostgreSQL at {loc.server} refused the credentials ({text}); fix the user or "
            "password in the URL (the password is never shown), or grant the role access"
        )
    if "database" in low and "does not exist" in low:
        return PgError(
            f"{text} at {loc.server}; create it (createdb, or CREATE DATABASE) or fix the URL"
        )
    return PgUnreachableError(
        f"cannot reach PostgreSQL at {loc.server} ({text}); start the server (embedded: "
        "`fct gallery server DIR`) or fix the host, port or socket in the URL"
    )


@contextlib.contextmanager
def driver_errors(loc: PgLocation, what: str) -> Iterator[None]:
    """Turn psycopg2's errors into :class:`PgError` naming ``what`` failed and the fix, with
    secrets scrubbed: a lost server (killed, restarted) says that rerunning resumes."""
    import psycopg2

    try:
        yield
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise PgUnreachableError(
            f"lost the connection to PostgreSQL at {loc.server} while {what} "
            f"({_scrub(str(exc), loc) or type(exc).__name__}); work committed so far is kept: "
            "rerun the same command once the server is back"
        ) from None
    except psycopg2.Error as exc:
        raise PgError(
            f"PostgreSQL at {loc.server} failed while {what}: "
            f"{_scrub(exc.pgerror or str(exc), loc)}"
        ) from None


def ensure_vector(conn: Any, loc: PgLocation) -> str:
    """pgvector's version; creates the extension in the database when it is available."""
    import psycopg2

    with conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cur.fetchone()
        if row:
            return str(row[0])
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg2.Error as exc:
            conn.rollback() if not conn.autocommit else None
            server = conn.server_version
            major = server // 10000
            if exc.pgcode == "42501":  # insufficient privilege
                raise PgvectorMissingError(
                    f"{loc.server}: pgvector is installed on the server but not in this "
                    "database, and this role may not create it; ask an administrator to run "
                    "CREATE EXTENSION vector in it"
                ) from None
            raise PgvectorMissingError(
                f"the PostgreSQL {major} server at {loc.server} has no pgvector extension "
                f"({_scrub(exc.pgerror or str(exc), loc)}); install it on the server (Debian: "
                f"apt install postgresql-{major}-pgvector) or use the embedded server with "
                "pgvector (`fct gallery server DIR`)"
            ) from None
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        return str(cur.fetchone()[0])


def ensure_metadata(conn: Any) -> None:
    """Create the metadata tables once per database (serialised: concurrent first uses race)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s), to_regclass(%s)", (TABLES, ALIASES))
        if all(cur.fetchone()):
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_META_LOCK,))
        cur.execute(
            f"""
            CREATE TABLE IF NOT EXISTS {TABLES} (
                table_name text PRIMARY KEY,
                gallery text NOT NULL,
                family text NOT NULL,
                rows bigint NOT NULL,
                embedding_dim integer NOT NULL,
                side_info_dim integer,
                labels boolean NOT NULL,
                distance text NOT NULL,
                groups jsonb NOT NULL,
                provenance jsonb,
                state text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE IF NOT EXISTS {ALIASES} (
                gallery text PRIMARY KEY,
                table_name text NOT NULL REFERENCES {TABLES},
                previous text REFERENCES {TABLES},
                swapped_at timestamptz NOT NULL DEFAULT now()
            );
            """
        )
    if not conn.autocommit:
        conn.commit()


# --- metadata ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableInfo:
    """One row of ``fct_gallery_tables``: what a version's table holds."""

    table: str
    gallery: str
    family: str
    rows: int
    embedding_dim: int
    side_info_dim: int | None
    labels: bool
    distance: str
    groups: dict[GroupKey, int]
    provenance: dict[str, Any] | None = None
    state: str = "ready"

    @property
    def versions(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for (v, _), n in self.groups.items():
            out[v] = out.get(v, 0) + n
        return dict(sorted(out.items()))

    def manifest(self) -> Manifest:
        """The table as a one-shard manifest, so upgrade planning treats both stores alike."""
        shard = ShardInfo(
            self.table, self.rows, "", 0, self.embedding_dim, self.side_info_dim, self.groups
        )
        return Manifest(self.family, (shard,), self.provenance)


_COLUMNS = (
    "table_name, gallery, family, rows, embedding_dim, side_info_dim, labels, distance, "
    "groups, provenance, state"
)


def _groups_json(groups: dict[GroupKey, int]) -> str:
    return json.dumps(
        [
            {"model_version": v, "side_info_version": s, "rows": n}
            for (v, s), n in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        ]
    )


def _info(row: tuple) -> TableInfo:
    groups = {(int(g["model_version"]), g["side_info_version"]): int(g["rows"]) for g in row[8]}
    return TableInfo(
        row[0], row[1], row[2], int(row[3]), int(row[4]), row[5], bool(row[6]), row[7],
        groups, row[9], row[10],
    )  # fmt: skip


def table_info(conn: Any, table: str) -> TableInfo | None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM {TABLES} WHERE table_name = %s", (table,))
        row = cur.fetchone()
    return None if row is None else _info(row)


def gallery_tables(conn: Any, gallery: str) -> list[TableInfo]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM {TABLES} WHERE gallery = %s ORDER BY created_at, table_name",
            (gallery,),
        )
        return [_info(r) for r in cur.fetchall()]


def alias(conn: Any, gallery: str) -> tuple[str, str | None] | None:
    """``(served table, previous table)`` of ``gallery``, or None when there is no such gallery."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT table_name, previous FROM {ALIASES} WHERE gallery = %s", (gallery,))
        row = cur.fetchone()
    return None if row is None else (row[0], row[1])


def galleries(conn: Any) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT gallery FROM {ALIASES} ORDER BY gallery")
        return [r[0] for r in cur.fetchall()]


def served(conn: Any, loc: PgLocation) -> TableInfo:
    """The table ``loc``'s gallery serves now; a missing gallery lists the ones there are."""
    ensure_metadata(conn)
    found = alias(conn, loc.gallery)
    if found is None:
        known = ", ".join(galleries(conn)) or "none"
        raise NotFoundError(
            f"no gallery {loc.gallery!r} in {loc.server} (galleries there: {known}); create "
            "it with `fct gallery copy PARQUET_GALLERY URL` or `fct embed --out URL`"
        )
    info = table_info(conn, found[0])
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s), to_regclass(%s)", (loc.gallery, found[0]))
        view, table = cur.fetchone()
    if info is None or view is None or table is None:
        missing = "view" if view is None else f"table {found[0]}"
        raise NotFoundError(
            f"gallery {loc.gallery!r} in {loc.server} is damaged: its {missing} is gone "
            "(dropped by hand?); `fct gallery rollback` to the previous table, or re-create "
            "it with `fct gallery copy`"
        )
    return info


def table_name(gallery: str, version: int | str, tag: str) -> str:
    return f"{gallery}__v{version}_{tag[:8]}"


# --- binary COPY encoding ----------------------------------------------------------------------


def _fixed(values: np.ndarray) -> pa.Array:
    """Rows of a uint8 ``[n, w]`` matrix as a binary array (one value per row)."""
    values = np.ascontiguousarray(values, dtype=np.uint8)
    n, width = values.shape
    arr = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(values.reshape(-1))]
    )
    return arr.cast(pa.binary())


def _vector_field(matrix: np.ndarray) -> pa.Array:
    """pgvector's binary send format with COPY's length word: len, dim (int16), 0, floats BE."""
    n, d = matrix.shape
    out = np.empty((n, 8 + 4 * d), dtype=np.uint8)
    out[:, :8] = np.frombuffer(struct.pack("!ihh", 4 + 4 * d, d, 0), dtype=np.uint8)
    out[:, 8:] = np.ascontiguousarray(matrix, dtype=">f4").view(np.uint8).reshape(n, 4 * d)
    return _fixed(out)


def _scalar_field(values: np.ndarray, fmt: str, valid: np.ndarray | None = None) -> pa.Array:
    """Fixed-width binary values (``fmt``: a big-endian NumPy type) with COPY's length word;
    NULL where ``valid`` is False."""
    width = np.dtype(fmt).itemsize
    out = np.empty((len(values), 4 + width), dtype=np.uint8)
    out[:, :4] = np.frombuffer(struct.pack("!i", width), dtype=np.uint8)
    out[:, 4:] = np.ascontiguousarray(values, dtype=fmt).view(np.uint8).reshape(-1, width)
    arr = _fixed(out)
    if valid is not None and not valid.all():
        arr = pc.if_else(pa.array(valid), arr, pa.scalar(_NULL, pa.binary()))
    return arr


def _text_field(values: pa.Array) -> pa.Array:
    values = values.cast(pa.string())
    lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False)
    prefix = _fixed(lengths.astype(">i4").view(np.uint8).reshape(-1, 4))
    joined = pc.binary_join_element_wise(prefix, values.cast(pa.binary()), b"")
    return joined.fill_null(pa.scalar(_NULL, pa.binary()))


def _concat(fields: list[pa.Array]) -> memoryview:
    """Each row's field count and fields, rows back to back: the join's data buffer itself."""
    n = len(fields[0])
    count = _fixed(np.tile(np.frombuffer(struct.pack("!h", len(fields)), np.uint8), (n, 1)))
    rows = pc.binary_join_element_wise(count, *fields, b"")
    offsets_buf, data_buf = rows.buffers()[1], rows.buffers()[2]
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[rows.offset : rows.offset + n + 1]
    return memoryview(data_buf)[int(offsets[0]) : int(offsets[-1])]


class _Stream(io.RawIOBase):
    """A read-only file over a few buffers, so COPY sends them without joining them first."""

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self._parts = [memoryview(p).cast("B") for p in parts]
        self._i = self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = []
        while self._i < len(self._parts) and (size < 0 or size > 0):
            part = self._parts[self._i][self._pos :]
            take = part if size < 0 else part[:size]
            out.append(bytes(take))
            self._pos += len(take)
            size -= len(take) if size > 0 else 0
            if self._pos >= len(self._parts[self._i]):
                self._i, self._pos = self._i + 1, 0
        return b"".join(out)


COPY_COLUMNS = (
    S.ID, S.EMBEDDING, S.SIDE_INFO, S.MODEL_VERSION, S.SIDE_INFO_VERSION, SOURCE_URI, S.LABEL,
    S.UNCERTAINTY, S.BACKFILLED,
)  # fmt: skip
OPTIONAL_COLUMNS = {S.UNCERTAINTY: "real", S.BACKFILLED: "boolean"}
"""Partial-backfill columns: null unless the rows have them. Tables written before they existed
lack them; readers and the view then see NULLs (:func:`_select_optional`)."""


def encode_copy(batch: pa.RecordBatch, source_uri: str | None, where: str) -> list[Any]:
    """The parts of one binary COPY stream (header, rows, trailer) for a gallery batch, built
    column-wise.

    Vectors are checked finite first (pgvector refuses NaN, and a half-written batch would be
    rolled back anyway): the error names the row. ``source_uri`` fills rows without one.
    """
    n = batch.num_rows
    names = batch.schema.names
    emb = S.vectors(batch, S.EMBEDDING, where)
    fields = [_text_field(batch.column(S.ID)), _vector_field(emb)]
    if S.SIDE_INFO in names:
        fields.append(_vector_field(S.vectors(batch, S.SIDE_INFO, where)))
    else:
        fields.append(pa.array([_NULL] * n, pa.binary()))
    fields.append(_scalar_field(S.int_column(batch, S.MODEL_VERSION, where), ">i4"))
    side_v = batch.column(S.SIDE_INFO_VERSION) if S.SIDE_INFO_VERSION in names else None
    fields.append(_text_field(side_v if side_v is not None else pa.nulls(n, pa.string())))
    src = batch.column(SOURCE_URI) if SOURCE_URI in names else pa.nulls(n, pa.string())
    if source_uri is not None:
        src = pc.fill_null(src.cast(pa.string()), source_uri)
    fields.append(_text_field(src))
    for column, fmt, dtype in (
        (S.LABEL, ">i8", np.int64),
        (S.UNCERTAINTY, ">f4", np.float32),
        (S.BACKFILLED, "u1", np.uint8),
    ):
        if column in names:
            values = batch.column(column).cast(pa.from_numpy_dtype(dtype))  # bool -> 0/1
            valid = values.is_valid().to_numpy(zero_copy_only=False)
            filled = values.fill_null(0).to_numpy(zero_copy_only=False)
            fields.append(_scalar_field(filled, fmt, valid))
        else:
            fields.append(pa.array([_NULL] * n, pa.binary()))
    return [_COPY_HEADER, _concat(fields), _COPY_TRAILER]


def copy_in(cur: Any, table: str, batch: pa.RecordBatch, source_uri: str | None, where: str):
    parts = encode_copy(batch, source_uri, where)
    cur.copy_expert(
        f"COPY {table} ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT binary)",
        _Stream(parts),
        size=1 << 20,
    )


# --- tables ------------------------------------------------------------------------------------


def create_table(cur: Any, info: TableInfo) -> None:
    """The version's table (no index yet: COPY into an unindexed table is much faster)."""
    side = f"vector({info.side_info_dim})" if info.side_info_dim else "vector"
    cur.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {info.table} (
            id text COLLATE "C" PRIMARY KEY,
            embedding vector({info.embedding_dim}) NOT NULL,
            side_info {side},
            model_version integer NOT NULL,
            side_info_version text,
            source_uri text,
            label bigint,
            uncertainty real,
            backfilled boolean
        )"""
    )
    cur.execute(
        f"""INSERT INTO {TABLES} ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)
            ON CONFLICT (table_name) DO NOTHING""",
        (
            info.table, info.gallery, info.family, info.rows, info.embedding_dim,
            info.side_info_dim, info.labels, info.distance, _groups_json(info.groups),
            None if info.provenance is None else json.dumps(info.provenance), "building",
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class HnswParams:
    m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION
    maintenance_work_mem: str = "1GB"  # the graph must fit, or the build slows down a lot


def build_index(conn: Any, table: str, distance: str, params: HnswParams | None = None) -> float:
    """Build the HNSW index on ``embedding`` with ``distance``'s operator class; seconds taken.
    Idempotent: an index already built (by an interrupted run) is kept."""
    params = params or HnswParams()
    ops = DISTANCE_OPS[check_distance(distance)][0]
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = %s", (params.maintenance_work_mem,))
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding {ops}) "
            f"WITH (m = {int(params.m)}, ef_construction = {int(params.ef_construction)})"
        )
        cur.execute("RESET maintenance_work_mem")
    if not conn.autocommit:
        conn.commit()
    return time.perf_counter() - start


def check_distance(distance: str) -> str:
    if distance not in DISTANCE_OPS:
        raise GalleryError(f"unknown distance {distance!r}; known: {', '.join(DISTANCE_OPS)}")
    return distance


def count_rows(conn: Any, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return int(cur.fetchone()[0])


def swap(conn: Any, loc: PgLocation, table: str, *, extra: list[tuple[str, tuple]] = ()) -> None:
    """Point ``loc``'s view at ``table`` in one transaction (with ``extra`` statements, e.g. a
    job's completion): readers see the old table or the new one, never a mix or nothing.

    DROP + CREATE rather than CREATE OR REPLACE: the new version may have another width, which
    a replaced view may not change. A reader waiting on the view's lock re-resolves its name
    after the commit and reads the new table.
    """
    cols = "id, embedding, side_info, model_version, side_info_version, source_uri, label"
    with conn.cursor() as cur:
        cols += ", " + ", ".join(_select_optional(cur, table))
        cur.execute(
            f"SELECT table_name FROM {ALIASES} WHERE gallery = %s FOR UPDATE", (loc.gallery,)
        )
        row = cur.fetchone()
        old = row[0] if row else None
        if old is None:  # never drop what fct did not create
            check_name_free(conn, loc)
        cur.execute(f"DROP VIEW IF EXISTS {loc.gallery}")
        cur.execute(f"CREATE VIEW {loc.gallery} AS SELECT {cols} FROM {table}")
        cur.execute(f"UPDATE {TABLES} SET state = 'ready' WHERE table_name = %s", (table,))
        if old is None:
            cur.execute(
                f"INSERT INTO {ALIASES} (gallery, table_name) VALUES (%s, %s)",
                (loc.gallery, table),
            )
        elif old != table:
            cur.execute(
                f"UPDATE {ALIASES} SET table_name = %s, previous = %s, swapped_at = now() "
                "WHERE gallery = %s",
                (table, old, loc.gallery),
            )
        for sql, params in extra:
            cur.execute(sql, params)
    conn.commit()


def _select_optional(cur: Any, table: str) -> list[str]:
    """The :data:`OPTIONAL_COLUMNS` as ``table`` has them: the column, or a typed NULL where a
    table written before they existed lacks it."""
    cur.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    have = {row[0] for row in cur.fetchall()}
    return [c if c in have else f"NULL::{t} AS {c}" for c, t in OPTIONAL_COLUMNS.items()]


def _filled_optional(cur: Any, table: str) -> list[str]:
    """The :data:`OPTIONAL_COLUMNS` that hold a value in some row of ``table`` (a gallery that
    was never upgraded through an uncertainty-aware chain reads back without the column)."""
    present = []
    for column, select in zip(OPTIONAL_COLUMNS, _select_optional(cur, table), strict=True):
        if select != column:
            continue
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} IS NOT NULL)")
        if cur.fetchone()[0]:
            present.append(column)
    return present


def check_name_free(conn: Any, loc: PgLocation) -> None:
    """A new gallery's name must not be taken by a table or view fct did not create."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM {ALIASES} WHERE gallery = %s", (loc.gallery,))
        if cur.fetchone():
            return
        cur.execute("SELECT to_regclass(%s)", (loc.gallery,))
        taken = cur.fetchone()[0] is not None
    if taken:
        conn.rollback()
        raise GalleryError(
            f"{loc.server} already has a table or view named {loc.gallery!r} that is not an "
            "fct gallery; choose another gallery=NAME"
        )


def rollback(loc: PgLocation) -> tuple[str, str]:
    """Serve the table served before the last swap again; returns ``(from, to)``."""
    with contextlib.closing(connect(loc)) as conn, driver_errors(loc, "rolling back"):
        info = served(conn, loc)
        _, previous = alias(conn, loc.gallery) or (None, None)
        if previous is None or table_info(conn, previous) is None:
            raise GalleryError(
                f"{loc.uri} has no earlier table to roll back to (never swapped, or pruned)"
            )
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (previous,))
            if cur.fetchone()[0] is None:
                raise NotFoundError(f"{loc.uri}: the previous table {previous} was dropped")
        swap(conn, loc, previous)
        return info.table, previous


def prune(loc: PgLocation, *, dry_run: bool = False) -> list[str]:
    """Drop every table of the gallery except the one it serves (no rollback past this)."""
    with contextlib.closing(connect(loc)) as conn, driver_errors(loc, "pruning"):
        current = served(conn, loc).table
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock_key(loc),))
            if not cur.fetchone()[0]:
                raise GalleryBusyError(
                    f"{loc.uri} is being upgraded; prune once the upgrade has finished"
                )
        gone = [t.table for t in gallery_tables(conn, loc.gallery) if t.table != current]
        if dry_run:
            return gone
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {ALIASES} SET previous = NULL WHERE gallery = %s", (loc.gallery,))
            for table in gone:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
                cur.execute(f"DELETE FROM {TABLES} WHERE table_name = %s", (table,))
            cur.execute("SELECT to_regclass('fct_gallery_jobs')")
            if cur.fetchone()[0] is not None and gone:
                cur.execute(
                    "DELETE FROM fct_gallery_jobs WHERE target_table = ANY(%s)", (list(gone),)
                )
        conn.commit()
        return gone


def lock_key(loc: PgLocation) -> str:
    return f"fct-gallery:{loc.gallery}"


# --- reading -----------------------------------------------------------------------------------


def read_batches(
    conn: Any, info: TableInfo, *, batch_size: int = READ_BATCH, after: str | None = None
) -> Iterator[pa.RecordBatch]:
    """The table's rows in id order, ``batch_size`` at a time (keyset paging: each page is an
    index range scan, however deep), as gallery-schema batches plus ``source_uri``.

    Vectors come through a binary COPY of fixed-width rows (parsed as one NumPy block, no
    per-row objects); the text columns of the same page through an ordinary query.
    """
    d, ds = info.embedding_dim, info.side_info_dim
    vec_cols = f"embedding{', side_info' if ds else ''}"
    width = 2 + 8 + 4 * d + ((8 + 4 * ds) if ds else 0)
    with conn.cursor() as cur:
        optional = _filled_optional(cur, info.table)
    text_cols = ", ".join(["id, model_version, side_info_version, source_uri, label", *optional])
    schema = S.gallery_schema(d, ds, labels=info.labels).append(pa.field(SOURCE_URI, pa.string()))
    for column in optional:
        schema = schema.append(
            S.uncertainty_field() if column == S.UNCERTAINTY else S.backfilled_field()
        )
    last = after
    while True:
        where, params = ("WHERE id > %s", (last,)) if last is not None else ("", ())
        page = f"FROM {info.table} {where} ORDER BY id LIMIT {int(batch_size)}"
        with conn.cursor() as cur:
            text, vecs = io.BytesIO(), io.BytesIO()
            cur.copy_expert(
                cur.mogrify(
                    f"COPY (SELECT {text_cols} {page}) TO STDOUT WITH (FORMAT csv)", params
                ).decode(),
                text,
            )
            if not text.getbuffer().nbytes:
                return
            cur.copy_expert(
                cur.mogrify(
                    f"COPY (SELECT {vec_cols} {page}) TO STDOUT WITH (FORMAT binary)", params
                ).decode(),
                vecs,
            )
        meta = _read_csv(text, optional)
        n = meta.num_rows
        raw = np.frombuffer(vecs.getbuffer(), dtype=np.uint8)[len(_COPY_HEADER) : -2]
        if raw.size != n * width:
            raise GalleryError(
                f"{info.table}: the page after id {last!r} changed while it was read "
                "(is the table written to?); rerun"
            )
        raw = raw.reshape(n, width)
        columns: dict[str, pa.Array] = {
            S.ID: meta.column(S.ID).combine_chunks(),
            S.EMBEDDING: S.vectors_array(_be_floats(raw[:, 10 : 10 + 4 * d])),
        }
        if ds:
            start = 10 + 4 * d + 8
            columns[S.SIDE_INFO] = S.vectors_array(_be_floats(raw[:, start : start + 4 * ds]))
        columns[S.MODEL_VERSION] = meta.column(S.MODEL_VERSION).combine_chunks()
        columns[S.SIDE_INFO_VERSION] = meta.column(S.SIDE_INFO_VERSION).combine_chunks()
        if info.labels:
            columns[S.LABEL] = meta.column(S.LABEL).combine_chunks()
        columns[SOURCE_URI] = meta.column(SOURCE_URI).combine_chunks()
        for column in optional:
            columns[column] = meta.column(column).combine_chunks()
        yield pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)
        last = columns[S.ID][-1].as_py()
        if n < batch_size:
            return


def _be_floats(block: np.ndarray) -> np.ndarray:
    """Big-endian float4 bytes ``[n, 4 d]`` (a strided view) as a float32 ``[n, d]`` matrix."""
    return np.ascontiguousarray(block).view(">f4").astype(np.float32)


def _read_csv(data: io.BytesIO, optional: list[str]) -> pa.Table:
    """COPY's CSV of the text columns: an unquoted empty field is NULL, a quoted one is ''.
    ``real`` prints its shortest exact digits (PostgreSQL >= 12), so float32 reads back bit for
    bit; booleans print as t/f."""
    from pyarrow import csv

    names = [S.ID, S.MODEL_VERSION, S.SIDE_INFO_VERSION, SOURCE_URI, S.LABEL, *optional]
    types = {
        S.ID: pa.string(),
        S.MODEL_VERSION: pa.int32(),
        S.SIDE_INFO_VERSION: pa.string(),
        SOURCE_URI: pa.string(),
        S.LABEL: pa.int64(),
        S.UNCERTAINTY: pa.float32(),
        S.BACKFILLED: pa.bool_(),
    }
    data.seek(0)
    return csv.read_csv(
        data,
        read_options=csv.ReadOptions(column_names=names, use_threads=False),
        parse_options=csv.ParseOptions(newlines_in_values=True),
        convert_options=csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


# --- writing a whole gallery -------------------------------------------------------------------


def write_gallery(
    loc: PgLocation,
    batches: Iterator[pa.RecordBatch],
    *,
    family: str,
    source_uri: str,
    rows: int,
    groups: dict[GroupKey, int],
    embedding_dim: int,
    side_info_dim: int | None,
    labels: bool,
    distance: str = DEFAULT_DISTANCE,
    provenance: dict[str, Any] | None = None,
    hnsw: HnswParams | None = None,
    index: bool = True,
) -> tuple[TableInfo, float]:
    """Load ``batches`` into a new table, index it, check the count, then swap the view.

    One transaction for the rows (nothing is visible until it commits, so a failure leaves no
    half gallery), then the index, then the swap. A gallery of this name that exists keeps its
    old table (``fct gallery rollback``). Returns the table and the index build's seconds.
    ``index=False``: no HNSW index (exact search only, e.g. a gallery that is only upgraded).
    """
    check_distance(distance)
    versions = sorted({v for v, _ in groups})
    tag = uuid.uuid4().hex
    name = table_name(loc.gallery, versions[0] if len(versions) == 1 else "mixed", tag)
    info = TableInfo(
        name, loc.gallery, family, rows, embedding_dim, side_info_dim, labels, distance,
        groups, provenance,
    )  # fmt: skip
    with contextlib.closing(connect(loc)) as conn:
        ensure_metadata(conn)
        check_name_free(conn, loc)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock_key(loc),))
            if not cur.fetchone()[0]:
                raise GalleryBusyError(f"{loc.uri} is being written by another job; retry later")
            create_table(cur, info)
            written = 0
            for batch in batches:
                where = f"{source_uri} rows {written}..{written + batch.num_rows}"
                if batch.column(S.EMBEDDING).type != S.vector_type(embedding_dim):
                    S.vectors(batch, S.EMBEDDING, where, dim=embedding_dim)
                copy_in(cur, name, batch, source_uri, where)
                written += batch.num_rows
        conn.commit()
        index_seconds = build_index(conn, name, distance, hnsw) if index else 0.0
        got = count_rows(conn, name)
        if got != rows:
            raise GalleryError(
                f"{loc.uri}: {got} rows were loaded into {name} but the source has {rows}; "
                "the view was not swapped"
            )
        swap(conn, loc, name)
    return info, index_seconds


# --- moving galleries between stores ------------------------------------------------------------


@dataclass(frozen=True)
class CopyReport:
    source: str
    destination: str
    rows: int
    seconds: float
    index_seconds: float = 0.0
    table: str | None = None


def copy_gallery(
    source: str,
    dest: str,
    *,
    distance: str | None = None,
    hnsw: HnswParams | None = None,
    batch_size: int = READ_BATCH,
    index: bool = True,
    row_source: str | None = None,
) -> CopyReport:
    """Copy a gallery between Parquet (local or S3) and pgvector, either way (or between two
    databases). Vectors, ids, versions, extractors and labels are copied bit for bit; into
    pgvector the gallery gets a new table, an HNSW index and its view swapped last.
    ``row_source`` fills ``source_uri`` of rows that have none (default: the source's URI)."""
    if not is_pg_url(source) and not is_pg_url(dest):
        raise GalleryError(
            "one side of a copy must be a postgresql:// URL (Parquet to Parquet: copy the folder)"
        )
    loc = PgLocation.parse(source if is_pg_url(source) else dest)
    with driver_errors(loc, f"copying {redact(source)} to {redact(dest)}"):
        return _copy(source, dest, distance, hnsw, batch_size, index, row_source)


def _copy(
    source: str,
    dest: str,
    distance: str | None,
    hnsw: HnswParams | None,
    batch_size: int,
    index: bool,
    row_source: str | None,
) -> CopyReport:
    start = time.perf_counter()
    if is_pg_url(source):
        src_loc = PgLocation.parse(source)
        conn = connect(src_loc, autocommit=True)
        try:
            info = served(conn, src_loc)
            batches = read_batches(conn, info, batch_size=batch_size)
            if is_pg_url(dest):
                return _into_pg(
                    dest, batches, src_loc.uri, info.manifest(), info.labels,
                    distance or info.distance, hnsw, start, index, row_source,
                )  # fmt: skip
            storage = open_storage(dest)
            writer = GalleryWriter(storage, info.family)
            for batch in batches:
                writer.write(batch)
            classes = info.manifest().classes  # kept, so its labels stay comparable by name
            manifest = writer.close(
                None
                if classes is None
                else {"source": {"uri": src_loc.uri, "classes": list(classes)}}
            )
            return CopyReport(src_loc.uri, storage.uri, manifest.rows, time.perf_counter() - start)
        finally:
            conn.close()
    gallery = Gallery.open(source)
    with gallery.shard(gallery.manifest.shards[0]) as reader:
        labels = S.LABEL in reader.schema.names
    return _into_pg(
        dest, gallery.batches(batch_size), gallery.uri, gallery.manifest, labels,
        distance or DEFAULT_DISTANCE, hnsw, start, index, row_source,
    )  # fmt: skip


def _into_pg(
    dest: str,
    batches: Iterator[pa.RecordBatch],
    source_uri: str,
    manifest: Manifest,
    labels: bool,
    distance: str,
    hnsw: HnswParams | None,
    start: float,
    index: bool = True,
    row_source: str | None = None,
) -> CopyReport:
    loc = PgLocation.parse(dest)
    dims = {s.embedding_dim for s in manifest.shards}
    side_dims = {s.side_info_dim for s in manifest.shards}
    if len(dims) != 1 or len(side_dims) != 1:
        raise SchemaError(
            f"{source_uri} holds embeddings of several widths ({sorted(dims)}) or side-info "
            "of several widths; a pgvector table has one: upgrade it to one version first"
        )
    info, index_seconds = write_gallery(
        loc,
        batches,
        family=manifest.family,
        source_uri=row_source or source_uri,
        rows=manifest.rows,
        groups=manifest.groups,
        embedding_dim=dims.pop(),
        side_info_dim=side_dims.pop(),
        labels=labels,
        distance=distance,
        provenance=manifest.provenance,
        hnsw=hnsw,
        index=index,
    )
    seconds = time.perf_counter() - start
    return CopyReport(source_uri, loc.uri, info.rows, seconds, index_seconds, info.table)


# --- search ------------------------------------------------------------------------------------


def vector_literal(row: np.ndarray) -> str:
    """pgvector's text form; Python's repr of each float32 (as float64) parses back exactly."""
    return "[" + ",".join(map(repr, row.astype(np.float64).tolist())) + "]"


@dataclass(frozen=True)
class PgSearchResult:
    ids: np.ndarray  # object [q, k] (None past the end)
    distances: np.ndarray  # float32 [q, k]
    labels: np.ndarray | None  # int64 [q, k]
    seconds: float
    exact: bool

    @property
    def qps(self) -> float:
        return len(self.ids) / self.seconds if self.seconds > 0 else float("inf")


def search(
    conn: Any,
    loc: PgLocation,
    queries: np.ndarray,
    *,
    k: int = 10,
    exact: bool = False,
    ef_search: int | None = None,
    exclude_ids: list[str] | None = None,
    info: TableInfo | None = None,
) -> PgSearchResult:
    """Top-``k`` of each query through the gallery's view: HNSW (``ef_search`` candidates, the
    index's default 40 when None) or exact (index scans off: a sequential scan and a top-k sort).
    ``exclude_ids[i]``: an id query ``i`` must not return (its own item)."""
    info = info or served(conn, loc)
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != info.embedding_dim:
        raise SchemaError(
            f"queries have shape {list(queries.shape)} but {loc.uri} holds "
            f"{info.embedding_dim}-d embeddings ({info.family}@"
            f"{'/'.join(map(str, info.versions))}); embed the queries with that version"
        )
    if not np.isfinite(queries).all():
        raise NonFiniteError("queries hold NaN or infinite values; re-embed them")
    if k < 1:
        raise GalleryError(f"k must be at least 1, got {k}")
    if ef_search is not None and not 1 <= ef_search <= 1000:
        raise GalleryError(f"ef_search must be in 1..1000 (pgvector's range), got {ef_search}")
    op = DISTANCE_OPS[info.distance][1]
    extra = 0 if exclude_ids is None else 1
    sql = (
        f"SELECT id, embedding {op} %s::vector, label FROM {loc.gallery} "
        f"ORDER BY embedding {op} %s::vector LIMIT {k + extra}"
    )
    n = len(queries)
    ids = np.full((n, k), None, dtype=object)
    dists = np.full((n, k), np.inf, dtype=np.float32)
    labels = np.full((n, k), -1, dtype=np.int64)
    if not conn.autocommit:
        conn.rollback()  # a fresh transaction for the SET LOCALs below
    start = time.perf_counter()
    with conn.cursor() as cur:
        if conn.autocommit:
            cur.execute("BEGIN")
        try:
            if exact:
                cur.execute("SET LOCAL enable_indexscan = off")
                cur.execute("SET LOCAL enable_bitmapscan = off")
            elif ef_search is not None:
                cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
            for i, q in enumerate(queries):
                text = vector_literal(q)
                cur.execute(sql, (text, text))
                got = [r for r in cur.fetchall() if exclude_ids is None or r[0] != exclude_ids[i]]
                for j, (rid, dist, label) in enumerate(got[:k]):
                    ids[i, j], dists[i, j] = rid, dist
                    labels[i, j] = -1 if label is None else label
        finally:
            cur.execute("COMMIT")
    seconds = time.perf_counter() - start
    return PgSearchResult(ids, dists, labels if info.labels else None, seconds, exact)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ids, None = empty)."""
    scores = []
    for a, e in zip(approx, exact, strict=True):
        truth = {x for x in e if x is not None}
        if truth:
            scores.append(len(truth & {x for x in a if x is not None}) / len(truth))
    return float(np.mean(scores)) if scores else float("nan")


# --- the embedded server -----------------------------------------------------------------------


def embedded_server(folder: str, *, stop: bool = False) -> str:
    """Start (or find running) the ``pgserver`` PostgreSQL with pgvector in ``folder`` and return
    its URL; it keeps running after this process exits. ``stop``: stop it (fast shutdown)."""
    import logging
    import os
    import subprocess
    import warnings

    try:  # optional dependency, imported only for the embedded server
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR unset: it falls back to /tmp
            import pgserver
            from pgserver._commands import pg_ctl  # no public stop for another process's server
    except ImportError:
        raise PgError(
            "the embedded server needs the pgserver package (pip install pgserver==0.1.4); "
            "or pass the URL of a PostgreSQL server with pgvector"
        ) from None
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
    data = Path(folder).expanduser().resolve()
    if stop:
        if not (data / "postmaster.pid").is_file():
            raise PgError(f"no embedded server is running in {data}")
        user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs PostgreSQL as it as root
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=data, user=user, timeout=60)
        return ""
    _remove_dead_pidfile(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR unset: pgserver falls back to /tmp
        try:
            server = pgserver.get_server(data, cleanup_mode=None)
            with server._lock:  # a handle cached by this process may outlive its server
                server.ensure_postgres_running()
        except subprocess.CalledProcessError as exc:  # initdb or pg_ctl failed
            raise PgError(
                f"the embedded server in {data} did not start ({Path(exc.cmd[0]).name} exited "
                f"with {exc.returncode}); see {data / 'log'}, then rerun (a busy machine can "
                "exceed pg_ctl's 10 s start timeout)"
            ) from None
    return server.get_uri()


def _remove_dead_pidfile(data: Any) -> None:
    """Drop ``postmaster.pid`` when its postmaster is dead: a killed postmaster can stay a
    zombie (where PID 1 does not reap promptly, as in some containers), which both pgserver and
    PostgreSQL take for a running server, so neither would start a new one."""
    import psutil  # pgserver's dependency

    pidfile = data / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid, port, sockets = int(lines[0]), lines[3].strip(), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return
    try:
        dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        dead = True
    if dead:  # its socket's lock file names the dead pid too
        if sockets:
            (Path(sockets) / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)
        pidfile.unlink(missing_ok=True)
