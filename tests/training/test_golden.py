"""The embedded default (prepared safetensors splits) trains the recorded bits on any x86-64 CPU
with AVX2: every weight, stored embedding, history and checkpoint epoch of a tiny run of every
training stage, under ``determinism: portable``, matches ``golden_digests.json`` (made by
``python -m tests.training.golden_run`` under the portable pins, on the developers' AVX-512
machine). On another machine, CI's for one, this is the cross-machine check of the pins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fct_registry import determinism, kernel_env
from tests.conftest import ROOT, needs_fashion
from tests.training.golden_run import platform, this_cpu

GOLDEN = Path(__file__).with_name("golden_digests.json")


@needs_fashion
@pytest.mark.skipif(not determinism.cpu_has_avx2(), reason="portable mode needs AVX2")
def test_default_path_trains_the_recorded_bits(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    recorded = expected.pop("_platform")
    if platform() != recorded:  # another torch build: other kernels, not a change in the code
        pytest.skip(f"digests were recorded with {recorded}; this is {platform()}")
    out = tmp_path / "digests.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.training.golden_run", str(tmp_path / "outputs"), str(out)],
        cwd=ROOT,
        env=kernel_env.portable_env(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    got.pop("_platform")
    assert got.pop("_capability") == "AVX2"
    assert set(got) == set(expected)
    different = sorted(k for k in expected if got[k] != expected[k])
    assert not different, (
        f"outputs differ from the recorded run on this machine ({this_cpu()}): {different}"
    )
