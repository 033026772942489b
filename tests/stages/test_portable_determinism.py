"""`determinism: portable`: a training stage writes the same bytes whatever kernels the machine
would pick, and (the control) different bytes without it.

"Another CPU" is emulated on this one by forcing the libraries' kernel choice through their own
environment variables: ATen's CPU capability, MKL's code branch, oneDNN's ISA cap and the
thread count. Each run is the real stage entry (`python -m pipelines.train_version`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fct_registry import determinism, kernel_env
from fct_registry.errors import ConfigError
from fct_registry.stages import early
from tests.conftest import ROOT, needs_fashion, tiny_params

# Two machines as the libraries see them. AVX512: the developers' CPU with MKL's own dispatch.
# OLD: no vector ATen kernels, MKL's SSE2 branch, oneDNN capped at SSE4.1, one core.
KERNEL_SETS = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "2"},
    "old": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "OMP_NUM_THREADS": "1",
    },
}
# What the stage writes that must not depend on the machine.
OUTPUTS = ("models/v1/model.safetensors", "embeddings/v1.safetensors", "history/v1.csv")


def _clean_env(forced: dict[str, str]) -> dict[str, str]:
    """This process's environment without any kernel pin, plus the ``forced`` ones."""
    drop = {*kernel_env.PINNED_ENV, *kernel_env.UNSET_ENV, kernel_env.MARKER}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **forced}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """Tiny params and the prepare stage's data, shared by every training run below."""
    raw = tiny_params(train=300, test=100)
    root = tmp_path_factory.mktemp("portable")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({**raw, "determinism": "portable"}))
    _run(
        ["-m", "pipelines.prepare", "--params", str(params), "--outputs", str(root / "data")],
        _clean_env({}),
    )
    return raw, root / "data" / "data"


def _train(prepared: tuple[dict, Path], tmp: Path, mode: str, kernels: str) -> dict[str, bytes]:
    raw, data = prepared
    params = tmp / f"{mode}-{kernels}.yaml"
    params.write_text(yaml.safe_dump({**raw, "determinism": mode}))
    out = tmp / f"{mode}-{kernels}"
    (out / "data").mkdir(parents=True)
    for f in data.iterdir():
        (out / "data" / f.name).symlink_to(f)
    argv = ["-m", "pipelines.train_version", "--version", "1"]
    _run([*argv, "--params", str(params), "--outputs", str(out)], _clean_env(KERNEL_SETS[kernels]))
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@needs_fashion
def test_portable_mode_writes_the_same_bytes_under_other_kernels(prepared, tmp_path):
    portable = {k: _train(prepared, tmp_path, "portable", k) for k in KERNEL_SETS}
    fast = {k: _train(prepared, tmp_path, "fast", k) for k in KERNEL_SETS}
    for name in OUTPUTS:
        assert portable["avx512"][name] == portable["old"][name], f"portable {name} differs"
    # The control: the forced kernel sets are real, so without the pins the bytes differ.
    for name in OUTPUTS:
        assert fast["avx512"][name] != fast["old"][name], f"fast {name} should differ"


PROBE = """
import os, sys, torch
from fct_registry.stages.entry import run_stage

def stage(params, layout, args):
    print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
          os.environ.get("MKL_CBWR"), os.environ.get("ONEDNN_MAX_CPU_ISA"), os.getpid(),
          torch.are_deterministic_algorithms_enabled())

if __name__ == "__main__":
    print("start", os.getpid())
    sys.exit(run_stage("probe", stage))
"""


def test_stage_reexecutes_once_under_the_pinned_kernels(tmp_path):
    """The pins override a user's forced values, in the same process (execve), exactly once."""
    (tmp_path / "kernel_probe.py").write_text(PROBE)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**tiny_params(), "determinism": "portable"}))
    env = _clean_env(KERNEL_SETS["old"])
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    out = _run(["-m", "kernel_probe", "--params", str(params)], env).stdout.split("\n")
    starts = [line for line in out if line.startswith("start")]
    assert len(starts) == 2 and len(set(starts)) == 1  # re-executed once, same PID
    report = next(line for line in out if line.startswith("AVX2"))
    cap, threads, cbwr, onednn, pid, det = report.split()
    assert (cap, threads, cbwr, onednn, det) == ("AVX2", "2", "COMPATIBLE", "AVX2", "True")
    assert starts[0].split()[1] == pid


def test_fast_mode_leaves_the_kernels_alone(tmp_path):
    (tmp_path / "kernel_probe.py").write_text(PROBE)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**tiny_params(), "determinism": "fast"}))
    env = _clean_env(KERNEL_SETS["old"])
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    out = _run(["-m", "kernel_probe", "--params", str(params)], env).stdout.split("\n")
    assert sum(line.startswith("start") for line in out) == 1
    assert any(line.startswith("DEFAULT 1 COMPATIBLE SSE41") for line in out)


def _probe_with_sitecustomize(tmp_path: Path, site: str) -> subprocess.CompletedProcess[str]:
    """The kernel probe as a portable stage, started unpinned, with ``site`` run at every
    interpreter start (a ``sitecustomize`` on the path), its exit status unchecked."""
    (tmp_path / "kernel_probe.py").write_text(PROBE)
    (tmp_path / "sitecustomize.py").write_text(site)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**tiny_params(), "determinism": "portable"}))
    env = _clean_env({})
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "kernel_probe", "--params", str(params)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_wrapper_that_undoes_the_pins_is_refused_not_looped(tmp_path):
    """If the re-executed process still lacks the pins, the stage stops with one line."""
    proc = _probe_with_sitecustomize(tmp_path, "import os\nos.environ['MKL_CBWR'] = 'AUTO'\n")
    assert proc.returncode == 2
    assert proc.stdout.count("start") == 2
    assert "error: determinism: portable re-executed" in proc.stderr
    assert "MKL_CBWR" in proc.stderr and "determinism: fast" in proc.stderr


def test_portable_env_overrides_and_removes_what_would_win():
    env = kernel_env.portable_env(
        {"PATH": "/bin", "MKL_CBWR": "AUTO", "NPY_ENABLE_CPU_FEATURES": "X86_V4"}
    )
    assert env["PATH"] == "/bin" and env["MKL_CBWR"] == "COMPATIBLE"
    assert "NPY_ENABLE_CPU_FEATURES" not in env
    assert kernel_env.is_pinned(env)
    assert not kernel_env.is_pinned({**env, "OMP_NUM_THREADS": "8"})
    assert kernel_env.unpinned({**env, "MKL_ENABLE_INSTRUCTIONS": "AVX512"}) == [
        "MKL_ENABLE_INSTRUCTIONS"
    ]


def test_unknown_mode_is_a_config_error_naming_both_modes():
    from fct_registry.config import parse_params
    from fct_registry.errors import ConfigError

    assert parse_params(tiny_params()).determinism == "portable"  # the embedded default
    raw = {k: v for k, v in tiny_params().items() if k != "determinism"}
    assert parse_params(raw).determinism == "fast"  # other params files: as before
    with pytest.raises(ConfigError, match=r"determinism: Input should be 'portable' or 'fast'"):
        parse_params({**raw, "determinism": "portible"})


def test_portable_settings_leave_onnx_export_working(tmp_path):
    # The register stage exports models to ONNX under portable mode: torch.export reads the
    # TF32 flags with cudnn.set_flags, which refuses a mix of the legacy and the new API.
    code = (
        "import torch\n"
        "from fct_registry import determinism\n"
        "from fct_registry.registry.onnx_export import export_onnx\n"
        "determinism.apply_in_process()\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),\n"
        "                          torch.nn.LazyLinear(8))\n"
        "net(torch.zeros(2, 1, 8, 8))\n"
        "import sys\n"
        "print(export_onnx(net, sys.argv[1], kind='embedding', input_shape=[1, 8, 8]))\n"
    )
    env = kernel_env.portable_env(_clean_env({}))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "model.onnx")],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, capability: str, avx2: bool) -> None:
    """What torch reports on another CPU: its kernel choice and the hardware's AVX2 flag."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: avx2)


@pytest.mark.parametrize("capability", ["DEFAULT", "NO AVX"])
def test_portable_mode_refuses_a_cpu_without_avx2_naming_fast_mode(monkeypatch, capability):
    """An old x86 CPU (no AVX2) or an ARM one: refused before any setting changes, with the fix."""
    _fake_cpu(monkeypatch, capability, avx2=False)
    threads = torch.get_num_threads()
    with pytest.raises(ConfigError, match="this one has none") as err:
        determinism.apply_in_process()
    message = str(err.value)
    assert "\n" not in message and "set `determinism: fast` in the params file" in message
    assert capability in message
    assert torch.get_num_threads() == threads  # nothing half-applied


def test_portable_mode_on_an_avx2_cpu_started_unpinned_names_the_pin(monkeypatch):
    _fake_cpu(monkeypatch, "AVX512", avx2=True)
    with pytest.raises(ConfigError, match="ATEN_CPU_CAPABILITY=avx2 must be set") as err:
        determinism.apply_in_process()
    assert "python -m pipelines.NAME" in str(err.value) and "has none" not in str(err.value)


def test_portable_mode_accepts_the_pinned_avx2_kernels(monkeypatch):
    _fake_cpu(monkeypatch, "AVX2", avx2=True)
    determinism.check_kernels()  # no error


NO_AVX2 = """
import torch
torch.cpu._is_avx2_supported = lambda: False
torch.backends.cpu.get_cpu_capability = lambda: "DEFAULT"
"""


def test_a_stage_on_a_cpu_without_avx2_stops_with_one_line(tmp_path):
    """End to end: the stage re-executes under the pins, then exits 2 with the error line."""
    proc = _probe_with_sitecustomize(tmp_path, NO_AVX2)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "AVX2" not in proc.stdout  # the stage body never ran
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "needs an x86-64 CPU with AVX2" in line and "determinism: fast" in line


def test_a_pipelines_stage_reexecutes_before_it_imports_torch(tmp_path):
    """`python -m pipelines.NAME` re-executes as the package loads: torch is imported once, by
    the pinned process (-X importtime logs every import of both process images to stderr)."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**tiny_params(), "determinism": "portable"}))
    env = {**_clean_env(KERNEL_SETS["old"]), "PYTHONPATH": str(ROOT)}
    data = tmp_path / "outputs"
    argv = ["-X", "importtime", "-m", "pipelines.prepare", "--params", str(params)]
    proc = _run([*argv, "--outputs", str(data)], env)
    imports = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert imports.count("torch") == 1, "torch was imported before the re-execution"
    assert imports.count("fct_registry.stages.early") == 2  # both process images ran it
    assert (data / "data" / "train.safetensors").is_file()
    # --help runs nothing: no re-execution (argparse exits first)
    helped = _run([*argv, "--help"], env)
    lines = [line.rsplit("|", 1)[-1].strip() for line in helped.stderr.splitlines()]
    assert lines.count("fct_registry.stages.early") == 1 and "usage:" in helped.stdout


@pytest.mark.parametrize(
    ("argv", "args"),
    [
        (["python", "-m", "pipelines.prepare", "--params", "p.yaml"], ["--params", "p.yaml"]),
        (["python", "-X", "importtime", "-m", "pipelines.evaluate"], []),
        (["python", "-m", "pytest", "tests/stages"], None),  # pytest importing pipelines
        (["python", "-c", "import pipelines.prepare"], None),
        (["python", "pipelines/prepare.py"], None),  # pin_kernels re-executes that one
        (["python", "-m"], None),
    ],
)
def test_only_a_pipelines_module_run_is_a_stage(argv, args):
    assert early.stage_arguments(argv) == args


@pytest.mark.parametrize(
    ("mode", "env", "reexecutes"),
    [
        ("portable", {}, True),
        ("fast", {}, False),
        ("portable", "pinned", False),
        ("portable", {kernel_env.MARKER: "1"}, False),  # pinned once, then undone: entry says so
    ],
)
def test_pin_before_imports_reexecutes_only_unpinned_portable_stages(
    tmp_path, monkeypatch, mode, env, reexecutes
):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**tiny_params(), "determinism": mode}))
    base = _clean_env({})
    monkeypatch.setattr(
        os, "environ", kernel_env.portable_env(base) if env == "pinned" else {**base, **env}
    )
    calls = []
    monkeypatch.setattr(early, "reexec_pinned", lambda: calls.append("reexec"))
    early.pin_before_imports(["python", "-m", "pipelines.prepare", f"--params={params}"])
    assert calls == (["reexec"] if reexecutes else [])


def test_pin_before_imports_leaves_a_bad_params_file_to_the_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(early, "reexec_pinned", lambda: pytest.fail("re-executed"))
    (tmp_path / "bad.yaml").write_text("determinism: [portable\n")
    for params in (tmp_path / "bad.yaml", tmp_path / "missing.yaml"):
        early.pin_before_imports(["python", "-m", "pipelines.prepare", "--params", str(params)])
