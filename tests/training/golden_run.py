"""A tiny run of every training stage on the embedded default (prepared Fashion-MNIST splits),
reduced to one sha256 per output: model weights, stored embeddings, training histories, and the
epoch each checkpoint reached (its fingerprint now hashes the code too, so it changes with any
edit). ``test_golden.py`` compares it with the digests recorded from the code
before training read data through the streaming interface, so the default path provably trains
the same bits (same batch order, same augmentation draws).

``python -m tests.training.golden_run OUT_DIR DIGESTS.json`` writes the digests (training logs go
to stdout)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

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
    """What the bits depend on besides the code: torch's version and the CPU kernels it picks."""
    return f"torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()}"


def run(out: Path) -> dict[str, str]:
    # run_all imports the stage modules; imported here so collecting tests stays light
    from fct_registry.stages.run_all import train_all

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    params = parse_params(golden_params())
    layout = Layout(out)
    train_all(params, layout)
    return digests(out)


if __name__ == "__main__":
    digest = run(Path(sys.argv[1])) | {"_platform": platform()}
    Path(sys.argv[2]).write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
