"""Every progress bar has a total, hence an ETA: ``fct embed``'s counts the listed images (it
used to show only a running count, ``2000img [00:05]``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fct_registry.cli import main
from tests.upgrade.conftest import (  # noqa: F401  (session fixtures)
    TinyRegistry,
    registry,
    tiny_registry,
)

pytestmark = pytest.mark.slow  # the session registry (MLflow + ONNX exports): ~30 s once


def test_embed_progress_bar_has_the_total(
    registry: TinyRegistry,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["embed", "--model", "tiny@1", "--images", str(registry.images), "--out",
            str(tmp_path / "g"), "--device", "cpu", "--workers", "0", "--limit", "100",
            "--tracking-uri", registry.uri]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "100/100" in err and "<" in err  # n/total and tqdm's "elapsed<remaining"
