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

Modules, one job each: :mod:`.location` (URLs), :mod:`.connection` (connecting, driver errors),
:mod:`.errors`, :mod:`.lock` (advisory locks), :mod:`.catalogue` (the metadata tables),
:mod:`.codec` (binary COPY encoding), :mod:`.tables` (DDL, index, swap, rollback, prune),
:mod:`.read`, :mod:`.write`, :mod:`.transfer` (Parquet <-> pgvector), :mod:`.search` (HNSW and
exact search, recall) and :mod:`.server` (the embedded server). Import from the module that
does the job; this package re-exports nothing.
"""
