"""Read commands never write into the artifact store (MLflow writes ``registered_model_meta``
into a local store's model folder when a model is loaded from it in place): with a read-only
store that write was a ``PermissionError``. Checked as a byte-identical store before and after,
which holds also for root, whom file modes do not stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from fct_registry.cli import main
from tests.upgrade.conftest import snapshot

pytestmark = pytest.mark.slow  # the tiny registry (MLflow + ONNX exports) is built once: ~30 s


def test_read_commands_leave_the_artifact_store_untouched(registry, tmp_path: Path) -> None:
    store = registry.root / "artifacts"
    before = snapshot(store)
    assert any(name.endswith("MLmodel") for name in before)
    uri = ["--tracking-uri", registry.uri]
    g1, g2 = tmp_path / "g1", tmp_path / "g2"
    commands = [
        ["embed", "--model", "tiny@1", "--images", str(registry.images), "--out", str(g1),
         "--device", "cpu"],
        ["upgrade", "--gallery", str(g1), "--to", "tiny@2", "--out", str(g2), "--no-progress"],
        ["resolve", "tiny@1", "tiny@2"],
        ["graph", "tiny", "--out", str(tmp_path / "graph.png")],
    ]  # fmt: skip
    for argv in commands:
        assert main([*argv, *uri]) == 0, argv
    after = snapshot(store)
    assert sorted(set(after) - set(before)) == []
    assert after == before
