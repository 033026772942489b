"""``fct gallery``, once its arguments are parsed (the parser is ``fct_registry.cli.gallery``);
the pgvector side of ``fct upgrade`` / ``search`` / ``embed`` is :mod:`.pgvector`."""

from __future__ import annotations

import argparse
import contextlib
import json

from fct_registry.cli.embed import gallery_writing
from fct_registry.commands._summary import print_summary
from fct_registry.device import pick_device
from fct_registry.errors import FctError
from fct_registry.gallery import open_storage
from fct_registry.gallery.pg.catalogue import alias, gallery_tables, served
from fct_registry.gallery.pg.connection import connect
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.server import embedded_server
from fct_registry.gallery.pg.tables import HNSW_EF_CONSTRUCTION, HNSW_M, HnswParams, prune, rollback
from fct_registry.gallery.pg.transfer import copy_gallery
from fct_registry.gallery.side_info import add_side_info
from fct_registry.gallery.tables import gallery_from_tables
from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import open_tracking_store


def run(args: argparse.Namespace) -> int:
    actions = {
        "copy": _copy,
        "list": _list,
        "rollback": _rollback,
        "prune": _prune,
        "server": _server,
        "import": _import,
        "add-side-info": _add_side_info,
    }
    return actions[args.gallery_command](args)


def _hnsw(args: argparse.Namespace) -> HnswParams:
    m = getattr(args, "hnsw_m", HNSW_M)
    ef = getattr(args, "hnsw_ef_construction", HNSW_EF_CONSTRUCTION)
    if not 2 <= m <= 100 or not 4 <= ef <= 1000 or ef < 2 * m:
        raise FctError(
            f"HNSW needs 2 <= m <= 100 and 2 m <= ef_construction <= 1000, got m={m}, "
            f"ef_construction={ef}"
        )
    return HnswParams(m=m, ef_construction=ef)


def _copy(args: argparse.Namespace) -> int:
    report = copy_gallery(args.source, args.dest, distance=args.distance, hnsw=_hnsw(args))
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
    else:
        index = f", HNSW index {report.index_seconds:.1f} s" if report.table else ""
        print(
            f"copied {report.rows} rows from {report.source} to {report.destination} in "
            f"{report.seconds:.1f} s{index}"
        )
    return 0


def _import(args: argparse.Namespace) -> int:
    client = open_tracking_store(args.tracking_uri, read_only=True)
    manifest = gallery_from_tables(
        client, parse_ref(args.version), args.embeddings, args.side_info, args.out
    )
    print(f"wrote {manifest.rows} rows of {args.version} to {args.out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    loc = PgLocation.parse(args.url)
    with contextlib.closing(connect(loc)) as conn:
        info = served(conn, loc)
        _, previous = alias(conn, loc.gallery) or (None, None)
        tables = gallery_tables(conn, loc.gallery)
    rows = [
        {
            "table": t.table,
            "role": "served" if t.table == info.table else "previous" if t.table == previous
            else "kept" if t.state == "ready" else t.state,
            "rows": t.rows,
            "versions": {str(k): v for k, v in t.versions.items()},
            "embedding_dim": t.embedding_dim,
            "distance": t.distance,
        }
        for t in tables
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"gallery": loc.uri, "family": info.family, "tables": rows}, indent=2))
        return 0
    print(f"{loc.uri}: {info.family}, view {loc.gallery} -> {info.table}")
    for r in rows:
        versions = ", ".join(f"@{k}: {v}" for k, v in r["versions"].items())
        print(
            f"  {r['role']:<9}{r['table']:<44}{r['rows']:>10} rows  {r['embedding_dim']}-d "
            f"{r['distance']}  ({versions})"
        )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    loc = PgLocation.parse(args.url)
    old, new = rollback(loc)
    print(f"{loc.uri}: view {loc.gallery} now serves {new} again (was {old})")
    return 0


def _prune(args: argparse.Namespace) -> int:
    loc = PgLocation.parse(args.url)
    gone = prune(loc, dry_run=args.dry_run)
    verb = "would drop" if args.dry_run else "dropped"
    print(f"{loc.uri}: {verb} {len(gone)} table(s)" + "".join(f"\n  {t}" for t in gone))
    return 0


def _server(args: argparse.Namespace) -> int:
    url = embedded_server(args.folder, stop=args.stop)
    if args.stop:
        print(f"stopped the server in {args.folder}")
    else:
        print(url)
    return 0


def _add_side_info(args: argparse.Namespace) -> int:
    client = open_tracking_store(args.tracking_uri, read_only=True)
    report, added = add_side_info(
        client,
        args.gallery,
        open_storage(args.out),
        side_info=args.side_info,
        device=pick_device(args.device),
        **gallery_writing(args),
    )
    manifest = report.manifest
    assert manifest is not None
    summary = {
        "gallery": report.destination,
        "source": added.gallery,
        "family": added.family,
        "version": added.version,
        "side_info": added.side_info_ref,
        "rows": manifest.rows,
        "items": report.items,
        "skipped": len(report.skipped),
        "skipped_report": report.skipped_report,
        "shards": len(manifest.shards),
        "resumed_shards": report.resumed_shards,
        "already_complete": report.already_complete,
        "side_info_dim": manifest.shards[0].side_info_dim,
        "seconds": report.seconds,
    }
    done = f"{report.destination} already holds this gallery ({manifest.rows} rows)"
    if print_summary(summary, args.json, done):
        return 0
    print(
        f"added {added.side_info_ref} side-info ({summary['side_info_dim']}-d) to "
        f"{manifest.rows} rows of {added.gallery} ({added.family}@{added.version}) into "
        f"{report.destination} in {report.seconds:.1f} s"
    )
    if report.skipped:
        print(
            f"left out {len(report.skipped)} row(s) whose image could not be used, listed in "
            f"{report.skipped_report}; first: {report.skipped[0].reason}"
        )
    return 0


# --- the pgvector side of fct upgrade / search / embed ---------------------------------------
