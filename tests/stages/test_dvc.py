"""DVC must never serve stale results: code deps match imports, bytecode is ignored, and every
params section can be overridden with `dvc exp run -S`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from fct_registry.config import load_params

ROOT = Path(__file__).resolve().parents[2]

# One `-S` override per params section, as a user would type it.
OVERRIDES = {
    "family": "family=demo",
    "seed": "seed=7",
    "device": "device=cpu",
    "launcher": "launcher.kind=torchrun",
    "determinism": "determinism=fast",
    "data": "data.root=/tmp/elsewhere",
    "side_info": "side_info.optim.epochs=1",
    "versions": "versions.3.optim.epochs=2",
    "transformations": "transformations.v1_to_v2.optim.epochs=3",
    "bct": "bct.v1_to_v2.influence_weight=0.5",
    "evaluation": "evaluation.distance=cosine",
    "gate": "gate.rules.upgraded_top1_vs_candidate.fraction=0.8",
    "backfill": "backfill.steps=5",
}


def test_every_section_has_an_override_case() -> None:
    sections = set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert sections <= set(OVERRIDES), f"add a -S case for {sections - set(OVERRIDES)}"


@pytest.mark.parametrize("section", sorted(OVERRIDES))
def test_dash_s_override_applies_and_validates(tmp_path: Path, section: str) -> None:
    """What `dvc exp run -S` does before running: DVC's own Hydra parser applies the override
    to params.yaml, then the pipeline's validation loads it."""
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    override = OVERRIDES[section]
    apply_overrides(str(params), [override])
    loaded = load_params(params).model_dump(by_alias=True)
    key, value = override.split("=")
    node = loaded
    for part in key.split("."):
        node = node[int(part) if part.isdigit() else part]
    assert str(node) == value


def test_stage_code_deps_match_what_stages_import() -> None:
    """Fails the day an import is added without updating dvc.yaml (or a dep is left behind)."""
    proc = subprocess.run(
        [sys.executable, "scripts/stage_deps.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _dvc(cwd: Path, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_bytecode_never_makes_a_stage_stale(tmp_path: Path) -> None:
    """With the project's .dvcignore, Python writing __pycache__ into a code dep (as it does on
    any machine without PYTHONDONTWRITEBYTECODE) leaves the stage up to date."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc(tmp_path, "init", "-q", env=env)
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "work.py").write_text("VALUE = 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  run:\n    cmd: python -c 'import pkg.work' && echo done > out.txt\n"
        "    deps: [pkg]\n    outs: [out.txt]\n"
    )
    _dvc(tmp_path, "repro", "-q", env=env)
    assert (pkg / "__pycache__").is_dir(), "the stage should have written bytecode"
    assert "up to date" in _dvc(tmp_path, "status", env=env).lower()
    (pkg / "work.py").write_text("VALUE = 2\n")
    assert "changed deps" in _dvc(tmp_path, "status", env=env)


def _stale_inputs(status: dict) -> list[str]:
    """Code, params and data inputs whose hash differs from the committed dvc.lock. Stage outputs
    (everything under outputs/) are left out: a fresh clone has only the tracked ones."""
    stale = []
    for stage, entries in status.items():
        for entry in entries:
            if not isinstance(entry, dict):  # "always changed" (the gate)
                continue
            for path, state in entry.get("changed deps", {}).items():
                if not path.startswith("outputs/") and state != "deleted":
                    stale.append(f"{stage}: {path} {state}")
    return sorted(stale)


def test_stale_inputs_reads_dvc_status_shapes() -> None:
    status = {
        "gate": ["always changed"],
        "train@1": [
            {"changed deps": {"outputs/data": "deleted", "fct_registry/models": "modified"}},
            {"changed outs": {"outputs/models/v1": "not in cache"}},
        ],
        "transform@v2_to_v3": [{"changed deps": {"params.yaml": {"transformations": "modified"}}}],
        "prepare": [{"changed deps": {"/usr/share/datasets/fashion-mnist": "deleted"}}],
    }
    assert _stale_inputs(status) == [
        "train@1: fct_registry/models modified",
        "transform@v2_to_v3: params.yaml {'transformations': 'modified'}",
    ]


def test_committed_lock_matches_the_code_and_params() -> None:
    """The committed dvc.lock records the hash of every stage's code and params as they are now.
    Otherwise a fresh clone's `make repro` reruns stages, rewrites tracked outputs and leaves
    `git status` dirty: an edit to stage code was committed without `dvc repro`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    status = json.loads(_dvc(ROOT, "status", "--json", env=env))
    stale = _stale_inputs(status)
    assert not stale, (
        "dvc.lock is stale for these inputs; run `dvc repro` (or `dvc commit STAGE` when the "
        "edit provably changes no output) and commit dvc.lock:\n" + "\n".join(stale)
    )
