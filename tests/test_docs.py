"""The docs: a short README, a CLI reference equal to the parsers, a site that builds strict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from fct_registry.cli import COMMANDS
from tests.conftest import ROOT

README_MAX_LINES = 250
# Pages the README links that other branches add (bring-your-own-models, install): tolerated only
# while missing; once they exist their links are checked like any other.
PENDING = {"docs/bring-your-own-models.md", "docs/install.md"}


def test_readme_is_a_short_front_page_that_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < README_MAX_LINES
    first_screen = "\n".join(text.splitlines()[:12])
    assert "make repro" in first_screen and "make test" in first_screen
    for section in ("## Bring your own models", "## Embeddings only (any modality)", "## Security"):
        assert section in text


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path = target.split("#", 1)[0]
        if path and not (ROOT / path).exists() and path not in PENDING:
            missing.append(target)
    assert not missing, f"README links to missing files: {missing}"


def _cli_reference(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "37"}  # the script fixes the width itself
    cmd = [sys.executable, "scripts/cli_reference.py", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_reference_equals_the_parsers():
    done = _cli_reference("--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_cli_reference_covers_every_subcommand(tmp_path):
    out = tmp_path / "cli.md"
    assert _cli_reference("--out", str(out)).returncode == 0
    text = out.read_text()
    for name in COMMANDS:
        assert f"## `fct {name}`" in text
    assert "### `fct backfill plan`" in text and "### `fct gallery copy`" in text


def test_cli_reference_check_fails_when_stale(tmp_path):
    stale = tmp_path / "cli.md"
    stale.write_text((ROOT / "docs" / "cli.md").read_text().replace("--out", "--output", 1))
    done = _cli_reference("--check", "--out", str(stale))
    assert done.returncode == 1 and "stale" in done.stdout


def _mkdocs_build(root, site) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


needs_mkdocs = pytest.mark.skipif(
    shutil.which("mkdocs") is None and not (ROOT / ".venv" / "bin" / "mkdocs").exists(),
    reason="mkdocs is not installed (requirements.txt; make setup)",
)


@needs_mkdocs
def test_site_builds_strict(tmp_path):
    done = _mkdocs_build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]


@needs_mkdocs
@pytest.mark.parametrize(
    "bad",
    ["[x](no-such-page.md)", "[x](results.md#no-such-heading)", "![x](no-such.png)"],
)
def test_site_build_fails_on_a_broken_link(tmp_path, bad):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "index.md").open("a") as f:
        f.write(f"\n{bad}\n")
    done = _mkdocs_build(tmp_path, tmp_path / "site")
    assert done.returncode != 0 and "WARNING" in done.stderr, done.stderr[-3000:]
