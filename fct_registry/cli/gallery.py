"""``fct gallery ACTION``: galleries served from PostgreSQL + pgvector (the parser; the
implementation is ``fct_registry.commands.gallery``)."""

from __future__ import annotations

import argparse

from fct_registry.cli._common import (
    add_command,
    add_destination,
    add_json,
    add_tracking_uri,
    check_store,
)
from fct_registry.cli.embed import add_gallery_writing, check_gallery_writing
from fct_registry.errors import FctError

# Copies of ``gallery.pg.tables``' constants (a test keeps them equal): importing the store
# module costs pyarrow and psycopg2, a parser must not.
DISTANCES = ("cosine", "l2")
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64

DESCRIPTION = """\
Serve galleries from PostgreSQL with the pgvector extension. A gallery there is a view (the
alias readers query) over one table per version, each with an HNSW index; `fct upgrade` into a
postgresql:// URL writes a new table and swaps the view in one transaction, keeping the old
table so the swap can be rolled back until it is pruned.

URL: postgresql://USER:PASSWORD@HOST:PORT/DB?gallery=NAME (other parameters go to libpq; the
password is never printed). `fct gallery server DIR` starts an embedded PostgreSQL with pgvector
(the pgserver package) in DIR and prints its URL.

`fct gallery add-side-info GALLERY --out DST` adopts a gallery indexed without side-info (a
running deployment, `fct embed --without-side-info`): it reads each row's image once more with
the small side-info extractor, copies the embeddings as they are, and writes a new Parquet
gallery whose rows carry side-info, so later upgrades can use the chains that read it
(docs/adopt.md)."""

EPILOG = """\
examples:
  URL=$(fct gallery server /tmp/fct-pg)            # embedded PostgreSQL + pgvector
  fct gallery copy galleries/v1 "$URL&gallery=fashion"
  fct upgrade --gallery "$URL&gallery=fashion" --to fashion@3 --out "$URL&gallery=fashion"
  fct gallery list "$URL&gallery=fashion"
  fct gallery rollback "$URL&gallery=fashion"
  fct gallery prune "$URL&gallery=fashion"
  fct gallery copy "$URL&gallery=fashion" s3://bucket/galleries/fashion-v3

  # a family given as embedding tables (docs/embeddings-only.md): its index as a gallery
  fct gallery import --version sentences@1 --embeddings index.parquet \\
      --side-info index-side.parquet --out galleries/sentences-v1

  fct gallery add-side-info galleries/v1 --out galleries/v1-side-info"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "gallery", DESCRIPTION, EPILOG)
    sub = parser.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)

    copy = sub.add_parser(
        "copy",
        help="copy a gallery between Parquet (folder, s3://) and pgvector, either way",
    )
    copy.add_argument("source", metavar="SRC", help="a folder, s3://bucket/prefix or URL")
    copy.add_argument("dest", metavar="DST", help="a folder, s3://bucket/prefix or URL")
    copy.add_argument(
        "--distance",
        choices=DISTANCES,
        help="distance of the HNSW index (default: the source's, else l2 as params.yaml)",
    )
    _hnsw_args(copy)
    add_json(copy)

    listing = sub.add_parser("list", help="the gallery's tables: served, previous, kept")
    listing.add_argument("url", metavar="URL")
    add_json(listing, "")

    back = sub.add_parser("rollback", help="serve the table served before the last swap again")
    back.add_argument("url", metavar="URL")

    prune = sub.add_parser("prune", help="drop every table of the gallery but the served one")
    prune.add_argument("url", metavar="URL")
    prune.add_argument("--dry-run", action="store_true", help="list what would be dropped")

    given = sub.add_parser(
        "import",
        help="write a gallery from embedding tables (id, vector, label) of a registered version",
    )
    given.add_argument("--version", required=True, metavar="F@N", help="e.g. sentences@1")
    given.add_argument(
        "--embeddings", required=True, metavar="TABLE", help="Parquet or safetensors table"
    )
    given.add_argument(
        "--side-info",
        metavar="TABLE",
        help="the side-info of the same items, from the extractor the version links to",
    )
    add_destination(given, "a folder or s3://bucket/prefix")
    add_tracking_uri(given)

    server = sub.add_parser(
        "server", help="start (or --stop) an embedded PostgreSQL with pgvector; prints its URL"
    )
    server.add_argument("folder", metavar="DIR", help="the server's data folder")
    server.add_argument("--stop", action="store_true", help="stop the server in DIR")

    _add_side_info_parser(sub)


def _add_side_info_parser(sub: argparse._SubParsersAction) -> None:
    add = sub.add_parser(
        "add-side-info",
        help="a gallery indexed without side-info, rewritten with it (reads each image once)",
        description="Read each row's image (its source_uri) once with the side-info extractor "
        "the gallery's version is linked to, copy the row's embedding as it is (the backbone "
        "is not run), and write a new gallery with side-info to DST. Resumable and one run per "
        "DST at a time, like `fct embed`; GALLERY is never modified.",
    )
    add.add_argument("gallery", metavar="GALLERY", help="a folder or s3://bucket/prefix")
    add_destination(add, "an empty folder or s3://bucket/prefix")
    add.add_argument(
        "--side-info",
        metavar="NAME/N",
        help="the extractor, e.g. fashion-side-info/1 (default: the one the version is "
        "linked to, its fct.side_info tag)",
    )
    add_gallery_writing(
        add,
        on_bad_image="a missing or unreadable image stops the job (fail, default) or its row is "
        "left out of DST and listed in DST/skipped.jsonl (skip)",
        workers="decoding workers",
        batch_size="images per pass",
        shard_rows="rows per Parquet shard",
    )
    add_tracking_uri(add)
    add_json(add)


def check(args: argparse.Namespace) -> None:
    if args.gallery_command != "add-side-info":
        return
    check_gallery_writing(args)
    for flag, value in (("GALLERY", args.gallery), ("--out", args.out)):
        if value.startswith("postgresql://"):
            raise FctError(
                f"{flag} is a pgvector URL; add-side-info reads and writes Parquet galleries: "
                "`fct gallery copy` it to a folder first, and back afterwards"
            )
    check_store(args.tracking_uri)


def _hnsw_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hnsw-m", type=int, default=HNSW_M, metavar="M", help="HNSW m (default: %(default)s)"
    )
    parser.add_argument(
        "--hnsw-ef-construction",
        type=int,
        default=HNSW_EF_CONSTRUCTION,
        metavar="EF",
        help="HNSW ef_construction (default: %(default)s)",
    )


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``fct search`` has for pgvector galleries."""
    parser.add_argument(
        "--ef-search",
        type=int,
        metavar="N",
        help="pgvector galleries: HNSW candidates per query (default: 40, pgvector's)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="pgvector galleries: exact search (sequential scan) instead of HNSW",
    )
    parser.add_argument(
        "--recall-queries",
        type=int,
        default=100,
        metavar="N",
        help="pgvector galleries: also run the first N queries exactly and report HNSW's "
        "recall@k against them (default: %(default)s; 0: skip)",
    )
