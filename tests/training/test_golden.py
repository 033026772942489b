"""The embedded default (prepared safetensors splits) trains the same bits as before training
read data through the split interface: every weight, stored embedding, history and checkpoint
epoch of a tiny run of every training stage matches the digests recorded from the code
before the change (``golden_digests.json``, made by ``python -m tests.training.golden_run``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import needs_fashion
from tests.training.golden_run import platform, run

GOLDEN = Path(__file__).with_name("golden_digests.json")


@needs_fashion
def test_default_path_trains_the_recorded_bits(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    recorded = expected.pop("_platform")
    if platform() != recorded:  # other float kernels: other bits, not a change in the code
        pytest.skip(f"digests were recorded on {recorded}; this is {platform()}")
    threads = torch.get_num_threads()
    try:
        got = run(tmp_path / "outputs")
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert set(got) == set(expected)
    different = sorted(k for k in expected if got[k] != expected[k])
    assert not different, f"outputs differ from the recorded run: {different}"
