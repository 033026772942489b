"""The Dockerfile, checked without a Docker engine: every install step is a script CI runs, the
image runs as a non-root user, a build argument selects the GPU variant, and the entry point
(run here in a subprocess) handles both modes: `dvc repro` by default, `fct SUBCOMMAND ...`."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fct_registry.cli import COMMANDS
from tests.conftest import ROOT

VENV_BIN = Path(sys.executable).parent


def instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + line.rstrip("\\").strip() if pending else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return out


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instrs) if word == "FROM"]
    return instrs[starts[-1] :]


def make_targets(path: Path = ROOT / "Makefile") -> dict[str, tuple[list[str], list[str]]]:
    """``{target: (prerequisites, recipe lines)}`` of a simple Makefile."""
    targets: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.-]+):(?!=)\s*([^#]*)", line)
        if rule and not line.startswith("\t"):
            current = rule[1]
            targets[current] = (rule[2].split(), [])
        elif line.startswith("\t") and current:
            targets[current][1].append(line.strip())
        elif line and not line.startswith("\t"):
            current = None
    return targets


def ci_recipes() -> list[str]:
    """Every recipe line CI runs: .ci/run's `make` targets and everything they depend on."""
    ci = (ROOT / ".ci/run").read_text()
    roots = re.findall(r"^\s*make\s+([\w-]+)", ci, flags=re.M)
    assert roots, ".ci/run runs no make target"
    targets, seen, lines = make_targets(), set(), []
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in targets:
            continue
        seen.add(name)
        deps, recipe = targets[name]
        stack += deps
        lines += recipe
    return lines


def test_every_run_step_only_calls_a_script_that_ci_runs() -> None:
    runs = [args for word, args in instructions() if word == "RUN"]
    assert runs, "the image installs nothing?"
    ci = " ".join(ci_recipes())
    for command in runs:
        assert not command.startswith("["), f"use the shell form for RUN {command!r}"
        argv = shlex.split(command)
        assert not set(argv) & {"&&", "||", ";", "|"}, (
            f"RUN {command!r} chains commands: put the steps in a script that CI runs"
        )
        assert argv[0] == "bash" and len(argv) >= 2, f"RUN {command!r} must be `bash scripts/...`"
        script = argv[1]
        assert (ROOT / script).is_file(), f"RUN calls {script}, which does not exist"
        assert script in ci, f"RUN calls {script}, which CI (.ci/run -> make) never runs"


def test_image_runs_as_the_non_root_user_that_setup_creates() -> None:
    stage = final_stage(instructions())
    users = [args for word, args in stage if word == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    setup = (ROOT / "scripts/setup.sh").read_text()
    created = re.search(r"useradd\b[^\n]*--uid (\d+)[^\n]*\s(\w+)$", setup, flags=re.M)
    assert created, "scripts/setup.sh --image creates no user"
    assert created[2] == user and int(created[1]) >= 1000
    copies = [args for word, args in stage if word == "COPY" and args.endswith(" . .")]
    assert copies and f"--chown={user}:{user}" in copies[-1], "the code must belong to the user"
    # The user is switched to after every RUN: installing stays root, running never is.
    last_run = max(i for i, (word, _) in enumerate(stage) if word == "RUN")
    last_user = max(i for i, (word, _) in enumerate(stage) if word == "USER")
    assert last_user > last_run


def test_gpu_variant_is_a_build_argument_and_bases_are_pinned() -> None:
    instrs = instructions()
    args = {a.split("=")[0]: a.split("=", 1)[1] for w, a in instrs if w == "ARG" and "=" in a}
    assert args["VARIANT"] == "cpu"
    stages = {
        a.split(" AS ")[1].strip(): a.split(" AS ")[0].strip()
        for w, a in instrs
        if w == "FROM" and " AS " in a
    }
    assert set(stages) >= {"base-cpu", "base-gpu"}
    assert [a for w, a in instrs if w == "FROM"][-1] == "base-${VARIANT}"
    for name in ("CPU_BASE", "GPU_BASE"):
        image = args[name]
        assert re.search(r":\d+(\.\d+)+", image), f"{name}={image} is not pinned to a version tag"
        assert not image.endswith(":latest")
    assert "cuda" in args["GPU_BASE"]


def test_entrypoint_and_default_command() -> None:
    stage = final_stage(instructions())
    entry = json.loads(next(a for w, a in stage if w == "ENTRYPOINT"))
    assert entry == ["bash", "scripts/entrypoint.sh"]
    assert (ROOT / entry[1]).is_file()
    assert json.loads(next(a for w, a in stage if w == "CMD")) == ["dvc", "repro"]


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "outputs", "mlflow.db", "mlartifacts", ".dvc/cache"} <= ignored


def test_setup_script_parses() -> None:
    for script in ("scripts/setup.sh", "scripts/entrypoint.sh"):
        run = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr


# --- the entry point, run --------------------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project folder without .git holding the entry point, and fake `dvc`/`fct` commands
    that log their arguments (the real Python finds fct_registry.cli for the subcommands)."""
    project = tmp_path / "app"
    (project / "scripts").mkdir(parents=True)
    (project / ".dvc").mkdir()
    shutil.copy(ROOT / "scripts/entrypoint.sh", project / "scripts/entrypoint.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dvc", "fct"):
        fake = bin_dir / name
        fake.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "$CALLS"\n')
        fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{VENV_BIN}:{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls.log"),
    }
    return project, env


def entry(project: Path, env: dict[str, str], *args: str) -> tuple[list[str], str]:
    calls = Path(env["CALLS"])
    calls.unlink(missing_ok=True)
    run = subprocess.run(
        ["bash", str(project / "scripts/entrypoint.sh"), *args],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return (calls.read_text().splitlines() if calls.exists() else []), run.stdout


def test_entrypoint_defaults_to_dvc_repro_without_scm(sandbox) -> None:
    project, env = sandbox
    calls, _ = entry(project, env)
    assert calls == ["dvc config --local core.no_scm true", "dvc repro"]
    calls, _ = entry(project, env, "dvc", "repro", "evaluate")
    assert calls[-1] == "dvc repro evaluate"


@pytest.mark.parametrize("subcommand", COMMANDS)
def test_entrypoint_runs_fct_subcommands(sandbox, subcommand: str) -> None:
    project, env = sandbox
    calls, _ = entry(project, env, subcommand, "--some-flag", "fashion@3")
    assert calls == [f"fct {subcommand} --some-flag fashion@3"]


def test_entrypoint_runs_other_commands_as_given(sandbox) -> None:
    project, env = sandbox
    calls, out = entry(project, env, "echo", "hello")
    assert calls == [] and out == "hello\n"
    calls, _ = entry(project, env, "--help")
    assert calls == ["fct --help"]


def test_entrypoint_runs_the_real_cli_from_the_checkout() -> None:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/entrypoint.sh"), "gate", "--help"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: fct gate")
