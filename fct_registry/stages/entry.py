"""The shared shell of every DVC stage entry point in ``pipelines/``: parse ``--params`` and
``--outputs``, load and validate params, run the stage, turn input errors into exit status 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fct_registry import determinism, kernel_env
from fct_registry.config import LauncherConfig, Params
from fct_registry.errors import ConfigError, FctError
from fct_registry.layout import Layout
from fct_registry.stages.early import reexec_pinned
from fct_registry.stages.params import load_checked_params
from fct_registry.training.distributed import launched_by_torchrun, shutdown

StageFn = Callable[[Params, Layout, argparse.Namespace], object]


def torchrun_command(launcher: LauncherConfig, module: str, argv: Sequence[str]) -> list[str]:
    """The ``torchrun`` command line that reruns this stage as ``nproc_per_node`` processes."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={launcher.nproc_per_node}",
        f"--nnodes={launcher.nnodes}",
    ]
    if launcher.nnodes > 1:
        cmd += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={launcher.rdzv_endpoint}",
            f"--rdzv-id={launcher.rdzv_id}",
        ]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", module, *argv]


def pin_kernels(reexec: bool) -> None:
    """Portable mode: make sure this process runs the pinned kernels, then set the rest.

    The libraries read their kernel choice from the environment when they start, and torch is
    already imported here, so a process without the pins replaces itself (``os.execve``: same
    PID, same command line) with one that has them; the pinned values override the user's.
    A stage started as ``python -m pipelines.NAME`` normally arrives pinned: the package
    re-executed it before torch loaded (:mod:`fct_registry.stages.early`).
    """
    if not kernel_env.is_pinned(os.environ):
        if os.environ.get(kernel_env.MARKER):
            raise ConfigError(
                "determinism: portable re-executed this stage with the pinned kernel "
                f"environment, but {', '.join(kernel_env.unpinned(os.environ))} still differ: "
                "something in the environment (a wrapper, sitecustomize) resets them; remove "
                "that, or use `determinism: fast`"
            )
        if reexec:
            reexec_pinned()
        # A caller that passed argv (a test, a script) owns its process and its torch state.
        print(
            "note: determinism: portable: this process did not start with the pinned kernel "
            "environment, so it runs with its own kernels (run the stage as "
            "`python -m pipelines.NAME` for bit-portable results)",
            file=sys.stderr,
        )
        return
    determinism.apply_in_process()


def run_stage(
    description: str,
    stage: StageFn,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    distributed_module: str | None = None,
) -> int:
    """Parse arguments, load params and run ``stage``.

    Training stages pass ``distributed_module`` (their ``python -m`` name): with
    ``launcher.kind: torchrun`` the stage relaunches itself under torchrun, so ``dvc repro``
    stays the one command. With ``determinism: portable`` a stage started from its command line
    (``argv`` None) first re-executes itself under the pinned kernel environment
    (:func:`pin_kernels`); a caller passing ``argv`` owns its process: without the pins in its
    environment it runs unchanged, with a note on stderr.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: params.yaml)",
    )
    parser.add_argument(
        "--outputs",
        type=Path,
        default=Path("outputs"),
        help="root folder of pipeline outputs (default: outputs)",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    # Shared 2-core machines: a spinning OpenMP pool collapses throughput under load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        params = load_checked_params(args.params)
        if params.determinism == "portable":
            pin_kernels(reexec=argv is None)
        if distributed_module and params.launcher.kind == "torchrun" and not launched_by_torchrun():
            argv = list(sys.argv[1:] if argv is None else argv)
            return subprocess.run(
                torchrun_command(params.launcher, distributed_module, argv), check=False
            ).returncode
        stage(params, Layout(args.outputs), args)
    except FctError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    return 0
