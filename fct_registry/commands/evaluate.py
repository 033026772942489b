"""``fct evaluate``, once its arguments are parsed (the parser is ``fct_registry.cli.evaluate``).

On the CPU (the default) the metrics run in NumPy (:mod:`~fct_registry.evaluation.retrieval_np`),
so the core install without torch can score embeddings. ``--device cuda`` (or ``auto`` where torch
sees a GPU) runs the torch implementation, which needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from fct_registry.errors import DataError
from fct_registry.evaluation.distances_np import NP_DISTANCES
from fct_registry.evaluation.labels import align_labels, labels_from_array
from fct_registry.evaluation.retrieval_np import retrieval_scores_np


def run(args: argparse.Namespace) -> int:
    NP_DISTANCES.check(args.distance)  # fail on a typo before loading large files
    use_torch = _wants_torch(args.device)
    gallery_path, gallery_labels_path = args.gallery, args.gallery_labels
    if (gallery_path is None) != (gallery_labels_path is None):
        raise DataError("pass both --gallery and --gallery-labels, or neither")
    if gallery_path is None and not args.leave_one_out:
        raise DataError(
            "--gallery and --gallery-labels are required unless --leave-one-out is given "
            "(which uses the query set as the gallery)"
        )

    query = _floats(_load(args.query, "--query"), "--query")
    query_labels = _load(args.query_labels, "--query-labels")
    if gallery_path is None:
        gallery, gallery_labels = query, query_labels
    else:
        gallery = _floats(_load(gallery_path, "--gallery"), "--gallery")
        gallery_labels = _load(gallery_labels_path, "--gallery-labels")
    qlab, glab = _encode_labels(query_labels, gallery_labels)

    kwargs: dict[str, Any] = {"distance": args.distance, "leave_one_out": args.leave_one_out}
    if use_torch:
        scores = _torch_scores(query, gallery, qlab, glab, args.device, **kwargs)
    else:
        scores = retrieval_scores_np(query, gallery, qlab, glab, **kwargs)
    if args.json:
        print(json.dumps(scores))
    else:
        setup = (
            f"{len(query)} items, leave-one-out"
            if args.leave_one_out
            else f"{len(query)} queries vs {len(gallery)} gallery items"
        )
        print(f"{setup}, distance {args.distance}")
        print(f"{'metric':<8}{'percent':>9}")
        for name, value in scores.items():
            print(f"{name:<8}{value:>9.2f}")
    return 0


def _wants_torch(device: str) -> bool:
    """``cpu``: NumPy. ``auto``: torch only where it is installed and sees a GPU. Anything else
    (``cuda``, ``cuda:1``): torch, or an error naming the extra when it is not installed."""
    if device == "cpu":
        return False
    try:
        import torch  # heavy and optional: only the GPU path needs it
    except ImportError as exc:
        if device == "auto":
            return False
        raise DataError(
            f"--device {device} needs torch, which this install lacks; install "
            "'fct-registry[train]' or use --device cpu"
        ) from exc
    return device != "auto" or torch.cuda.is_available()


def _torch_scores(
    query: np.ndarray,
    gallery: np.ndarray,
    qlab: np.ndarray,
    glab: np.ndarray,
    device: str,
    **kwargs: Any,
) -> dict[str, float]:
    """The torch implementation on ``device``. Loaded by name (dispatch, as the CLI loads a
    command) because the core install has no torch, and ``--device cpu`` must not need it."""
    import torch

    pick_device = importlib.import_module("fct_registry.device").pick_device
    retrieval = importlib.import_module("fct_registry.evaluation.retrieval")
    q = torch.from_numpy(query)
    g = q if gallery is query else torch.from_numpy(gallery)
    scores = retrieval.retrieval_scores(
        q,
        g,
        torch.from_numpy(qlab),
        torch.from_numpy(glab),
        device=pick_device(device),
        **kwargs,
    )
    return scores.as_dict()


def _load(path: Path, flag: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{flag} file {path} does not exist; pass the path of a .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{flag} file {path} is not a readable .npy array ({exc}); "
            "write it with numpy.save from a numeric or string array"
        ) from exc


def _floats(array: np.ndarray, flag: str) -> np.ndarray:
    if array.dtype.kind != "f":
        raise DataError(f"{flag} has dtype {array.dtype}; save the model's float embeddings")
    return array


def _encode_labels(
    query_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Class ids as integer arrays that mean the same class on both sides: string labels are
    class names, matched by name (``align_labels``); integer ids are compared as they are."""
    query = labels_from_array(query_labels, "--query-labels")
    gallery = labels_from_array(gallery_labels, "--gallery-labels")
    q, g, _ = align_labels(
        query.ids,
        query.classes,
        gallery.ids,
        gallery.classes,
        query_name="--query-labels",
        gallery_name="--gallery-labels",
    )
    return q, g
