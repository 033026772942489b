"""Benchmark: ``fct gate`` end to end, read-only, against a real pipeline's outputs and store.

    .venv/bin/python benchmarks/bench_gate.py [--outputs outputs] [--tracking-uri URI]
        [--candidate fashion@latest] [--baseline fashion@production] [--bootstrap] [--repeat 3]

Runs the real command (``python -m fct_registry gate ...``, never ``--promote`` or ``--record``,
so the store is not written) ``--repeat`` times as a fresh process, the way CI runs it: Python
and MLflow start-up, the registry read, the chain download (checksums verified), the four
leave-one-out retrieval evaluations on the held-out split and the reports are all inside the
measurement. Prints wall and CPU seconds per run (CPU from the child's rusage: on a shared
machine wall time alone misleads) and the gate's own in-process seconds. Exit status 1 if the
slowest run misses ``--budget`` (default 120 s, the issue's bound for the default family).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default="outputs")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--candidate", default=None)
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--bootstrap", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0)
    args = parser.parse_args()

    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "gate.json"
        argv = [
            sys.executable,
            "-m",
            "fct_registry",
            "gate",
            "--outputs",
            args.outputs,
            "--json-out",
            str(report),
        ]
        for flag, value in (
            ("--tracking-uri", args.tracking_uri),
            ("--candidate", args.candidate),
            ("--baseline", args.baseline),
        ):
            if value:
                argv += [flag, value]
        if args.bootstrap:
            argv.append("--bootstrap")
        print("command:", " ".join(argv[1:]))
        for i in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            run = subprocess.run(argv, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if run.returncode not in (0, 1):
                print(run.stderr[-3000:], file=sys.stderr)
                return 2
            data = json.loads(report.read_text())
            walls.append(wall)
            print(
                f"run {i + 1}: wall {wall:6.1f} s, CPU {cpu:6.1f} s, gate in-process "
                f"{data['seconds']:5.1f} s; {data['candidate']['version']} vs "
                f"{data['baseline']['version']} on {data['items']} items: {data['verdict']} "
                f"(exit {run.returncode})"
            )
    print(
        f"slowest {max(walls):.1f} s against a budget of {args.budget:.0f} s: "
        f"{'OK' if max(walls) <= args.budget else 'MISSED'}"
    )
    return 0 if max(walls) <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
