"""Benchmark: the upgrade engines side by side (``local`` vs ``ray``) on one synthetic gallery.

    .venv/bin/python benchmarks/bench_engines.py                    # 500,000 rows, ~3 min
    .venv/bin/python benchmarks/bench_engines.py --rows 200000 --engines local,ray --rounds 2

Each engine runs in its own child process, so every number covers everything that engine
starts: for Ray, the driver, raylet, GCS and every worker and actor process. Per run:

* rows/s: rows over the engine's wall time (Ray's start-up is timed apart and not included:
  it is paid once per job, not per row; it is printed beside);
* CPU per row: CPU seconds of the child's whole process tree over the run (every process
  sampled every 0.1 s from ``/proc``, so actors that exit at the end still count), over rows;
  the engine's own figure (driver + what the actors measured around each shard) is printed
  beside: the difference is Ray's overhead outside the shard work;
* peak memory: the high-water mark of the tree's summed RSS and summed PSS, sampled every
  0.1 s by this process (RSS counts shared libraries once per process; PSS shares them out,
  so it is the fairer total for a multi-process engine).

The gallery uses the default family's widths (params.yaml: the newest version's chain) with
random weights; the outputs of the engines are checked to be byte-identical (shard sha256s).
OMP_WAIT_POLICY=PASSIVE, as everywhere in this project's benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SIDE = "bench-side-info/1"


# --- the child: one engine, one run --------------------------------------------------------------


class TreeCpu:
    """CPU seconds used by this process and its descendants between start and :meth:`stop`.

    Every process of the tree is sampled every 0.1 s (user + system of its own threads), so
    processes that exit during the run (Ray's actors, when their pool is torn down) still
    count up to their last sample; Ray does not reap them into a parent's ``children_*``
    times, and ``getrusage(RUSAGE_CHILDREN)`` misses them for the same reason."""

    def __init__(self, every: float = 0.1) -> None:
        import psutil

        self._me, self.every = psutil.Process(), every
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._sample(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self, into: dict[int, float]) -> None:
        import psutil

        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            into[proc.pid] = max(into.get(proc.pid, 0.0), t.user + t.system)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample(self.last)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample(self.last)
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.last.items())


def child(args: argparse.Namespace) -> int:
    """Run one engine on ``args.gallery`` and print its timings as JSON on the last line."""
    from fct_registry.gallery import Gallery, open_storage
    from fct_registry.upgrade import UpgradePlan
    from fct_registry.upgrade.engines import create_engine

    plan = UpgradePlan.from_onnx("bench", 2, {(1, SIDE): [args.onnx]})
    options: dict[str, Any] = {}
    startup = 0.0
    ray = None
    if args.child == "ray":
        import logging

        import ray

        start = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        startup = time.perf_counter() - start
        options = {"workers": args.workers} if args.workers else {}
    engine = create_engine(args.child, **options)
    tree, wall0 = TreeCpu(), time.perf_counter()
    report = engine.run(
        Gallery.open(args.gallery), open_storage(args.out), plan, batch_size=args.batch_size
    )
    wall, cpu = time.perf_counter() - wall0, tree.stop()
    if ray is not None:
        ray.shutdown()
    print(
        json.dumps(
            {
                "engine": args.child,
                "rows": report.upgraded_rows,
                "wall": wall,
                "tree_cpu": cpu,
                "report_cpu": report.cpu_seconds,
                "startup": startup,
                "shards": [s.sha256 for s in report.manifest.shards],
            }
        )
    )
    return 0


# --- the parent: children, memory sampling, table ------------------------------------------------


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0


class TreeMemory:
    """Samples the summed RSS and PSS of a process tree until stopped; keeps the maxima."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every = pid, every
        self.rss_mb = self.pss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            rss = pss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
                pss += _pss_kb(proc.pid) * 1024
            self.rss_mb = max(self.rss_mb, rss / 2**20)
            self.pss_mb = max(self.pss_mb, pss / 2**20)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_engine(
    engine: str, gallery: Path, out: Path, onnx: Path, args: argparse.Namespace
) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--gallery",
        str(gallery),
        "--out",
        str(out),
        "--onnx",
        str(onnx),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    stdout, stderr = proc.communicate()
    memory.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} run failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(rss_mb=memory.rss_mb, pss_mb=memory.pss_mb)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=100_000,
        help="rows per shard (`fct embed`'s default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--workers", type=int, help="Ray actors (default: the engine's)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--gallery", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    if args.child:
        return child(args)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from benchmarks.bench_upgrade import default_family, export_chain, write_synthetic
    from fct_registry.models.transformations import TRANSFORMATIONS, TransformationChain

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-engines-"))
    workdir.mkdir(parents=True, exist_ok=True)
    fam = default_family()
    hop = TRANSFORMATIONS.build(
        fam["kind"],
        old_dim=fam["old_dim"],
        new_dim=fam["new_dim"],
        side_info_dim=fam["side_dim"],
        hidden_dim=fam["hidden"],
    )
    onnx = export_chain(
        TransformationChain([hop]), workdir / "chain.onnx", fam["old_dim"], fam["side_dim"]
    )
    gallery = workdir / "gallery"
    if not gallery.exists():
        write_synthetic(
            gallery, args.rows, fam["old_dim"], fam["side_dim"], shard_rows=args.shard_rows
        )
    size = sum(p.stat().st_size for p in gallery.iterdir()) / 2**20
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; gallery "
        f"{args.rows:,} rows ({size:,.0f} MiB, {-(-args.rows // args.shard_rows)} shards), "
        f"chain {fam['kind']} {fam['old_dim']}+{fam['side_dim']}->{fam['new_dim']} hidden "
        f"{fam['hidden']}, batch {args.batch_size}"
    )

    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    for _ in range(args.rounds):
        for engine in engines:
            runs[engine].append(run_engine(engine, gallery, workdir / f"out-{engine}", onnx, args))
    med = statistics.median
    print(
        f"\n{'engine':<8}{'rows/s':>10}{'wall s':>9}{'CPU s':>9}{'CPU us/row':>12}"
        f"{'engine us/row':>14}"
        f"{'start-up s':>12}{'peak RSS MiB':>14}{'peak PSS MiB':>14}"
    )
    for engine, rs in runs.items():
        rows = rs[0]["rows"]
        print(
            f"{engine:<8}{med([rows / r['wall'] for r in rs]):>10,.0f}"
            f"{med([r['wall'] for r in rs]):>9.1f}{med([r['tree_cpu'] for r in rs]):>9.1f}"
            f"{1e6 * med([r['tree_cpu'] / rows for r in rs]):>12.1f}"
            f"{1e6 * med([r['report_cpu'] / rows for r in rs]):>14.1f}"
            f"{med([r['startup'] for r in rs]):>12.1f}{max(r['rss_mb'] for r in rs):>14,.0f}"
            f"{max(r['pss_mb'] for r in rs):>14,.0f}"
        )
    print(
        f"  medians over {args.rounds} round(s); CPU and memory over each engine's whole "
        "process tree; peak = max over rounds; load average now "
        f"{os.getloadavg()[0]:.1f}"
    )
    shards = {tuple(r["shards"]) for rs in runs.values() for r in rs}
    same = "yes" if len(shards) == 1 else "NO"
    print(f"  outputs byte-identical across engines and rounds: {same}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if len(shards) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
