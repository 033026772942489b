"""Headless Chromium for the tests that need a real browser (the MLflow UI is a single-page app;
the compatibility page's layout is checked on screen). Skips when Chromium is missing."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest


def chromium(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with ``args`` (``--dump-dom URL``, ``--screenshot=PNG URL``...) in a
    throw-away profile, offline, after letting the page's scripts run for 15 s of virtual time."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (`make setup-test` installs Debian's chromium)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
