"""The container image's files. The image itself is built and run by scripts/build-image.sh
(`make image`, log in docs/image-build.log); here: the Dockerfile and workflows pass the real
linters (hadolint, the workflow schema, zizmor) and those linters fail on known-bad input, the
Dockerfile's structure (install steps are scripts CI runs, numeric non-root user, GPU variant),
the build script's pip settings, and the entry point, run in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
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


def test_image_runs_as_the_numeric_non_root_user_that_setup_creates() -> None:
    stage = final_stage(instructions())
    users = [args for word, args in stage if word == "USER"]
    assert users, "no USER: the image would run as root"
    setup = (ROOT / "scripts/setup.sh").read_text()
    created = re.search(r"useradd\b[^\n]*--uid (\d+)[^\n]*\s(\w+)$", setup, flags=re.M)
    assert created, "scripts/setup.sh --image creates no user"
    uid = int(created[1])
    assert uid >= 1000
    # Numeric, so a runtime can verify non-root without the image's /etc/passwd.
    assert users[-1] == f"{uid}:{uid}"
    copies = [args for word, args in stage if word == "COPY" and args.endswith(" . .")]
    assert copies and f"--chown={uid}:{uid}" in copies[-1], "the code must belong to the user"
    # The user is switched to after every RUN of the image: installing stays root, running never.
    stages = [i for i, (word, _) in enumerate(instructions()) if word == "FROM"]
    instrs = instructions()
    last_run = max(i for i, (word, _) in enumerate(instrs) if word == "RUN")
    last_user = max(i for i, (word, _) in enumerate(instrs) if word == "USER")
    assert last_user > last_run and last_user > stages[-1]


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
    froms = [a for w, a in instrs if w == "FROM"]
    assert "base-${VARIANT} AS deps" in froms and froms[-1] == "deps AS runtime"
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


def test_scripts_parse() -> None:
    for script in ("scripts/setup.sh", "scripts/entrypoint.sh", "scripts/build-image.sh"):
        run = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr


# --- the linters `make lint` runs, on the real files and on known-bad ones --------------------


def tool(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / name), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_hadolint_passes_on_the_dockerfile_and_fails_on_a_bad_one(tmp_path: Path) -> None:
    run = tool("hadolint", "Dockerfile")
    assert run.returncode == 0, run.stdout + run.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nUSER fct\n")
    run = tool("hadolint", "--config", str(ROOT / ".hadolint.yaml"), str(bad))
    assert run.returncode != 0
    # Untagged base, unpinned and unconfirmed apt, and (info level) a non-numeric user.
    for rule in ("DL3006", "DL3008", "DL3014", "DL3066"):
        assert rule in run.stdout, run.stdout


def test_workflows_pass_the_schema_and_zizmor() -> None:
    workflows = sorted(str(p.relative_to(ROOT)) for p in (ROOT / ".github/workflows").glob("*.yml"))
    assert workflows
    run = tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    assert run.returncode == 0, run.stdout + run.stderr
    run = tool("zizmor", "--offline", "--no-progress", "--persona=auditor", ".github/workflows/")
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_workflow_linters_fail_on_a_bad_workflow(tmp_path: Path) -> None:
    flows = tmp_path / ".github/workflows"
    flows.mkdir(parents=True)
    (flows / "bad.yml").write_text(
        textwrap.dedent(
            """\
            on: pull_request_target
            jobs:
              x:
                runs-on: ubuntu-24.04
                steps:
                  - uses: actions/checkout@v4
                  - run: echo "${{ github.event.pull_request.title }}"
            """
        )
    )
    run = tool(
        "zizmor", "--offline", "--no-progress", "--persona=auditor", str(flows), cwd=tmp_path
    )
    assert run.returncode != 0
    for audit in ("unpinned-uses", "template-injection", "dangerous-triggers"):
        assert audit in run.stdout, run.stdout
    (flows / "typo.yml").write_text("on: push\njobs:\n  x:\n    steps: []\n")  # no runs-on
    run = tool(
        "check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(flows / "typo.yml")
    )
    assert run.returncode != 0


# --- the build script's pip settings (the build itself: `make image`) ------------------------


def pip_args(config: str) -> list[str]:
    """What scripts/build-image.sh adds to `podman build` under this pip configuration file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=config, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/build-image.sh"), "--pip-args"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_build_script_mounts_a_local_pip_index_only_when_one_is_configured(tmp_path: Path) -> None:
    index, wheels = tmp_path / "pypi/simple", tmp_path / "wheels"
    index.mkdir(parents=True)
    wheels.mkdir()
    conf = tmp_path / "pip.conf"
    conf.write_text(
        f"[global]\nextra-index-url = file://{index} https://example.org/simple "
        f"file:///no/such/folder/simple\nfind-links = {wheels}\n"
    )
    args = pip_args(str(conf))
    assert f"PIP_EXTRA_INDEX_URL=file://{index}" in args  # not the remote, not the missing one
    assert f"PIP_FIND_LINKS={wheels}" in args
    # The index's parent folder: simple/ pages link to ../files.
    assert f"{index.parent}:{index.parent}:ro" in args
    assert f"{wheels}:{wheels}:ro" in args
    # No pip configuration at all: PyPI only, no build arguments, nothing mounted.
    assert pip_args(os.devnull) == []


def test_build_script_rejects_an_unknown_option() -> None:
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/build-image.sh"), "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "unknown option --no-such-option" in run.stderr


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


# --- the CI preflight (--ci): skip when the machine cannot build, fail when the project is broken


def ci_build(
    tmp_path: Path, *args: str, fakes: dict[str, str] | None = None, **env: str
) -> tuple[int, str]:
    """Run ``scripts/build-image.sh --light --ci ARGS`` with a PATH that has this machine's
    commands except podman, buildah and debootstrap, plus ``fakes`` (name -> bash body).
    Returns the exit status and stdout + stderr."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            if not Path(folder).is_dir() or Path(folder).is_symlink():
                continue
            for cmd in Path(folder).iterdir():
                link = bin_dir / cmd.name
                if cmd.name not in {"podman", "buildah", "debootstrap"} and not link.exists():
                    link.symlink_to(cmd)
    for name, body in (fakes or {}).items():
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/build-image.sh"), "--light", "--ci", *args],
        env={
            "PATH": f"{VENV_BIN}:{bin_dir}",
            "HOME": str(tmp_path),
            "PIP_CONFIG_FILE": os.devnull,
            "BUILD_IMAGE_INSTALL": "0",  # never apt-get install from a test
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.returncode, run.stdout + run.stderr


# A podman that works and whose base image exists; a buildah whose chroot RUN works. `build`
# fails as podman does on a broken Dockerfile (the RUN step's status).
# Every podman call but `info` is logged to $HOME/podman.log; FAKE_BUILD=ok builds.
PODMAN = """[[ $1 == info ]] || echo "$*" >> "$HOME/podman.log"
case $1 in
  info) [[ ${FAKE_INFO:-ok} == ok ]] || { echo "Error: cannot set up namespace" >&2; exit 125; } ;;
  image) case $2 in exists) exit 0 ;; prune) echo 0123abcd ;; *) echo 7628000000 ;; esac ;;
  build) echo "STEP 11/11: RUN bash scripts/setup.sh --image"
         [[ ${FAKE_BUILD:-fails} == ok ]] && exit 0
         echo 'Error: building at STEP "RUN bash scripts/setup.sh --image": exit status 3' >&2
         exit 3 ;;
  *) echo "fake podman: unexpected $*" >&2; exit 99 ;;
esac"""
# `run` answers the light checks (uid, user name, `fct --help`) as the real image does.
BUILDAH = """case $1 in
  from) echo probe-ctr ;;
  run) [[ ${FAKE_CHROOT:-ok} == ok ]] ||
         { echo "error running container: chroot: operation not permitted" >&2; exit 1; }
       case "$*" in *"id -un") echo fct ;; *"id -u") echo 10001 ;; *"fct --help") echo usage ;;
       esac ;;
  rm) echo "$2" >> "$HOME/removed" ;;
  *) echo "fake buildah: unexpected $*" >&2; exit 99 ;;
esac"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the preflight's next check is root")


def test_ci_build_skips_loudly_without_podman(tmp_path: Path) -> None:
    status, out = ci_build(tmp_path)
    assert status == 0, out
    assert "image build skipped: podman not found" in out
    assert "podman build" not in out
    # Run by hand (no --ci), the same machine is an error, not a skip.
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/build-image.sh"), "--light"],
        env={"PATH": f"{VENV_BIN}:{tmp_path / 'bin'}", "PIP_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "podman not found" in run.stderr
    assert "skipped" not in run.stdout + run.stderr


@needs_root
def test_ci_build_skips_when_podman_cannot_run_or_chroot_is_forbidden(tmp_path: Path) -> None:
    fakes = {"podman": PODMAN, "buildah": BUILDAH}
    status, out = ci_build(tmp_path, fakes=fakes, FAKE_INFO="broken")
    assert status == 0, out
    assert "image build skipped: podman info failed: Error: cannot set up namespace" in out
    status, out = ci_build(tmp_path, fakes=fakes, FAKE_CHROOT="forbidden")
    assert status == 0, out
    assert "image build skipped: chroot isolation not permitted" in out
    assert "operation not permitted" in out and "podman build" not in out
    assert (tmp_path / "removed").read_text().split() == ["probe-ctr"]  # the probe is removed


@needs_root
def test_ci_build_fails_when_the_build_fails(tmp_path: Path) -> None:
    # The machine can build (podman info and the chroot probe pass): a failing build is the
    # project's and fails CI, with podman's error in the log.
    status, out = ci_build(tmp_path, fakes={"podman": PODMAN, "buildah": BUILDAH})
    assert status == 3, out
    assert "exit status 3" in out and "skipped" not in out
    assert "== summary ==" not in out


def dockerfile_label() -> str:
    labels = [args for word, args in instructions() if word == "LABEL"]
    assert len(labels) == 1, "one LABEL names the project's images"
    key, value = labels[0].split("=", 1)
    return f"{key}={value.strip(chr(34))}"


@needs_root
def test_a_build_removes_earlier_untagged_builds_of_the_project_only(tmp_path: Path) -> None:
    # Before the build and after it (the image it replaced), by the Dockerfile's label: earlier
    # builds filled CI's disk (each dependency layer is ~7.5 GB). A failed build removes nothing
    # after itself.
    fakes = {"podman": PODMAN, "buildah": BUILDAH}
    prune = f"image prune -f --filter label={dockerfile_label()}"
    status, out = ci_build(tmp_path, fakes=fakes)
    calls = (tmp_path / "podman.log").read_text().splitlines()
    assert status == 3 and calls[-2:] == [prune, calls[-1]] and calls[-1].startswith("build ")

    (tmp_path / "podman.log").unlink()
    status, out = ci_build(tmp_path, fakes=fakes, FAKE_BUILD="ok")
    assert status == 0, out
    calls = (tmp_path / "podman.log").read_text().splitlines()
    build = next(i for i, call in enumerate(calls) if call.startswith("build "))
    assert calls[build - 1] == prune and calls[build + 1] == prune
    assert "removed 1 untagged fct-registry image(s) of earlier builds" in out
    assert "user id inside: 10001" in out and "== summary ==" in out


def test_ci_build_fails_on_a_missing_dockerfile_even_where_it_would_skip(tmp_path: Path) -> None:
    status, out = ci_build(tmp_path, "--file", str(tmp_path / "no/Dockerfile"))
    assert status == 2
    assert "no such Dockerfile" in out and "skipped" not in out


def test_ci_runs_the_tests_then_the_light_image_build_in_ci_mode() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip().startswith("make ")
    ]
    assert lines == ["make test", "make wheel", 'make image IMAGE_ARGS="--light --ci"']
    assert "bash scripts/build-image.sh $(IMAGE_ARGS)" in make_targets()["image"][1]
