"""One short GPU check of the training path (run on a lent GPU machine, not in CI).

Runs the default pipeline's stages as library calls with ``device: cuda`` (bf16 autocast) on
Fashion-MNIST, then times ResNet-50 training steps in the paper's CIFAR-100 setting (32x32, 3
channels, 128-d, batch 256) and prints images/s and the first losses.

    python benchmarks/gpu_check.py --data-root /usr/share/datasets/fashion-mnist --out /tmp/gpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from fct_registry.config import parse_params
from fct_registry.layout import Layout
from fct_registry.stages.bct import bct_stage
from fct_registry.stages.evaluate import evaluate_stage
from fct_registry.stages.prepare import prepare_stage
from fct_registry.stages.side_info import side_info_stage
from fct_registry.stages.transformation import transformation_stage
from fct_registry.stages.version import version_stage


def pipeline(data_root: str, out: Path, epochs_scale: float) -> dict:
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["device"] = "cuda"
    raw["data"]["root"] = data_root
    params = parse_params(raw)
    layout = Layout(out)
    timings = {}
    steps = [
        ("prepare", lambda: prepare_stage(params, layout)),
        ("side_info", lambda: side_info_stage(params, layout)),
    ]
    steps += [(f"train@{v}", lambda v=v: version_stage(params, layout, v)) for v in params.versions]
    steps += [(f"bct@{n}", lambda n=n: bct_stage(params, layout, n)) for n in params.bct]
    steps += [
        (f"transform@{n}", lambda n=n: transformation_stage(params, layout, n))
        for n in params.transformations
    ]
    steps += [("evaluate", lambda: evaluate_stage(params, layout))]
    for name, fn in steps:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {timings[name]} s", flush=True)
    return timings


def resnet50_throughput(steps: int = 30, batch: int = 256) -> dict:
    from fct_registry.models.embedding import EmbeddingModel

    device = torch.device("cuda")
    model = EmbeddingModel("resnet50", {}, 3, 128, 100, [0.5] * 3, [0.25] * 3)
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (batch,), device=device)
    losses, t0 = [], 0.0
    for i in range(steps):
        if i == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model.classifier(model(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(round(float(loss), 4))
    torch.cuda.synchronize()
    return {
        "images_per_s": round((steps - 5) * batch / (time.perf_counter() - t0)),
        "first_losses": losses[:5],
        "batch": batch,
    }


def resnet50_epochs(data_root: str, out: Path, epochs: int = 2) -> dict:
    """The GPU profile's backbone through the real trainer (ResNet-50, 128-d, bf16 autocast) on
    the embedded dataset: images/s and per-epoch loss."""
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw.update(device="cuda", family="r50")
    raw["data"]["root"] = data_root
    raw["versions"] = {
        "1": {
            "backbone": {"name": "resnet50", "kwargs": {}},
            "embedding_dim": 128,
            "optim": {"epochs": epochs, "batch_size": 256, "lr": 0.002},
        }
    }
    raw["transformations"], raw["bct"] = {}, {}
    params = parse_params(raw)
    layout = Layout(out)
    prepare_stage(params, layout)
    t0 = time.perf_counter()
    version_stage(params, layout, 1)
    seconds = time.perf_counter() - t0
    history = Path(layout.history("v1")).read_text().splitlines()
    return {
        "train_images": 60000 * epochs,
        "seconds_incl_embedding": round(seconds, 1),
        "images_per_s": round(60000 * epochs / seconds),
        "history": history,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", type=Path, default=Path("/tmp/fct-gpu"))
    ap.add_argument(
        "--resnet50-epochs",
        type=int,
        default=0,
        help="also train the GPU profile's ResNet-50 for N epochs on the dataset",
    )
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no GPU visible"
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    result = {"resnet50_cifar_train": resnet50_throughput()}
    print(json.dumps(result), flush=True)
    if args.resnet50_epochs:
        r50 = resnet50_epochs(args.data_root, args.out.with_name("r50"), args.resnet50_epochs)
        print(json.dumps({"resnet50_fashion": r50}), flush=True)
        return
    result["pipeline_seconds"] = pipeline(args.data_root, args.out, 1.0)
    metrics = json.loads((args.out / "eval" / "metrics.json").read_text())
    result["metrics"] = metrics
    print((args.out / "eval" / "compatibility.md").read_text())
    print(json.dumps(result["pipeline_seconds"]))


if __name__ == "__main__":
    main()
