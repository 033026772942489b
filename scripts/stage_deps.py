"""Derive each DVC stage's code dependencies from what its entry point actually imports.

A stage's ``deps`` must cover all the code it runs, or ``dvc repro`` serves stale results after
an edit; and they should list nothing else, or an unrelated edit retrains it. This script runs
every stage's entry module (``cmd: python -m pipelines.X``) in a fresh interpreter up to its
``--help`` exit, so every module-level import happens, and records the first-party files
loaded. The project keeps first-party imports at module level (tests/test_layers.py), so the
import graph is the code a stage can run.

    python scripts/stage_deps.py            # check: exit 1 and show the difference
    python scripts/stage_deps.py --write    # rewrite the code deps in dvc.yaml

A folder is listed when every ``.py`` file under it is loaded, otherwise its files are.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    args = parser.parse_args()
    yaml = YAML()
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    dvc_yaml = ROOT / "dvc.yaml"
    doc = yaml.load(dvc_yaml.read_text())
    problems = []
    bodies = {name: stage.get("do", stage) for name, stage in doc["stages"].items()}
    modules = sorted({stage_module(body["cmd"]) for body in bodies.values()})
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        traced = dict(zip(modules, pool.map(traced_files, modules), strict=True))
    for name, body in bodies.items():
        want = compress(traced[stage_module(body["cmd"])])
        have = [d for d in body["deps"] if isinstance(d, str) and is_code(d)]
        if have == want:
            continue
        problems.append(f"{name}: listed {have}\n{' ' * len(name)}  imports {want}")
        data = [d for d in body["deps"] if not (isinstance(d, str) and is_code(d))]
        body["deps"].clear()
        body["deps"].extend([*want, *data])
    if not problems:
        print("dvc.yaml: every stage's code deps match what it imports")
        return 0
    if args.write:
        yaml.dump(doc, dvc_yaml)
        print(f"rewrote the code deps of {len(problems)} stage(s) in dvc.yaml")
        return 0
    print("dvc.yaml code deps differ from what the stages import:\n" + "\n".join(problems))
    print("fix: python scripts/stage_deps.py --write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
