"""The whole ``dvc repro`` of a fresh clone, every stage on a QEMU model of another CPU maker.

``scripts/emulated_cpus.py`` checks the golden run (a short training of every stage) under QEMU.
This runs the real thing: a fresh clone of HEAD, ``dvc repro`` on the embedded default, with
every stage's ``python`` started under ``qemu-x86_64 -cpu CPU`` (DVC itself runs natively; it
only hashes files). Then ``git status`` of the clone: in portable mode every tracked output and
``dvc.lock`` must come back byte-identical, which is what the README promises a user's machine.

QEMU is slow at torch's vector kernels: the side-info stage alone took 64 min under QEMU on the
2-core machine that runs the whole native repro in 15 min, so the whole repro takes hours.
``--stop-after`` stops it after that many seconds and compares each stage that finished, output
by output, with the committed ``dvc.lock``.

The stages' ``python`` is a shim first on ``PATH``; the portable pins are set beforehand, because
a stage that re-executed itself to pin them would leave QEMU (``execve`` runs the host binary).

    python scripts/emulated_repro.py --qemu /path/to/qemu-x86_64          # the whole repro
    python scripts/emulated_repro.py --qemu ... --stop-after 5400         # the stages done in 1.5 h
    python scripts/emulated_repro.py bct@v1_to_v2 --qemu ... --clone DIR  # more, where it stopped
    python scripts/emulated_repro.py --qemu ... --cpu EPYC-Rome --log docs/determinism/x.log

Needs QEMU 10 (docs/determinism.md, "Emulating other CPU makers") and the embedded default's
data (``make setup``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drift import clean_env  # noqa: E402  (scripts/, this script's folder)
from emulated_cpus import add_qemu_option, qemu_version, require_qemu  # noqa: E402

from fct_registry import kernel_env  # noqa: E402
from tests.training.golden_run import this_cpu  # noqa: E402

LOG = ROOT / "docs" / "determinism" / "emulated-repro.log"


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def shim(folder: Path, qemu: str, cpu: str) -> Path:
    """A ``python`` that runs this interpreter under QEMU's ``cpu``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python"
    path.write_text(
        "#!/bin/sh\n"
        f'exec {shlex.quote(qemu)} -cpu {shlex.quote(cpu)} {shlex.quote(sys.executable)} "$@"\n'
    )
    path.chmod(0o755)
    return folder


def repro(
    clone: Path, shim_dir: Path, stop_after: float | None, targets: list[str]
) -> tuple[list[tuple[float, str]], float, bool]:
    """``dvc repro [TARGETS]`` in ``clone`` with the shim first on PATH. Returns the stages
    started (in order: seconds from the start, name), the wall seconds, and whether it was
    stopped at ``stop_after`` seconds (then the last stage started did not finish)."""
    env = kernel_env.portable_env(clean_env({}))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine
    env |= {
        "PATH": f"{shim_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "PYTHONPATH": str(clone),
        "MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}",
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", *targets],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopping it stops the stage too
    )
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        os.killpg(proc.pid, signal.SIGTERM)

    timer = threading.Timer(stop_after, stop) if stop_after is not None else None
    if timer:
        timer.daemon = True
        timer.start()
    started: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Running stage '"):
            started.append((time.perf_counter() - start, line.split("'")[1]))
            print(_stage_line(*started[-1]), file=sys.stderr, flush=True)
    returncode = proc.wait()
    if timer:
        timer.cancel()  # a run that ended by itself is not "stopped" by a late timer
    if returncode != 0 and not stopped.is_set():
        sys.exit(f"error: dvc repro failed in {clone} (kept for inspection); see its output")
    return started, time.perf_counter() - start, stopped.is_set()


def _stage_line(seconds: float, name: str) -> str:
    return f"{seconds:7.0f} s  Running stage '{name}':"


def stage_outputs(lock_text: str) -> dict[str, list[dict]]:
    """Each stage's ``outs`` (path, md5, size) in a ``dvc.lock``."""
    return {name: s.get("outs", []) for name, s in yaml.safe_load(lock_text)["stages"].items()}


def compare(committed: str, now: str, finished: list[str]) -> list[str]:
    """One line per finished stage: whether every output it wrote has the committed hash."""
    before, after = stage_outputs(committed), stage_outputs(now)
    lines = []
    for name in finished:
        old = {o["path"]: o.get("md5") for o in before.get(name, [])}
        new = {o["path"]: o.get("md5") for o in after.get(name, [])}
        differ = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
        verdict = "all byte-identical" if not differ else "DIFFER: " + ", ".join(differ)
        lines.append(f"{name}: {len(new)} outputs, {verdict}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_qemu_option(ap)
    ap.add_argument(
        "stages", nargs="*", help="dvc repro targets (default: every stage; upstream ones run too)"
    )
    ap.add_argument("--cpu", default="Haswell-v4", help="QEMU CPU model (default: Haswell-v4)")
    ap.add_argument(
        "--stop-after",
        type=float,
        help="stop after this many seconds and compare the stages finished by then",
    )
    ap.add_argument(
        "--clone",
        type=Path,
        help="a clone a stopped run left: run on there (the stages it finished are up to date)",
    )
    ap.add_argument("--log", type=Path, default=LOG, help=f"where the log goes (default: {LOG})")
    args = ap.parse_args()
    require_qemu(args.qemu)
    if args.clone:  # where a stopped run left off: its finished stages are not run again
        work, clone = args.clone.resolve().parent, args.clone.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="fct-emulated-repro-"))
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = _git("rev-parse", "HEAD", cwd=clone)
    log = [
        f"# dvc repro of {'the clone a stopped run left' if args.clone else 'a fresh clone'} "
        f"of {commit}, every stage under "
        f"QEMU {qemu_version(args.qemu)} -cpu {args.cpu}",
        f"# host: {this_cpu()}; "
        f"command: python scripts/emulated_repro.py {' '.join(args.stages)} --cpu {args.cpu}"
        + (f" --stop-after {args.stop_after:.0f}" if args.stop_after else "")
        + (" --clone CLONE" if args.clone else ""),
    ]
    committed = _git("show", "HEAD:dvc.lock", cwd=clone)
    shim_dir = shim(work / "shim", args.qemu, args.cpu)
    started, wall, stopped = repro(clone, shim_dir, args.stop_after, args.stages)
    names = [name for _, name in started]
    finished = names[:-1] if stopped else names
    report = compare(committed, (clone / "dvc.lock").read_text(), finished)
    wall_line = f"# wall: {wall:.0f} s"
    if stopped:
        wall_line += f"; stopped at --stop-after {args.stop_after:.0f} s, in {names[-1]}"
    log += [
        *(_stage_line(*s) for s in started),
        wall_line,
        f"# stages finished: {len(finished)} of {len(stage_outputs(committed))}; each one's "
        "outputs against the committed dvc.lock:",
        *report,
    ]
    differ = any("DIFFER:" in line for line in report)
    if not stopped and not args.stages and not args.clone:  # the whole repro of a fresh clone
        status = _git("status", "--porcelain", cwd=clone)
        log += [
            "# git status --porcelain (empty: every tracked output and dvc.lock "
            "byte-identical, nothing new outside .gitignore):",
            *(status.splitlines() or ["(empty)"]),
        ]
        differ = differ or bool(status)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a" if args.clone else "w") as fh:  # a resumed run adds to its log
        fh.write("\n".join(log) + "\n")
    print("\n".join(log))
    if stopped:
        print(f"the clone is kept: --clone {clone} resumes it", file=sys.stderr)
    elif not args.clone:
        shutil.rmtree(work)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
