"""``fct embed``, once its arguments are parsed (the parser is ``fct_registry.cli.embed``)."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
from pathlib import Path

from fct_registry.cli.embed import decoding, gallery_writing
from fct_registry.commands._summary import print_summary
from fct_registry.commands.pgvector import embed_destination
from fct_registry.data.image_sources import open_source
from fct_registry.device import pick_device
from fct_registry.errors import ConfigError
from fct_registry.gallery.embed import index_with_registry
from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import open_tracking_store
from fct_registry.upgrade.engines.ray_embed import RayShardRunner


def _steady_malloc() -> None:
    """Keep the process's footprint flat over a long run (glibc only; best effort).

    Each batch allocates tens of MB of activations and frees them again. glibc raises its mmap
    threshold after the first such free and then serves them from the heap, where fragmentation
    lets the peak creep up with the number of batches (measured: +20% peak RSS from 10k to 30k
    images). A fixed 1 MiB threshold returns large blocks to the OS on free; two arenas stop
    each intra-op thread from growing its own heap.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return


def _runner(args: argparse.Namespace):
    """``--engine ray``: the Ray Data shard runner; local: ``None`` (this process)."""
    address, actors = getattr(args, "ray_address", None), getattr(args, "actors", None)
    if getattr(args, "engine", "local") != "ray":
        given = [f for f, v in (("--ray-address", address), ("--actors", actors)) if v]
        if given:
            raise ConfigError(f"{' and '.join(given)} apply to --engine ray; add it or drop them")
        return None
    return RayShardRunner(address=address, workers=actors)  # Ray is imported when it starts


def run(args: argparse.Namespace) -> int:
    _steady_malloc()
    ref = parse_ref(args.model)
    device = pick_device(args.device)
    images = args.images or [str(args.data / f"{args.split}.safetensors")]
    options = {"id_prefix": args.id_prefix} if args.id_prefix is not None else {}
    source = open_source(images if len(images) > 1 else images[0], args.kind, **options)
    # postgresql://: written to a local staging gallery, then copied into pgvector by publish()
    storage, publish = embed_destination(args.out, Path(images[0]))
    client = open_tracking_store(args.tracking_uri, read_only=True)
    report, used, transform = index_with_registry(
        client,
        ref,
        source,
        storage,
        device=device,
        without_side_info=args.without_side_info,
        limit=args.limit,
        runner=_runner(args),
        **gallery_writing(args),
        **decoding(args),
    )
    manifest = report.manifest
    assert manifest is not None
    uri = publish()
    summary = {
        "gallery": uri,
        "source": source.uri,
        "source_kind": source.kind,
        "family": used.family,
        "version": used.version,
        "model": used.model_uri,
        "side_info": used.side_info_ref if not args.without_side_info else None,
        "input_shape": list(transform.shape),
        "items": report.items,
        "rows": manifest.rows,
        "skipped": len(report.skipped),
        "skipped_report": report.skipped_report,
        "shards": len(manifest.shards),
        "resumed_shards": report.resumed_shards,
        "already_complete": report.already_complete,
        "embedding_dim": manifest.shards[0].embedding_dim,
        "seconds": report.seconds,
        "images_per_second": report.images_per_second,
        "labels": source.has_labels,
    }
    done = f"{uri} already holds this gallery ({manifest.rows} rows); nothing to do"
    if print_summary(summary, args.json, done):
        return 0
    side = summary["side_info"] or "no side-info"
    resumed = f", {report.resumed_shards} shard(s) resumed" if report.resumed_shards else ""
    print(
        f"indexed {manifest.rows} images from {source.uri} ({source.kind}) with "
        f"{used.family}@{used.version} ({summary['embedding_dim']}-d) and {side} into "
        f"{len(manifest.shards)} shard(s) at {uri} in {report.seconds:.1f} s "
        f"({report.images_per_second:.0f} images/s{resumed})"
    )
    if report.skipped:
        print(
            f"skipped {len(report.skipped)} bad image(s), listed in {report.skipped_report}; "
            f"first: {report.skipped[0].reason}"
        )
    return 0
