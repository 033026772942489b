"""Benchmark: what ``determinism: portable`` costs, one training stage with and without it.

    .venv/bin/python benchmarks/bench_determinism.py [--version 2] [--train 4000]
        [--batches 20] [--repeat 3]

Prepares a subset of the embedded default (``params.yaml`` with ``data.max_train`` images), then
runs the real stage ``python -m pipelines.train_version --version V`` (one epoch of ``--batches``
batches, then the embedding of both splits) as a fresh process per run, alternating the modes so
that load on a shared machine hits them alike:

* ``fast``: each library's own kernels and thread count (what ``determinism: fast`` does);
* ``portable``: as ``dvc repro`` runs it: the stage re-executes itself under the pins;
* ``portable, pinned env``: the same pins already in the environment, so no re-execution; the
  difference to ``portable`` is the cost of re-executing (one more interpreter and torch import).

Prints each mode's median wall and CPU seconds (CPU from the children's rusage: on a shared
machine wall time alone misleads) and the ratios to ``fast``, side by side.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fct_registry import kernel_env  # noqa: E402


def _params(version: int, train: int, batches: int, mode: str) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["determinism"] = mode
    raw["data"]["max_train"] = train
    raw["versions"][str(version)]["optim"].update(epochs=1, max_batches=batches)
    return raw


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, default=2)
    parser.add_argument("--train", type=int, default=4000, help="training images prepared")
    parser.add_argument("--batches", type=int, default=20, help="training batches (one epoch)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    base = {k: v for k, v in os.environ.items() if k not in kernel_env.PINNED_ENV}
    base.pop(kernel_env.MARKER, None)
    base.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    modes = {
        "fast": ("fast", base),
        "portable": ("portable", base),
        "portable, pinned env": ("portable", kernel_env.portable_env(base)),
    }
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        files = {}
        for mode in ("fast", "portable"):
            files[mode] = Path(tmp) / f"{mode}.yaml"
            raw = _params(args.version, args.train, args.batches, mode)
            files[mode].write_text(yaml.safe_dump(raw))
        stage = [sys.executable, "-m", "pipelines.train_version", "--version", str(args.version)]
        _run(
            [sys.executable, "-m", "pipelines.prepare", "--params", str(files["fast"]),
             "--outputs", str(out)],
            base,
        )  # fmt: skip
        for _ in range(args.repeat):
            for name, (mode, env) in modes.items():
                # a finished checkpoint would make the next run resume instead of training
                shutil.rmtree(out / "checkpoints", ignore_errors=True)
                argv = [*stage, "--params", str(files[mode]), "--outputs", str(out)]
                times[name].append(_run(argv, env))

    print(
        f"train@{args.version}: {args.batches} batches of the default subset "
        f"({args.train} train images), then embedding both splits; medians of {args.repeat} "
        f"runs, alternating; {os.cpu_count()} CPUs, portable threads {kernel_env.PORTABLE_THREADS}"
    )
    fast_wall = statistics.median(w for w, _ in times["fast"])
    fast_cpu = statistics.median(c for _, c in times["fast"])
    print(f"{'mode':<22} {'wall s':>8} {'CPU s':>8} {'wall/fast':>10} {'CPU/fast':>9}")
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<22} {wall:8.1f} {cpu:8.1f} {wall / fast_wall:10.2f} {cpu / fast_cpu:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
