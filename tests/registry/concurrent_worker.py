"""A registration process for the concurrency test, started from a forkserver that has already
imported torch and mlflow (a cold interpreter takes ~8 s of CPU to import them; 8 of them
would dominate the test on a 2-core machine)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

PRELOAD = [
    "torch",
    "mlflow",
    "onnxscript",
    "torch.onnx",
    "fct_registry.models.io",
    "fct_registry.registry.register",
    "fct_registry.registry.flavor",
    "tests.registry.concurrent_worker",
]


def register_worker(project: str, uri: str, out: str, barrier: Any) -> None:
    """Wait until all workers are ready, register ``project`` into ``uri``, write the summary
    (or the traceback) to ``out``."""
    from fct_registry.config import load_params
    from fct_registry.layout import Layout
    from fct_registry.registry.register import register_pipeline

    root = Path(project)
    params = load_params(root / "params.yaml")
    barrier.wait(timeout=120)
    try:
        summary = register_pipeline(params, Layout(root / "outputs"), uri, root=root)
    except BaseException:
        Path(out).write_text(json.dumps({"error": traceback.format_exc()}))
        raise
    Path(out).write_text(json.dumps(summary.as_dict()))
