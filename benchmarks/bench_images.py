"""Benchmark: what indexing image *files* costs, against the in-memory tensor, and its memory.

    .venv/bin/python benchmarks/bench_images.py                    # everything (~10 min, 2 cores)
    .venv/bin/python benchmarks/bench_images.py --images 2000 --small 2000 --large 20000  # quick

All numbers come from one run, side by side, on this machine (CPU; random weights: inference cost
does not depend on the weights). The models are the default family's (params.yaml): its newest
version's backbone and its side-info extractor, both computed for every image as ``fct embed``
does.

1. Throughput: ``embed_source`` (the job behind ``fct embed``: listing, decoding in 2
   DataLoader workers, both models, Parquet shards) over a folder of Fashion-MNIST JPEGs,
   against the same images, decoded once beforehand, from the in-memory tensor (the prepared
   safetensors path). Runs alternate (tensor, files, tensor, files, ...) and the best of each is
   compared: cost = 1 - files/tensor images per second. Target: <= 20%. CPU seconds per image
   (main process + DataLoader workers, from ``getrusage``) are printed beside it: under load,
   wall time measures the scheduler as much as the code.
2. Peak memory of ``fct embed`` (the CLI, resolving through a temporary MLflow registry) over a
   flat folder of N JPEG files, at a small and a large N: the main process's ``VmHWM`` and the
   peak of its RSS plus its DataLoader workers' private memory (polled every 0.25 s).
   Target: the large run's peaks within 10% of the small run's.

Wall and CPU seconds are printed side by side (the machine is shared). OMP_WAIT_POLICY=PASSIVE.
Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_COST = 0.20
TARGET_GROWTH = 0.10
FASHION = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def fashion_jpegs(n: int) -> tuple[list[bytes], Any]:
    """``n`` Fashion-MNIST test images as JPEG bytes (cycling through the 10,000), and the
    uint8 ``[n, 1, 28, 28]`` tensor of the same images decoded back (what the tensor path
    reads, so both paths embed identical pixels)."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    if (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        from fct_registry.data.fashion_mnist import load_fashion_mnist

        images, _ = load_fashion_mnist(FASHION, "test")
        images = images[:, 0]
    else:  # seeded noise of the same shape (nothing downloads)
        images = np.random.default_rng(0).integers(0, 256, (10_000, 28, 28), dtype=np.uint8)
    encoded, decoded = [], []
    for i in range(min(n, len(images))):
        out = io.BytesIO()
        Image.fromarray(images[i], "L").save(out, "JPEG", quality=90)
        encoded.append(out.getvalue())
        decoded.append(np.array(Image.open(io.BytesIO(out.getvalue()))))
    reps = -(-n // len(encoded))
    encoded = (encoded * reps)[:n]
    tensor = torch.from_numpy(np.stack((decoded * reps)[:n]))[:, None].contiguous()
    return encoded, tensor


def write_folder(root: Path, encoded: list[bytes]) -> None:
    root.mkdir(parents=True)
    for i, data in enumerate(encoded):
        (root / f"{i:07d}.jpg").write_bytes(data)


def default_models() -> tuple[Any, Any, list[int]]:
    """The default family's newest version and side-info extractor (params.yaml), built with
    random weights; and their input shape."""
    from fct_registry.config import load_params
    from fct_registry.models.io import build_from_spec

    params = load_params(REPO_ROOT / "params.yaml")
    newest = params.versions[max(params.versions)]
    shape = [1, 28, 28]
    base = {"in_channels": 1, "input_shape": shape, "mean": [0.3], "std": [0.3]}
    model = build_from_spec(
        base
        | {
            "kind": "embedding",
            "backbone": newest.backbone.name,
            "backbone_kwargs": dict(newest.backbone.kwargs),
            "embedding_dim": newest.embedding_dim,
            "num_classes": 10,
        }
    ).eval()
    side = build_from_spec(
        base
        | {
            "kind": "side_info",
            "backbone": params.side_info.backbone.name,
            "backbone_kwargs": dict(params.side_info.backbone.kwargs),
            "dim": params.side_info.dim,
            "projection_dim": params.side_info.projection_dim,
        }
    ).eval()
    return model, side, shape


# --- 1. throughput -----------------------------------------------------------------------------


def throughput(n: int, rounds: int, workdir: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from fct_registry.data.decode import ImageTransform
    from fct_registry.data.image_sources import open_source
    from fct_registry.gallery.embed_job import EmbedModels, embed_source
    from fct_registry.storage import open_storage

    encoded, tensor = fashion_jpegs(n)
    write_folder(workdir / "jpegs", encoded)
    save_file({"images": tensor}, str(workdir / "images.safetensors"))
    model, side, shape = default_models()
    models = EmbedModels("bench", 1, model, side, "bench-side-info/1", key="bench")
    transform = ImageTransform.for_input_shape(shape)
    sources = {
        "tensor": open_source(str(workdir / "images.safetensors")),
        "files": open_source(str(workdir / "jpegs")),
    }
    runs: dict[str, list[tuple[float, float]]] = {"tensor": [], "files": []}
    for r in range(rounds):
        for name, source in sources.items():
            out = workdir / f"gallery-{name}-{r}"
            children = _children_cpu()
            report = embed_source(
                source,
                open_storage(str(out)),
                models,
                transform,
                device=torch.device("cpu"),
                batch_size=256,
                num_workers=2,
            )
            assert report.rows == n, report
            workers = _children_cpu() - children  # DataLoader workers, joined by now
            runs[name].append((report.seconds, report.cpu_seconds + workers))
            shutil.rmtree(out)
            print(
                f"  round {r + 1} {name:>6}: {n / report.seconds:8.0f} images/s "
                f"(wall {report.seconds:.2f} s; CPU {report.cpu_seconds:.2f} s main + "
                f"{workers:.2f} s workers = {1e6 * (report.cpu_seconds + workers) / n:.0f} "
                "us/image)",
                flush=True,
            )
    best = {name: min(w for w, _ in times) for name, times in runs.items()}
    best_cpu = {name: min(c for _, c in times) for name, times in runs.items()}
    ips = {name: n / best[name] for name in best}
    return {
        "images": n,
        "threads": torch.get_num_threads(),
        "workers": 2,
        "runs": runs,
        "images_per_second": ips,
        "cpu_us_per_image": {name: 1e6 * c / n for name, c in best_cpu.items()},
        "cost": 1 - ips["files"] / ips["tensor"],
        "cpu_cost": best_cpu["files"] / best_cpu["tensor"] - 1,
    }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- 2. peak memory of fct embed ---------------------------------------------------------------

CLI_WITH_PEAK = """
import sys
from fct_registry.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    sys.stderr.write(next(line for line in fh if line.startswith("VmHWM:")))
sys.exit(rc)
"""
"""``fct`` reporting its own peak RSS (``VmHWM``: this process image only; a child's
``ru_maxrss`` would start from this benchmark's RSS at fork)."""


def register_default(workdir: Path) -> str:
    """A temporary MLflow registry with family ``bench``: version 1 = the default family's
    newest model, linked to the default side-info extractor (both logged with the fct flavor)."""
    import mlflow

    from fct_registry.registry import flavor
    from fct_registry.registry import tags as fct_tags

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment(
            "fct-bench", artifact_location=(workdir / "artifacts").as_uri()
        )
    )
    model, side, shape = default_models()
    base = {"in_channels": 1, "input_shape": shape, "mean": [0.3], "std": [0.3]}
    from fct_registry.config import load_params

    params = load_params(REPO_ROOT / "params.yaml")
    newest = params.versions[max(params.versions)]
    side_spec = base | {
        "kind": "side_info",
        "backbone": params.side_info.backbone.name,
        "backbone_kwargs": dict(params.side_info.backbone.kwargs),
        "dim": params.side_info.dim,
        "projection_dim": params.side_info.projection_dim,
    }
    spec = base | {
        "kind": "embedding",
        "backbone": newest.backbone.name,
        "backbone_kwargs": dict(newest.backbone.kwargs),
        "embedding_dim": newest.embedding_dim,
        "num_classes": 10,
    }
    with mlflow.start_run():
        flavor.log_model(
            side,
            "model",
            spec=side_spec,
            registered_model_name=fct_tags.side_info_model_name("bench"),
            tags={fct_tags.ROLE: fct_tags.ROLE_SIDE_INFO, fct_tags.FAMILY: "bench"},
        )
    with mlflow.start_run():
        flavor.log_model(
            model,
            "model",
            spec=spec,
            registered_model_name="bench",
            tags={
                fct_tags.ROLE: fct_tags.ROLE_EMBEDDING,
                fct_tags.FAMILY: "bench",
                fct_tags.EMBEDDING_DIM: str(newest.embedding_dim),
                fct_tags.SIDE_INFO: f"{fct_tags.side_info_model_name('bench')}/1",
            },
        )
    return uri


def _tree_kb(pid: int) -> int:
    """RSS of ``pid`` plus the private memory (USS) of its descendants (kB), from /proc: the
    forked DataLoader workers' pages shared with the main process are counted once, and,
    unlike PSS, nothing depends on what other processes on the machine map."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            if p == pid:
                with open(f"/proc/{p}/status") as fh:
                    total += next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:"))
            else:
                with open(f"/proc/{p}/smaps_rollup") as fh:
                    total += sum(
                        int(x.split()[1])
                        for x in fh
                        if x.startswith(("Private_Clean:", "Private_Dirty:"))
                    )
            with open(f"/proc/{p}/task/{p}/children") as fh:
                stack += [int(c) for c in fh.read().split()]
        except (OSError, ValueError, StopIteration):
            continue
    return total


def peak_memory(n: int, uri: str, encoded: list[bytes], workdir: Path) -> dict[str, Any]:
    folder = workdir / f"files-{n}"
    write_folder(folder, [encoded[i % len(encoded)] for i in range(n)])
    out = workdir / f"gallery-{n}"
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    cmd = [
        sys.executable,
        "-c",
        CLI_WITH_PEAK,
        "embed",
        "--model",
        "bench@1",
        "--images",
        str(folder),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "2",
        "--json",
        "--tracking-uri",
        uri,
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree_peak = 0
    while proc.poll() is None:
        tree_peak = max(tree_peak, _tree_kb(proc.pid))
        time.sleep(0.25)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fct embed failed ({proc.returncode}):\n{stderr[-3000:]}")
    hwm = next(line for line in stderr.splitlines() if line.startswith("VmHWM:"))
    summary = json.loads(stdout)
    shutil.rmtree(folder)
    shutil.rmtree(out)
    return {
        "files": n,
        "rows": summary["rows"],
        "main_peak_mb": int(hwm.split()[1]) / 1024,
        "tree_peak_mb": tree_peak / 1024,
        "seconds": seconds,
        "images_per_second": summary["images_per_second"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="throughput: images per run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: runs per path")
    parser.add_argument("--small", type=int, default=10_000, help="memory: files, small run")
    parser.add_argument("--large", type=int, default=100_000, help="memory: files, large run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch

    print(
        f"bench_images: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        workdir = Path(tmp)
        print(f"1. throughput, {args.images} Fashion-MNIST JPEGs (default family's models):")
        results["throughput"] = t = throughput(args.images, args.rounds, workdir / "t")
        ips = t["images_per_second"]
        cpu = t["cpu_us_per_image"]
        print(
            f"   best: tensor {ips['tensor']:.0f} images/s, files {ips['files']:.0f} images/s; "
            f"files cost {100 * t['cost']:.1f}% of the throughput (target <= "
            f"{100 * TARGET_COST:.0f}%); CPU per image {cpu['tensor']:.0f} vs {cpu['files']:.0f} "
            f"us ({100 * t['cpu_cost']:+.1f}%)",
            flush=True,
        )
        print(f"2. peak memory of `fct embed` over {args.small} and {args.large} JPEG files:")
        (workdir / "m").mkdir()
        uri = register_default(workdir / "m")
        encoded, _ = fashion_jpegs(10_000)
        runs = []
        for n in (args.small, args.large):
            run = peak_memory(n, uri, encoded, workdir / "m")
            runs.append(run)
            print(
                f"   {n:>7} files: main peak RSS {run['main_peak_mb']:.0f} MB, with workers "
                f"{run['tree_peak_mb']:.0f} MB; {run['seconds']:.0f} s "
                f"({run['images_per_second']:.0f} images/s)",
                flush=True,
            )
        growth_main = runs[1]["main_peak_mb"] / runs[0]["main_peak_mb"] - 1
        growth_tree = runs[1]["tree_peak_mb"] / runs[0]["tree_peak_mb"] - 1
        results["memory"] = {"runs": runs, "growth_main": growth_main, "growth_tree": growth_tree}
        print(
            f"   growth {args.small} -> {args.large} files: main {100 * growth_main:+.1f}%, "
            f"with workers {100 * growth_tree:+.1f}% (target <= {100 * TARGET_GROWTH:.0f}%)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ok = t["cost"] <= TARGET_COST and max(growth_main, growth_tree) <= TARGET_GROWTH
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
