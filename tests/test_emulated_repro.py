"""``scripts/emulated_repro.py``'s ``python`` shim: a stage's command runs this interpreter under
the given QEMU binary and CPU model, arguments intact (a fake QEMU records what it was given)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from emulated_repro import shim  # scripts/ is not a package: imported by path


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
