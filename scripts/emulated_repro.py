"""The whole ``dvc repro`` of a fresh clone, every stage on a QEMU model of another CPU maker.

``scripts/emulated_cpus.py`` checks the golden run (a short training of every stage) under QEMU.
This runs the real thing: a fresh clone of HEAD, ``dvc repro`` on the embedded default, with
every stage's ``python`` started under ``qemu-x86_64 -cpu CPU`` (DVC itself runs natively; it
only hashes files). Then ``git status`` of the clone: in portable mode every tracked output and
``dvc.lock`` must come back byte-identical, which is what the README promises a user's machine.

The stages' ``python`` is a shim first on ``PATH``; the portable pins are set beforehand, because
a stage that re-executed itself to pin them would leave QEMU (``execve`` runs the host binary).

    python scripts/emulated_repro.py --qemu /path/to/qemu-x86_64            # ~2 h on 2 cores
    python scripts/emulated_repro.py --qemu ... --cpu EPYC-Rome --log docs/determinism/x.log

Needs QEMU 10 (docs/determinism.md, "Emulating other CPU makers") and the embedded default's
data (``make setup``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drift import clean_env  # noqa: E402  (scripts/, this script's folder)
from emulated_cpus import add_qemu_option, host_cpu, qemu_version, require_qemu  # noqa: E402

from fct_registry import kernel_env  # noqa: E402

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


def repro(clone: Path, shim_dir: Path, log: list[str]) -> float:
    """``dvc repro`` in ``clone`` with the shim first on PATH; stage starts go to ``log``."""
    env = kernel_env.portable_env(clean_env({}))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine
    env |= {
        "PATH": f"{shim_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "PYTHONPATH": str(clone),
        "MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}",
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Running stage"):
            stamp = f"{time.perf_counter() - start:7.0f} s  {line.strip()}"
            log.append(stamp)
            print(stamp, file=sys.stderr, flush=True)
    if proc.wait() != 0:
        sys.exit(f"error: dvc repro failed in {clone} (kept for inspection); see its output")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_qemu_option(ap)
    ap.add_argument("--cpu", default="Haswell-v4", help="QEMU CPU model (default: Haswell-v4)")
    ap.add_argument("--log", type=Path, default=LOG, help=f"where the log goes (default: {LOG})")
    args = ap.parse_args()
    require_qemu(args.qemu)
    work = Path(tempfile.mkdtemp(prefix="fct-emulated-repro-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = _git("rev-parse", "HEAD", cwd=clone)
    log = [
        f"# dvc repro of a fresh clone of {commit}, every stage under "
        f"QEMU {qemu_version(args.qemu)} -cpu {args.cpu}",
        f"# host: {host_cpu().removeprefix('this machine: ')}; "
        f"command: python scripts/emulated_repro.py --cpu {args.cpu}",
    ]
    wall = repro(clone, shim(work / "shim", args.qemu, args.cpu), log)
    status = _git("status", "--porcelain", cwd=clone)
    log += [
        f"# wall: {wall:.0f} s",
        "# git status --porcelain (empty: every tracked output and dvc.lock byte-identical, "
        "nothing new outside .gitignore):",
        *(status.splitlines() or ["(empty)"]),
    ]
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text("\n".join(log) + "\n")
    print("\n".join(log[-(len(status.splitlines()) or 1) - 2 :]))
    shutil.rmtree(work)
    sys.exit(1 if status else 0)


if __name__ == "__main__":
    main()
