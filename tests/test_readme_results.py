"""README's results section is exactly what scripts/readme_results.py renders from outputs/eval/."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.readme_results import BEGIN, END, main

EVAL = ROOT / "outputs" / "eval"


def test_readme_has_the_generated_section():
    text = (ROOT / "README.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1


@pytest.mark.skipif(
    not (EVAL / "uncertainty.json").exists(), reason="no pipeline outputs: run `dvc repro`"
)
def test_readme_results_equal_the_tracked_outputs(capsys):
    args = ["--check", "--readme", str(ROOT / "README.md"), "--eval-dir", str(EVAL)]
    code = main([*args, "--params", str(ROOT / "params.yaml")])
    assert code == 0, capsys.readouterr().out
