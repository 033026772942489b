"""Portable mode's re-execution, done before a stage imports torch.

The kernel pins (:mod:`fct_registry.kernel_env`) are environment variables that the libraries
read once, when they load, so a stage started without them replaces itself with a pinned copy
(``os.execve``: same PID, same command line). ``pipelines/__init__.py`` calls
:func:`pin_before_imports` as the package loads, before the stage module imports torch and the
training code (about 4 s of CPU), so the second start costs a bare Python start.
:func:`fct_registry.stages.entry.pin_kernels` stays the check that the pins took effect, and
re-executes a stage started some other way.

Only ``fct_registry.config`` (pydantic, yaml) is imported here: this module is on the path of
every stage's start.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from fct_registry import kernel_env
from fct_registry.config import load_params
from fct_registry.errors import FctError

STAGE_PACKAGE = "pipelines."


def reexec_pinned() -> NoReturn:
    """Replace this process with the same command under the portable pins."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        kernel_env.portable_env(os.environ),
    )


def stage_arguments(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``-m pipelines.NAME`` in a Python command line, or None when the
    command runs something else (pytest importing ``pipelines``, ``python -c``, a script)."""
    if "-m" not in argv[1:]:
        return None
    at = argv.index("-m", 1)
    if at + 1 >= len(argv) or not argv[at + 1].startswith(STAGE_PACKAGE):
        return None
    return list(argv[at + 2 :])


def pin_before_imports(argv: Sequence[str] | None = None) -> None:
    """Re-execute a ``python -m pipelines.NAME`` stage under the pins now if its params file
    asks for ``determinism: portable``.

    Does nothing for other programs, in fast mode, when the pins are in place (or were set once
    and then undone: ``pin_kernels`` names the culprit), and for a params file the stage will
    refuse with its own message.
    """
    args = stage_arguments(sys.orig_argv if argv is None else argv)
    if args is None or kernel_env.is_pinned(os.environ) or os.environ.get(kernel_env.MARKER):
        return
    if "-h" in args or "--help" in args:  # argparse prints and exits before anything runs
        return
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--params", default="params.yaml")
    known, _ = parser.parse_known_args(args)
    try:
        portable = load_params(known.params).determinism == "portable"
    except (FctError, OSError):
        return
    if portable:
        reexec_pinned()
