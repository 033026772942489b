"""``scripts/emulated_repro.py``: its ``python`` shim runs this interpreter under the given QEMU
binary and CPU model, arguments intact (a fake QEMU records what it was given), and its report
names each finished stage's outputs whose hash differs from the committed ``dvc.lock``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from emulated_repro import compare, shim  # scripts/ is not a package: imported by path


def test_shim_runs_this_python_under_qemu_with_the_arguments_intact(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "fake qemu"  # a space: the shim must quote it
    fake.write_text(f'#!/bin/sh\necho "$1 $2" > "{calls}"\nshift 2\nexec "$@"\n')
    fake.chmod(0o755)
    folder = shim(tmp_path / "bin", str(fake), "Haswell-v4")
    out = subprocess.run(
        [str(folder / "python"), "-c", "import sys; print(sys.executable, sys.argv[1:])", "a b"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert calls.read_text().strip() == "-cpu Haswell-v4"
    assert out.strip() == f"{sys.executable} ['a b']"


LOCK = """\
schema: '2.0'
stages:
  prepare:
    cmd: python -m pipelines.prepare
    outs:
    - path: outputs/data
      hash: md5
      md5: aaa.dir
  side_info:
    cmd: python -m pipelines.train_side_info
    outs:
    - path: outputs/side_info
      hash: md5
      md5: bbb.dir
    - path: outputs/history/side_info.csv
      hash: md5
      md5: ccc
"""


def test_compare_names_the_outputs_that_differ_in_finished_stages_only() -> None:
    assert compare(LOCK, LOCK, ["prepare", "side_info"]) == [
        "prepare: 1 outputs, all byte-identical",
        "side_info: 2 outputs, all byte-identical",
    ]
    now = LOCK.replace("md5: ccc", "md5: ddd").replace("md5: aaa.dir", "md5: eee.dir")
    assert compare(LOCK, now, ["side_info"]) == [
        "side_info: 2 outputs, DIFFER: outputs/history/side_info.csv"
    ]
