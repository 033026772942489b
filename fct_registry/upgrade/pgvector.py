"""Upgrade a gallery where it is served: into PostgreSQL + pgvector, with a zero-downtime swap.

In order: rows are read in keyset-paged batches (from the gallery's current table, or from a
Parquet/S3 gallery), run through the resolved chain with ONNX Runtime (the same
:func:`~fct_registry.upgrade.upgrade_batch` every engine runs), written with binary COPY into a
new table; then the HNSW index is built with the gallery's distance, the row count is checked,
and the gallery's view is swapped to the new table in one transaction. The old table is kept
(``fct gallery rollback``) until ``fct gallery prune``.

Resuming: each batch is committed together with its checkpoint row (last id and row count) in
``fct_gallery_jobs``, so after ``kill -9`` (of this process or of the server) the same command
continues after the last committed batch; nothing is lost or written twice, and the vectors are
those of an uninterrupted run (the chain is deterministic per row). A rerun after success does
nothing. A session-level advisory lock on the gallery makes a concurrent upgrade of the same
gallery fail with a message naming the holder, instead of interleaving.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fct_registry import __version__
from fct_registry.errors import FctError
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.manifest import Manifest
from fct_registry.gallery.pg import catalogue, tables
from fct_registry.gallery.pg.codec import copy_in
from fct_registry.gallery.pg.connection import connect, driver_errors
from fct_registry.gallery.pg.location import PgLocation, is_pg_url
from fct_registry.gallery.pg.lock import lock_gallery, lock_metadata
from fct_registry.gallery.pg.read import read_batches
from fct_registry.gallery.reader import Gallery
from fct_registry.jobs import fingerprint, progress_bar
from fct_registry.jobs import reached as _reached  # batch:<i> (committed), copied, index, swap
from fct_registry.resolver.load import load_graph
from fct_registry.upgrade.batch import upgrade_batch
from fct_registry.upgrade.job import DEFAULT_BATCH_SIZE, read_ahead, source_classes
from fct_registry.upgrade.plan import PlanError, UpgradePlan, plan_from_registry

JOBS = "fct_gallery_jobs"
LOCK_WAIT = 5.0
"""Seconds to wait for the gallery's lock: a killed run's server session may need a moment to
notice that its client is gone and release it."""


class OlderTargetError(PlanError):
    """The target version is older than rows of the gallery: transformations only go forward."""


# --- sources -----------------------------------------------------------------------------------


@dataclass
class Source:
    """What an upgrade reads: a pgvector gallery's current table, or a Parquet/S3 gallery."""

    uri: str  # redacted
    manifest: Manifest
    identity: str  # pins the job to these rows: table name, or the manifest's sha256
    distance: str | None = None
    pg: PgLocation | None = None
    info: catalogue.TableInfo | None = None
    gallery: Gallery | None = None
    _conn: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, location: str) -> Source:
        if is_pg_url(location):
            loc = PgLocation.parse(location)
            conn = connect(loc, autocommit=True)
            with driver_errors(loc, "reading the gallery's metadata"):
                info = catalogue.served(conn, loc)
            return cls(
                loc.uri,
                info.manifest(),
                f"{loc.server}#{info.table}",
                info.distance,
                pg=loc,
                info=info,
                _conn=conn,
            )
        gallery = Gallery.open(location)
        return cls(gallery.uri, gallery.manifest, gallery.manifest_sha256, gallery=gallery)

    def batches(self, batch_size: int, after: str | None, skip_rows: int) -> Iterator[Any]:
        """Batches after a checkpoint: keyset (``after``, an id) for a table, or whole batches
        skipped (``skip_rows``) for Parquet, whose batching is deterministic."""
        if self.info is not None:
            yield from read_batches(self._conn, self.info, batch_size=batch_size, after=after)
            return
        assert self.gallery is not None
        seen = 0
        for batch in self.gallery.batches(batch_size):
            if seen < skip_rows:
                seen += batch.num_rows
                if seen > skip_rows:
                    raise GalleryError(
                        f"{self.uri}: the checkpoint ({skip_rows} rows) is not on a batch "
                        "boundary; the source changed since the interrupted run: restore it"
                    )
                continue
            yield batch

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --- the job -----------------------------------------------------------------------------------


@dataclass
class PgUpgradeReport:
    source: str
    destination: str
    table: str
    rows: int
    resumed_rows: int = 0  # committed by an earlier, interrupted run
    already_complete: bool = False  # the gallery already served this job's table
    reserved: bool = False  # this job's table, kept from an earlier run, is served again
    copy_seconds: float = 0.0  # read, chain, COPY (this run's rows)
    index_seconds: float = 0.0
    swap_seconds: float = 0.0
    previous_table: str | None = None

    @property
    def upgraded_rows(self) -> int:
        return self.rows - self.resumed_rows if not self.already_complete else 0

    @property
    def rows_per_second(self) -> float:
        """Rows per second excluding the index build (what compares with the Parquet path)."""
        return self.upgraded_rows / self.copy_seconds if self.copy_seconds > 0 else 0.0


def ensure_jobs(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (JOBS,))
        if cur.fetchone()[0] is not None:
            return
        lock_metadata(cur)
        cur.execute(
            f"""CREATE TABLE IF NOT EXISTS {JOBS} (
                job text PRIMARY KEY,
                gallery text NOT NULL,
                source text NOT NULL,
                target_table text NOT NULL,
                state text NOT NULL,
                last_id text,
                rows_done bigint NOT NULL DEFAULT 0,
                spec jsonb NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
    conn.commit()


def job_spec(source: Source, dest: PgLocation, plan: UpgradePlan, batch_size: int,
             distance: str, hnsw: tables.HnswParams) -> dict[str, Any]:  # fmt: skip
    return {
        "format": "fct-pg-upgrade/1",
        "plan": plan.fingerprint(batch_size),
        "source": source.identity,
        "gallery": dest.gallery,
        "distance": distance,
        "hnsw": {"m": hnsw.m, "ef_construction": hnsw.ef_construction},
    }


def upgrade_to_pg(
    source: Source,
    dest: PgLocation,
    plan: UpgradePlan,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    distance: str | None = None,
    hnsw: tables.HnswParams | None = None,
    lock_wait: float = LOCK_WAIT,
    progress: bool = False,
    index: bool = True,
) -> PgUpgradeReport:
    """Upgrade every row of ``source`` to ``plan.target`` into a new table of ``dest``'s gallery
    and swap the gallery to it (see the module docstring). Idempotent and resumable.
    ``index=False`` swaps without building the HNSW index (exact search only; benchmarks)."""
    if batch_size < 1:
        raise FctError(f"batch size must be positive, got {batch_size}")
    hnsw = hnsw or tables.HnswParams()
    distance = tables.check_distance(distance or source.distance or tables.DEFAULT_DISTANCE)
    rows = source.manifest.rows
    check_forward(source.manifest, plan.target, source.uri)
    with (
        contextlib.closing(connect(dest)) as conn,
        driver_errors(dest, f"upgrading {source.uri}"),
    ):
        catalogue.ensure_metadata(conn)
        ensure_jobs(conn)
        lock_gallery(conn, dest, wait=lock_wait)
        current = catalogue.alias(conn, dest.gallery)
        in_place = source.pg is not None and source.info is not None and current is not None
        in_place = in_place and source.pg.server == dest.server and current[0] == source.info.table
        if in_place and set(source.manifest.versions) == {plan.target}:
            return PgUpgradeReport(
                source.uri, dest.uri, current[0], rows, rows, already_complete=True
            )
        for shard in source.manifest.shards:  # widths, side-info: before anything is written
            plan.check_shard(shard, f"{source.uri} ({shard.path})")
        spec = job_spec(source, dest, plan, batch_size, distance, hnsw)
        job = fingerprint(spec)[:16]
        table = catalogue.table_name(dest.gallery, plan.target, job)
        report = PgUpgradeReport(source.uri, dest.uri, table, rows)
        report.previous_table = current[0] if current else None
        state, last_id, done = _start(conn, dest, source, plan, spec, job, table, distance)
        if state == "done":
            # Judged by what the view serves, not by the job's record: after a rollback the job
            # is done but its table is not served, and serving it again is the upgrade.
            report.resumed_rows = rows
            if report.previous_table == table:
                report.already_complete = True
                return report
            start = time.perf_counter()
            tables.swap(conn, dest, table)
            report.swap_seconds, report.reserved = time.perf_counter() - start, True
            return report
        report.resumed_rows = done
        if state == "copying":
            start = time.perf_counter()
            _copy(conn, source, plan, job, table, batch_size, last_id, done, progress)
            report.copy_seconds = time.perf_counter() - start
            _set_state(conn, job, "copied")
            _reached("copied")
        got = tables.count_rows(conn, table)
        if got != rows:
            raise GalleryError(
                f"{dest.uri}: the new table {table} has {got} rows but {source.uri} has {rows}; "
                "the gallery was not swapped (was the source changed during the upgrade?)"
            )
        if state in ("copying", "copied") and index:
            report.index_seconds = tables.build_index(conn, table, distance, hnsw)
            _set_state(conn, job, "indexed")
            _reached("index")
        start = time.perf_counter()
        tables.swap(
            conn,
            dest,
            table,
            extra=[
                (f"UPDATE {JOBS} SET state = 'done', updated_at = now() WHERE job = %s", (job,))
            ],
        )
        report.swap_seconds = time.perf_counter() - start
        _reached("swap")
    return report


def check_forward(manifest: Manifest, target: int, where: str) -> None:
    """Refuse a target older than rows of the gallery (FCT maps old embeddings to new ones)."""
    newer = sorted(v for v in manifest.versions if v > target)
    if newer:
        family = manifest.family
        raise OlderTargetError(
            f"{where} holds {family}@{'/'.join(map(str, newer))} rows, newer than the target "
            f"{family}@{target}; transformations only map old embeddings to newer ones: to "
            f"serve {family}@{target} again, `fct gallery rollback` (if its table is kept) or "
            f"re-embed the images with `fct embed --model {family}@{target}`"
        )


def _start(
    conn: Any,
    dest: PgLocation,
    source: Source,
    plan: UpgradePlan,
    spec: dict[str, Any],
    job: str,
    table: str,
    distance: str,
) -> tuple[str, str | None, int]:
    """The job's row (created with the empty table on a first run): ``(state, last id, rows)``.
    A checkpoint that disagrees with the table's row count is refused, not guessed at."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT state, last_id, rows_done FROM {JOBS} WHERE job = %s", (job,))
        row = cur.fetchone()
        served = (catalogue.alias(conn, dest.gallery) or (None, None))[0]
        if (
            row is not None
            and row[0] == "done"
            and served != table
            and not _complete(conn, table, source)
        ):
            # Its table was dropped or cut short by hand (prune deletes the job too): the
            # record describes nothing that could be served again, so start over.
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(
                f"UPDATE {catalogue.ALIASES} SET previous = NULL WHERE previous = %s", (table,)
            )
            cur.execute(f"DELETE FROM {catalogue.TABLES} WHERE table_name = %s", (table,))
            cur.execute(f"DELETE FROM {JOBS} WHERE job = %s", (job,))
            row = None
        if row is None:
            info = _target_info(source, dest, plan, table, distance)
            catalogue.check_name_free(conn, dest)
            _check_family(conn, dest, info)
            tables.create_table(cur, info)
            cur.execute(
                f"""INSERT INTO {JOBS} (job, gallery, source, target_table, state, spec)
                    VALUES (%s, %s, %s, %s, 'copying', %s)""",
                (job, dest.gallery, source.identity, table, json.dumps(spec)),
            )
            conn.commit()
            return "copying", None, 0
    conn.commit()
    state, last_id, done = row[0], row[1], int(row[2])
    if state == "copying":
        got = tables.count_rows(conn, table)
        if got != done:
            raise GalleryError(
                f"{dest.uri}: table {table} has {got} rows but its checkpoint says {done}; it "
                f"was changed by hand: drop it and delete job {job} from {JOBS}, then rerun"
            )
    return state, last_id, done


def _complete(conn: Any, table: str, source: Source) -> bool:
    """Does ``table`` still exist, registered as a gallery table, with every source row?"""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (table,))
        exists = cur.fetchone()[0] is not None
    if not exists or catalogue.table_info(conn, table) is None:
        return False
    return tables.count_rows(conn, table) == source.manifest.rows


def _target_info(
    source: Source, dest: PgLocation, plan: UpgradePlan, table: str, distance: str
) -> catalogue.TableInfo:
    groups: dict[tuple[int, str | None], int] = {}
    for (_, side), n in source.manifest.groups.items():
        groups[(plan.target, side)] = groups.get((plan.target, side), 0) + n
    side_dims = {s.side_info_dim for s in source.manifest.shards}
    labels = _has_labels(source)
    return catalogue.TableInfo(
        table, dest.gallery, plan.family, source.manifest.rows, plan.target_dim,
        side_dims.pop() if len(side_dims) == 1 else None, labels, distance, groups,
        _provenance(source, plan),
    )  # fmt: skip


def _has_labels(source: Source) -> bool:
    if source.info is not None:
        return source.info.labels
    assert source.gallery is not None
    with source.gallery.shard(source.manifest.shards[0]) as reader:
        return gallery_schema.LABEL in reader.schema.names


def _check_family(conn: Any, dest: PgLocation, info: catalogue.TableInfo) -> None:
    current = catalogue.alias(conn, dest.gallery)
    if current is None:
        return
    served = catalogue.table_info(conn, current[0])
    if served is not None and served.family != info.family:
        raise GalleryError(
            f"{dest.uri} serves {served.family} embeddings, not {info.family}; choose another "
            "gallery=NAME for this family"
        )


def _provenance(source: Source, plan: UpgradePlan) -> dict[str, Any]:
    import onnxruntime

    return {
        "source": {
            "uri": source.uri,
            "identity": source.identity,
            "rows": source.manifest.rows,
            **source_classes(source.manifest),
        },
        "plan": plan.record(source.manifest.groups),
        "software": {"fct_registry": __version__, "onnxruntime": onnxruntime.__version__},
    }


def _copy(
    conn: Any,
    source: Source,
    plan: UpgradePlan,
    job: str,
    table: str,
    batch_size: int,
    last_id: str | None,
    done: int,
    progress: bool,
) -> None:
    """Read, chain and COPY batch after batch; each batch commits with its checkpoint. Reading
    and the chain run ahead in helper threads while this thread writes (psycopg2, ONNX Runtime
    and Arrow release the GIL)."""
    batch_plan = plan.batch_plan()
    bar = progress_bar(
        progress,
        total=source.manifest.rows,
        initial=done,
        unit="rows",
        unit_scale=True,
        desc="upgrade",
        dynamic_ncols=False,
    )
    reads = read_ahead(source.batches(batch_size, last_id, done))
    upgraded = read_ahead(
        upgrade_batch(b, batch_plan, f"{source.uri} (rows {done}+, batch {i})")
        for i, b in enumerate(reads)
    )
    try:
        with conn.cursor() as cur:
            for i, batch in enumerate(upgraded):
                where = f"{source.uri}, batch {i} after the checkpoint (chain output)"
                copy_in(cur, table, batch, source.uri, where)
                done += batch.num_rows
                last = (
                    batch.column(gallery_schema.ID)[-1].as_py() if source.info is not None else None
                )
                cur.execute(
                    f"UPDATE {JOBS} SET last_id = %s, rows_done = %s, updated_at = now() "
                    "WHERE job = %s",
                    (last, done, job),
                )
                conn.commit()
                bar.update(batch.num_rows)
                _reached(f"batch:{i}")
    except BaseException:
        conn.rollback()
        raise
    finally:
        bar.close()


def _set_state(conn: Any, job: str, state: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE {JOBS} SET state = %s, updated_at = now() WHERE job = %s", (state, job)
        )
    conn.commit()


# --- planning from the registry ----------------------------------------------------------------


def plan_for(
    client: Any,
    source: Source,
    target: Any,
    workdir: Any,
    *,
    threads: int | None = None,
    registry: str | None = None,
    uncertainty: bool = False,
) -> UpgradePlan:
    """Resolve the chains for ``source`` after checking the target is not older than its rows."""
    if target.family == source.manifest.family:
        version = load_graph(client, target.family).version_of(target)
        check_forward(source.manifest, version, source.uri)
    return plan_from_registry(
        client,
        source.manifest,
        target,
        workdir,
        gallery=source.uri,
        threads=threads,
        registry=registry,
        uncertainty=uncertainty,
    )
