"""Benchmark: vectorised retrieval metrics vs the naive per-query loop, side by side.

    .venv/bin/python benchmarks/bench_evaluation.py [--n 10000] [--dim 128] [--distance l2]
    .venv/bin/python benchmarks/bench_evaluation.py --embeddings E.npy --labels L.npy

Leave-one-out over one set of embeddings (synthetic: 10 Gaussian clusters, fixed seed). The naive
path is the tests' oracle (``naive_retrieval_scores`` in tests/evaluation/test_retrieval.py:
per query, a float64 distance row, numpy argsort and sklearn's average_precision_score), so the
benchmark times exactly the loop the tests trust. It prints wall and CPU time of both, the
speed-up, the largest score difference (must be <= 1e-4 percentage points) and the memory the
vectorised path used. Exit status 1 if the scores disagree.

Set OMP_WAIT_POLICY=PASSIVE (done below unless already set): OpenMP worker threads otherwise
spin-wait between parallel regions, which inflates process_time and steals the core that the
single-threaded naive loop and other processes need on a small machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_SCORE_DIFF = 1e-4  # percentage points


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, CPU seconds of this process over all threads)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="synthetic items (default 10000)")
    parser.add_argument("--dim", type=int, default=128, help="synthetic dimension (default 128)")
    parser.add_argument("--classes", type=int, default=10, help="synthetic classes (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distance", default="l2", help="l2 or cosine (default l2)")
    parser.add_argument("--embeddings", type=Path, help="(n, dim) .npy instead of synthetic")
    parser.add_argument("--labels", type=Path, help="(n,) .npy of class ids for --embeddings")
    args = parser.parse_args(argv)
    if (args.embeddings is None) != (args.labels is None):
        parser.error("pass both --embeddings and --labels, or neither")

    # libgomp reads OMP_WAIT_POLICY when torch loads it, so set it before importing torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(REPO_ROOT))  # fct_registry and the tests' oracle, from a checkout
    import numpy as np
    import torch

    from fct_registry.evaluation.retrieval import BYTES_PER_PAIR, auto_chunk_size, retrieval_scores
    from tests.evaluation.test_retrieval import naive_retrieval_scores

    if args.embeddings is not None:
        embeddings = np.load(args.embeddings, allow_pickle=False).astype(np.float32)
        labels = np.load(args.labels, allow_pickle=False)
        source = f"{args.embeddings.name}"
    else:
        rng = np.random.default_rng(args.seed)
        labels = rng.integers(args.classes, size=args.n)
        # Centre spread vs noise chosen so the scores are far from 0 and 100 (about 97/100/62
        # for l2 at the defaults), so a wrong ranking would show.
        centers = rng.normal(scale=0.15, size=(args.classes, args.dim))
        noise = rng.normal(scale=0.3, size=(args.n, args.dim))
        embeddings = (centers[labels] + noise).astype(np.float32)
        source = f"synthetic, {args.classes} classes, seed {args.seed}"
    n = len(embeddings)
    emb_t, labels_t = torch.from_numpy(embeddings), torch.from_numpy(labels)

    # Warm up (lazy library loads, thread pools) so the RSS growth below is the call's own.
    retrieval_scores(emb_t[:50], emb_t[:50], labels_t[:50], labels_t[:50], distance=args.distance)
    rss_before = peak_rss_mb()
    fast, fast_wall, fast_cpu = timed(
        lambda: retrieval_scores(
            emb_t, emb_t, labels_t, labels_t, distance=args.distance, leave_one_out=True
        )
    )
    rss_growth = peak_rss_mb() - rss_before  # before the naive loop can raise the peak
    naive, naive_wall, naive_cpu = timed(
        lambda: naive_retrieval_scores(
            embeddings, embeddings, labels, labels, distance=args.distance, leave_one_out=True
        )
    )

    fast_scores = fast.as_dict()
    diffs = {k: abs(fast_scores[k] - naive[k]) for k in fast_scores}
    max_diff = max(diffs.values())
    chunk = auto_chunk_size(n)

    print(f"data: {n} x {embeddings.shape[1]} ({source}), leave-one-out, distance {args.distance}")
    print(
        f"torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    print(f"\n{'':<12}{'wall s':>9}{'cpu s':>9}")
    print(f"{'vectorised':<12}{fast_wall:>9.2f}{fast_cpu:>9.2f}")
    print(f"{'naive loop':<12}{naive_wall:>9.2f}{naive_cpu:>9.2f}")
    print(f"speed-up: {naive_wall / fast_wall:.1f}x wall, {naive_cpu / fast_cpu:.1f}x CPU")
    print(f"\n{'score %':<12}{'vectorised':>12}{'naive':>12}{'|diff|':>10}")
    for k in fast_scores:
        print(f"{k:<12}{fast_scores[k]:>12.5f}{naive[k]:>12.5f}{diffs[k]:>10.1e}")
    verdict = "ok" if max_diff <= MAX_SCORE_DIFF else "FAIL"
    print(f"max |diff| {max_diff:.1e} percentage points (limit {MAX_SCORE_DIFF:.0e}): {verdict}")
    print(
        f"\nmemory: auto chunk {chunk} queries x {n} gallery x {BYTES_PER_PAIR} B/pair = "
        f"{chunk * n * BYTES_PER_PAIR / 2**20:.0f} MiB estimated working set per chunk;\n"
        f"        peak RSS (ru_maxrss) grew {rss_growth:.0f} MiB during the vectorised call "
        "(a lower bound: memory freed earlier and reused does not show)"
    )
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
