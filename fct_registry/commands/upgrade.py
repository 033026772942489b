"""``fct upgrade``, once its arguments are parsed (the parser is ``fct_registry.cli.upgrade``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fct_registry.commands._summary import print_summary
from fct_registry.commands.pgvector import upgrade_pg
from fct_registry.errors import FctError
from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.pg.location import is_pg_url
from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import open_tracking_store, redact_uri, resolve_tracking_uri
from fct_registry.scratch import scratch
from fct_registry.upgrade import plan_from_registry
from fct_registry.upgrade.engines import create_engine
from fct_registry.upgrade.job import inspect_destination
from fct_registry.upgrade.plan import estimate


def run(args: argparse.Namespace) -> int:
    if is_pg_url(args.gallery) or is_pg_url(args.out):  # served from PostgreSQL + pgvector
        return upgrade_pg(args, open_tracking_store(args.tracking_uri, read_only=True))
    engine = _engine(args)
    target = parse_ref(args.to)
    source = Gallery.open(args.gallery)
    dest = open_storage(args.out)
    client = open_tracking_store(args.tracking_uri, read_only=True)
    registry = redact_uri(resolve_tracking_uri(args.tracking_uri))
    with scratch("fct-upgrade-") as work:  # the chain's models, fetched from the registry
        plan = plan_from_registry(
            client,
            source.manifest,
            target,
            work,
            gallery=source.uri,
            threads=args.threads,
            registry=registry,
            uncertainty=args.for_backfill,
        )
        if args.dry_run:
            return _dry_run(args, source, dest, plan)
        report = engine.run(
            source,
            dest,
            plan,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            keep_going=args.keep_going,
        )
    summary = {
        "source": report.source,
        "destination": report.destination,
        "target": f"{plan.family}@{plan.target}",
        "engine": args.engine,
        "rows": report.rows,
        "shards": report.shards,
        "skipped_shards": report.skipped_shards,
        "already_complete": report.already_complete,
        "upgraded_rows": report.upgraded_rows,
        "seconds": report.seconds,
        "cpu_seconds": report.cpu_seconds,
        "rows_per_second": report.rows_per_second,
        "chains": [r.label(plan.family) for r in plan.routes.values()],
        "fingerprint": report.fingerprint,
    }
    done = (
        f"{dest.uri} already holds this upgrade ({report.rows} rows of "
        f"{plan.family}@{plan.target}); nothing to do"
    )
    if not print_summary(summary, args.json, done):
        resumed = (
            f" ({report.skipped_shards} shards finished by an earlier run were kept)"
            if report.skipped_shards
            else ""
        )
        print(
            f"upgraded {report.upgraded_rows} rows in "
            f"{_count(report.shards - report.skipped_shards, 'shard')} to "
            f"{plan.family}@{plan.target}{resumed} in {report.seconds:.1f} s "
            f"({report.rows_per_second:,.0f} rows/s, {report.cpu_seconds:.1f} s CPU)"
        )
        for label in summary["chains"]:
            print(f"  {label}")
        print(f"wrote {dest.uri}/manifest.json")
    return 0


def _engine(args: argparse.Namespace) -> Any:
    """The engine ``--engine`` names, with the options that apply to it."""

    if args.engine != "ray":
        given = [
            flag
            for flag, value in (("--ray-address", args.ray_address), ("--workers", args.workers))
            if value is not None
        ]
        if given:
            raise FctError(
                f"{' and '.join(given)} only "
                f"{'apply' if len(given) > 1 else 'applies'} to --engine ray; add "
                "--engine ray or drop it"
            )
        return create_engine(args.engine)
    if args.workers is not None and args.workers < 1:
        raise FctError(f"--workers must be at least 1, got {args.workers}")
    return create_engine(
        "ray", address=args.ray_address, workers=args.workers, threads=args.threads
    )


def _dry_run(args: argparse.Namespace, source: Any, dest: Any, plan: Any) -> int:

    manifest = source.manifest
    guess = estimate(plan, manifest)
    problems = []
    for shard in manifest.shards:
        try:
            plan.check_shard(shard, f"{source.uri}/{shard.path}")
        except GalleryError as exc:
            problems.append(str(exc))
    state = inspect_destination(dest, plan.fingerprint(args.batch_size), source)
    done = len(manifest.shards) if state.complete else len(state.done)
    chains = []
    for key, rows in manifest.groups.items():
        route = plan.routes[key]
        chains.append(
            {
                "from": key[0],
                "side_info": key[1],
                "rows": rows,
                "chain": route.label(plan.family),
                "steps": [s.uri for s in route.steps],
                "top1": route.top1,
                "basis": route.basis,
                "rows_per_second": guess.rates.get(key),
            }
        )
    out = {
        "source": source.uri,
        "destination": dest.uri,
        "target": f"{plan.family}@{plan.target}",
        "target_dim": plan.target_dim,
        "rows": manifest.rows,
        "shards": len(manifest.shards),
        "chains": chains,
        "estimated_seconds": guess.seconds,
        "shards_already_done": done,
        "problems": problems,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"dry run: {source.uri} -> {dest.uri} ({plan.family}@{plan.target}, {plan.target_dim}-d)")
    print(f"rows: {manifest.rows:,} in {_count(len(manifest.shards), 'shard')}")
    for c in chains:
        rate = c["rows_per_second"]
        speed = f", {rate:,.0f} rows/s measured" if rate else ""
        score = f", top-1 {c['top1']:.2f}% ({c['basis']})" if c["top1"] is not None else ""
        print(f"  {c['rows']:,} rows: {c['chain']}{score}{speed}")
    print(
        f"estimated time: {_duration(guess.seconds)} through the chains (reading, checking and "
        "writing add a few percent)"
    )
    if done:
        print(
            f"{done} of {len(manifest.shards)} shards are already done at {dest.uri} and "
            "would be skipped"
        )
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 2 if problems else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
