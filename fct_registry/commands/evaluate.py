"""``fct evaluate``, once its arguments are parsed (the parser is ``fct_registry.cli.evaluate``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fct_registry.device import pick_device
from fct_registry.errors import DataError
from fct_registry.evaluation.distances import DISTANCES
from fct_registry.evaluation.labels import align_labels, labels_from_array
from fct_registry.evaluation.retrieval import retrieval_scores

if TYPE_CHECKING:
    import numpy as np
    import torch


def run(args: argparse.Namespace) -> int:
    # Heavy imports here, so ``fct --help`` and other subcommands don't pay for torch.

    DISTANCES.check(args.distance)  # fail on a typo before loading large files
    device = pick_device(args.device)
    gallery_path, gallery_labels_path = args.gallery, args.gallery_labels
    if (gallery_path is None) != (gallery_labels_path is None):
        raise DataError("pass both --gallery and --gallery-labels, or neither")
    if gallery_path is None and not args.leave_one_out:
        raise DataError(
            "--gallery and --gallery-labels are required unless --leave-one-out is given "
            "(which uses the query set as the gallery)"
        )

    query = _to_tensor(_load(args.query, "--query"), "--query")
    query_labels = _load(args.query_labels, "--query-labels")
    if gallery_path is None:
        gallery, gallery_labels = query, query_labels
    else:
        gallery = _to_tensor(_load(gallery_path, "--gallery"), "--gallery")
        gallery_labels = _load(gallery_labels_path, "--gallery-labels")
    qlab, glab = _encode_labels(query_labels, gallery_labels)

    scores = retrieval_scores(
        query,
        gallery,
        qlab,
        glab,
        distance=args.distance,
        leave_one_out=args.leave_one_out,
        device=device,
    )
    if args.json:
        print(json.dumps(scores.as_dict()))
    else:
        setup = (
            f"{len(query)} items, leave-one-out"
            if args.leave_one_out
            else f"{len(query)} queries vs {len(gallery)} gallery items"
        )
        print(f"{setup}, distance {args.distance}")
        print(f"{'metric':<8}{'percent':>9}")
        for name, value in scores.as_dict().items():
            print(f"{name:<8}{value:>9.2f}")
    return 0


def _load(path: Path, flag: str) -> np.ndarray:
    import numpy as np

    if not path.is_file():
        raise DataError(f"{flag} file {path} does not exist; pass the path of a .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{flag} file {path} is not a readable .npy array ({exc}); "
            "write it with numpy.save from a numeric or string array"
        ) from exc


def _to_tensor(array: np.ndarray, flag: str) -> torch.Tensor:
    import torch

    try:
        return torch.from_numpy(array)
    except TypeError as exc:
        raise DataError(
            f"{flag} has dtype {array.dtype}, which torch cannot hold; save float embeddings"
        ) from exc


def _encode_labels(
    query_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ids as integer tensors that mean the same class on both sides: string labels are
    class names, matched by name (``align_labels``); integer ids are compared as they are."""
    import torch

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
    return torch.from_numpy(q), torch.from_numpy(g)
