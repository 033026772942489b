"""A gallery version's table: create it, index it (HNSW), swap the gallery's view to it, roll
back to the previous one, and prune the rest."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from fct_registry.errors import NotFoundError
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.pg.catalogue import (
    ALIASES,
    TABLES,
    TableInfo,
    alias,
    check_name_free,
    gallery_tables,
    record_table,
    served,
    table_info,
)
from fct_registry.gallery.pg.codec import OPTIONAL_COLUMNS
from fct_registry.gallery.pg.connection import connect, driver_errors
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.lock import lock_gallery

DISTANCE_OPS = {"l2": ("vector_l2_ops", "<->"), "cosine": ("vector_cosine_ops", "<=>")}


DEFAULT_DISTANCE = "l2"  # params.yaml evaluation.distance's default
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64  # pgvector's defaults


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
    record_table(cur, info, "building")


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


def filled_optional(cur: Any, table: str) -> list[str]:
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
        lock_gallery(conn, loc, then="prune once it has finished")
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
