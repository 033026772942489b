"""A tiny run of every training stage on the embedded default (prepared Fashion-MNIST splits),
reduced to one sha256 per output: model weights, stored embeddings, training histories, and the
epoch each checkpoint reached (its fingerprint now hashes the code too, so it changes with any
edit). It runs under ``determinism: portable``, so the digests are the same on every x86-64
CPU with AVX2: ``test_golden.py`` compares them with the recorded ones on whatever machine runs
the suite (CI's included), which checks both that the code trains the same bits and that the
pins make them the same on that machine.

``python -m tests.training.golden_run OUT_DIR DIGESTS.json`` writes the digests (training logs go
to stdout); start it with ``kernel_env.portable_env`` (``test_golden.py`` shows how). With
``--fast`` it runs with this machine's own kernels instead (``scripts/emulated_cpus.py`` shows
what the pins remove)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from fct_registry import determinism
from fct_registry.config import parse_params
from fct_registry.layout import Layout
from tests.conftest import tiny_params


def golden_params() -> dict:
    raw = tiny_params(train=300, test=100)
    for t in raw["transformations"].values():
        t["seeds"] = 1
    # one transformation on features recomputed from augmented images (reads the images)
    raw["transformations"]["v1_to_v2_ml_fct"]["features"] = "augmented"
    return raw


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(root: Path) -> dict[str, str]:
    """sha256 of every weight, embedding, history and data file under ``root``, plus each
    checkpoint's epoch."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.suffix in (".safetensors", ".csv") or path.name in ("info.json", "spec.json"):
            out[rel] = _sha(path)
        elif path.suffix == ".pt":
            state = torch.load(path, weights_only=True)
            out[rel + ":epoch"] = str(state["epoch"])
    return out


def platform() -> str:
    """What the bits depend on besides the code: torch's version (the kernels are pinned)."""
    return f"torch {torch.__version__}, determinism portable"


def this_cpu() -> str:
    """This CPU in one line (model, AVX-512 or not, CPU count): which machine gave which bits."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    fields = dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != " "
    )
    model = fields.get("model name\t", "unknown CPU").strip()
    flags = set(fields.get("flags\t\t", "").split())
    return f"{model}, AVX-512 {'yes' if 'avx512f' in flags else 'no'}, {os.cpu_count()} CPUs"


def run(out: Path, *, pinned: bool = True) -> dict[str, str]:
    # run_all imports the stage modules; imported here so collecting tests stays light
    from fct_registry.stages.run_all import train_all

    if pinned:
        determinism.apply_in_process()
    params = parse_params(golden_params())
    layout = Layout(out)
    train_all(params, layout)
    return digests(out)


if __name__ == "__main__":
    fast = sys.argv[3:] == ["--fast"]
    digest = run(Path(sys.argv[1]), pinned=not fast) | {
        "_platform": platform(),
        # the kernels torch ran: what a CPU (or an emulated one) offered under the pins
        "_capability": torch.backends.cpu.get_cpu_capability(),
    }
    Path(sys.argv[2]).write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
