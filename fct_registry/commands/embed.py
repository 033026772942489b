"""``fct embed``, once its arguments are parsed (the parser is ``fct_registry.cli.embed``)."""

from __future__ import annotations

import argparse
import json
import time

from fct_registry.commands.gallery import embed_destination
from fct_registry.device import pick_device
from fct_registry.gallery.embed import index_with_registry, load_images
from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import open_tracking_store


def run(args: argparse.Namespace) -> int:

    ref = parse_ref(args.model)
    device = pick_device(args.device)
    path = args.images or args.data / f"{args.split}.safetensors"
    items = load_images(path, id_prefix=args.id_prefix, limit=args.limit)
    storage, publish = embed_destination(args.out, path)  # postgresql://: staged, then copied
    client = open_tracking_store(args.tracking_uri, read_only=True)
    start = time.perf_counter()
    manifest, used = index_with_registry(
        client,
        ref,
        items,
        storage,
        device=device,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        without_side_info=args.without_side_info,
    )
    uri = publish()
    seconds = time.perf_counter() - start
    summary = {
        "gallery": uri,
        "family": used.family,
        "version": used.version,
        "model": used.model_uri,
        "side_info": used.side_info_ref if not args.without_side_info else None,
        "rows": manifest.rows,
        "shards": len(manifest.shards),
        "embedding_dim": manifest.shards[0].embedding_dim,
        "seconds": seconds,
        "labels": items.labels is not None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        side = summary["side_info"] or "no side-info"
        print(
            f"indexed {manifest.rows} images from {path} with {used.family}@{used.version} "
            f"({summary['embedding_dim']}-d) and {side} into {len(manifest.shards)} shard(s) "
            f"at {uri} in {seconds:.1f} s"
        )
    return 0
