"""Derive each DVC stage's code dependencies from what its entry point actually imports.

A stage's ``deps`` must cover all the code it runs, or ``dvc repro`` serves stale results after
an edit; and they should list nothing else, or an unrelated edit retrains it. This script runs
every stage's entry module (``cmd: python -m pipelines.X``) in a fresh interpreter up to its
``--help`` exit, so every module-level import happens, and records the first-party files
loaded. The project keeps first-party imports at module level (tests/test_layers.py), so the
import graph is the code a stage can run.

    python scripts/stage_deps.py            # check: exit 1 and show the difference
    python scripts/stage_deps.py --write    # rewrite the code deps in dvc.yaml
    python scripts/stage_deps.py --write --model-files   # only the model files (no tracing)

A folder is listed when every ``.py`` file under it is loaded, otherwise its files are.

Model files are deps too: a stage that runs a model named in ``params.yaml`` (``source:`` an
ONNX or TorchScript file, an entry point's weights and its module beside params) lists that
file, so replacing it re-runs the stage instead of DVC serving the old model's results. DVC
cannot give one ``foreach`` item deps of its own (``${item.x}`` may not be a list), so the
``train`` stage lists the files of every version: replacing one version's file re-runs the
others' stages too (never stale, sometimes more than needed). Every dep outside the code roots
and ``outputs/`` belongs to this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
CODE_ROOTS = ("fct_registry", "pipelines")
OUTPUTS = "outputs/"  # the pipeline's own products: data deps, written by hand in dvc.yaml
# Where each stage reads the model sources it runs: ``side_info.source``, ``versions.*.source``.
MODEL_STAGES = ("side_info", "train")
TRAINED_WITH = "versions.${side_info.trained_with}"
TRAINED_WITH_NOTE = "# its classes: the images side-info trains on"
_TRACE = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
print(json.dumps(sorted({f for f in files if f})))
"""


def stage_module(cmd: str) -> str:
    match = re.search(r"python -m (pipelines\.\w+)", cmd)
    if not match:
        raise SystemExit(f"stage command {cmd!r} is not `python -m pipelines.NAME ...`")
    return match.group(1)


def traced_files(module: str) -> set[str]:
    """Repo-relative first-party files that importing and starting ``module`` loads."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _TRACE, module],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files = set()
    for name in json.loads(out.splitlines()[-1]):
        path = Path(name).resolve()
        if path.is_relative_to(ROOT):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(CODE_ROOTS):
                files.add(rel)
    return files


def compress(files: set[str]) -> list[str]:
    """The shortest list of files and whole folders that covers exactly ``files``."""

    def all_loaded(folder: Path) -> bool:
        return all(p.relative_to(ROOT).as_posix() in files for p in folder.rglob("*.py"))

    chosen: list[str] = []
    for rel in sorted(files):
        parts = Path(rel).parts
        # the highest folder below the code root whose every .py file is loaded
        best = rel
        for depth in range(2, len(parts)):
            folder = ROOT.joinpath(*parts[:depth])
            if all_loaded(folder):
                best = Path(*parts[:depth]).as_posix()
                break
        if best not in chosen:
            chosen.append(best)
    return chosen


def is_code(dep: str) -> bool:
    return dep.startswith(CODE_ROOTS)


def is_model_file(dep: str) -> bool:
    return not (is_code(dep) or dep.startswith(OUTPUTS))


def _source_files(source) -> list[str]:
    """The local files a model source reads (paths relative to params.yaml, as in dvc.yaml)."""
    return [] if source is None else source.local_files(ROOT)


def load_params(path: Path):
    """The project's own validated params (this checkout's code, not an installed one)."""
    sys.path.insert(0, str(ROOT))
    from fct_registry.config import load_params

    return load_params(path)


def model_files(params) -> dict[str, list[str]]:
    """Per stage of :data:`MODEL_STAGES`, the model files named in params that it runs."""
    trained = {f for v in params.versions.values() for f in _source_files(v.source)}
    return {"side_info": _source_files(params.side_info.source), "train": sorted(trained)}


def fix_trained_with(body, params) -> str | None:
    """The side_info stage reads ``versions.K`` (K = ``side_info.trained_with``: the classes it
    trains on) only when K is set: without it (the whole split, or an external extractor) DVC
    cannot even parse ``versions.${side_info.trained_with}``, so the entry goes; it comes back
    when K is set again. Returns the problem, or None."""
    listed = TRAINED_WITH in body["params"]
    if listed == (params.side_info.trained_with is not None):
        return None
    if listed:
        body["params"].remove(TRAINED_WITH)
        return f"side_info: lists {TRAINED_WITH}, but params set no side_info.trained_with"
    at = body["params"].index("side_info") + 1
    body["params"].insert(at, TRAINED_WITH)
    # Where dvc.yaml has the note: three spaces after the entry, at its indent of 6 + "- ".
    body["params"].yaml_add_eol_comment(TRAINED_WITH_NOTE, at, column=8 + len(TRAINED_WITH) + 3)
    return f"side_info: params set side_info.trained_with, but it lacks {TRAINED_WITH}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    parser.add_argument(
        "--model-files", action="store_true", help="only the model-file deps (no tracing)"
    )
    args = parser.parse_args()
    yaml = YAML()
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    dvc_yaml = ROOT / "dvc.yaml"
    doc = yaml.load(dvc_yaml.read_text())
    problems = []
    bodies = {name: stage.get("do", stage) for name, stage in doc["stages"].items()}
    params = load_params(ROOT / "params.yaml")
    files = model_files(params)
    problem = fix_trained_with(bodies["side_info"], params)
    if problem:
        problems.append(problem)
    traced: dict[str, set[str]] = {}
    if not args.model_files:
        modules = sorted({stage_module(body["cmd"]) for body in bodies.values()})
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            traced = dict(zip(modules, pool.map(traced_files, modules), strict=True))
    for name, body in bodies.items():
        deps = [d for d in body["deps"] if isinstance(d, str)]
        code = [d for d in deps if is_code(d)]
        want = code if args.model_files else compress(traced[stage_module(body["cmd"])])
        want_files = files.get(name, [])
        have_files = [d for d in deps if is_model_file(d)]
        if code == want and have_files == want_files:
            continue
        if code != want:
            problems.append(f"{name}: listed {code}\n{' ' * len(name)}  imports {want}")
        if have_files != want_files:
            problems.append(f"{name}: lists model files {have_files}, params name {want_files}")
        data = [d for d in body["deps"] if not (isinstance(d, str) and not d.startswith(OUTPUTS))]
        body["deps"].clear()
        body["deps"].extend([*want, *want_files, *data])
    if not problems:
        print("dvc.yaml: every stage's code deps match what it imports, model files too")
        return 0
    if args.write:
        yaml.dump(doc, dvc_yaml)
        print(f"rewrote the code and model-file deps of {len(problems)} stage(s) in dvc.yaml")
        return 0
    print("dvc.yaml deps differ from what the stages import or run:\n" + "\n".join(problems))
    print("fix: python scripts/stage_deps.py --write")
    if args.model_files:
        print("(code deps not traced: --model-files)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
