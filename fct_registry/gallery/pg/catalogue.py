"""The catalogue: ``fct_gallery_tables`` (what each version's table holds) and
``fct_gallery_aliases`` (the table each gallery serves, and the one before, for rollback)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fct_registry.errors import NotFoundError
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.manifest import GroupKey, Manifest, ShardInfo
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.lock import lock_metadata

TABLES = "fct_gallery_tables"


ALIASES = "fct_gallery_aliases"


def ensure_metadata(conn: Any) -> None:
    """Create the metadata tables once per database (serialised: concurrent first uses race)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s), to_regclass(%s)", (TABLES, ALIASES))
        if all(cur.fetchone()):
            return
        lock_metadata(cur)
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


def record_table(cur: Any, info: TableInfo, state: str) -> None:
    """Add ``info``'s row (kept if it is there: a resumed job recorded it already)."""
    cur.execute(
        f"""INSERT INTO {TABLES} ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)
            ON CONFLICT (table_name) DO NOTHING""",
        (
            info.table, info.gallery, info.family, info.rows, info.embedding_dim,
            info.side_info_dim, info.labels, info.distance, _groups_json(info.groups),
            None if info.provenance is None else json.dumps(info.provenance), state,
        ),
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
