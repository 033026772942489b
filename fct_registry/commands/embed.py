"""``fct embed``, once its arguments are parsed (the parser is ``fct_registry.cli.embed``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fct_registry._redact import first_line
from fct_registry.device import pick_device
from fct_registry.errors import DataError, FctError
from fct_registry.gallery import open_storage
from fct_registry.gallery.embed import Images, index_with_registry, load_images
from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import open_tracking_store


def _load(path: Path, args: argparse.Namespace) -> Images:
    """The images to index, or a clean error for a file that is not a safetensors file."""
    if Path(path).suffix.lower() in (".npy", ".npz"):
        raise DataError(
            f"--images {path} is a NumPy file; pass a .safetensors file holding `images` "
            "(uint8 [N, C, H, W]) and optionally `labels`, e.g. outputs/data/test.safetensors "
            "(convert with safetensors.numpy.save_file({'images': array}, 'images.safetensors'))"
        )
    try:
        return load_images(path, id_prefix=args.id_prefix, limit=args.limit)
    except FctError:
        raise
    except Exception as exc:  # SafetensorError, and OSError for an unreadable file
        raise DataError(
            f"cannot read --images {path} as safetensors ({type(exc).__name__}: "
            f"{first_line(exc)[:200]}); pass a .safetensors file holding `images` "
            "(uint8 [N, C, H, W])"
        ) from None


def run(args: argparse.Namespace) -> int:

    ref = parse_ref(args.model)
    device = pick_device(args.device)
    path = args.images or args.data / f"{args.split}.safetensors"
    items = _load(path, args)
    storage = open_storage(args.out)
    client = open_tracking_store(args.tracking_uri, read_only=True)
    start = time.perf_counter()
    try:
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
    except RuntimeError as exc:  # torch's shape mismatch: the images do not fit the model
        shape = "x".join(str(d) for d in items.images.shape[1:])
        raise DataError(
            f"the images in {path} ({shape}, channels x height x width) do not fit "
            f"{args.model} ({first_line(exc)[:200]}); index images of the shape the model was "
            "trained on (its spec.json input_shape, e.g. 1x28x28 for Fashion-MNIST)"
        ) from None
    seconds = time.perf_counter() - start
    summary = {
        "gallery": storage.uri,
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
            f"at {storage.uri} in {seconds:.1f} s"
        )
    return 0
