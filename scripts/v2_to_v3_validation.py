"""Choose a transformation's recipe (epochs, width, features, learning rate, batch size) without
looking at the test split.

On a finished pipeline's outputs (the stored embeddings of the edge's two versions and of
side-info, as the ``transform@NAME`` stage reads them), the training items are split once into a
fit part and a held-out part (a random permutation with ``--split-seed``). Each candidate recipe
(the params file's recipe for the edge, with ``epochs``, ``hidden_dim``, ``features``, ``lr``
and ``batch_size`` replaced) is trained on the fit part with ``--seeds`` seeds, and scored on
the held-out part as the evaluate stage scores the test split: new-version queries against the
held-out gallery upgraded by the transformation, leave-one-out, and the share of the old/old ->
new/new top-1 gap it closes (old/old and new/new measured on the same held-out items).

    python scripts/v2_to_v3_validation.py --edge v2_to_v3 --epochs 10 20 30 \
        --hidden 512 1024 --features stored --seeds 3 --log docs/recipes/v2_to_v3-validation.log

Prints one row per candidate (mean and sample std over seeds), writes every (candidate, seed)
row to ``--csv`` and the printed text to ``--log``, and ends with the chosen recipe as a
``params.yaml`` line: the best mean top-1 gap closed, and among candidates within its standard
error over seeds (at least ``--tie`` points) the cheapest (stored features before augmented,
then fewer epochs x width^2, then larger batches; learning rates cost the same, so the order
given on the command line decides: list the shared recipe's first).

The held-out items are *training* items of both versions (each saw them), so they only rank the
recipes; the pipeline's test-split numbers are the result. Under ``determinism: portable`` the
script re-executes itself under the pinned kernels, as a stage does.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fct_registry.config import Params, TransformationConfig
from fct_registry.data.prepared import TensorSplit, load_prepared
from fct_registry.evaluation.compatibility import gap_closed
from fct_registry.evaluation.per_query import per_query_scores
from fct_registry.layout import Layout, load_embeddings
from fct_registry.models.io import load_model
from fct_registry.stages.entry import pin_kernels
from fct_registry.stages.params import load_checked_params
from fct_registry.training.transformation import (
    train_transformation,
    train_transformation_augmented,
    transformation_spec,
)

INT_KEYS = ("epochs", "hidden_dim", "seed", "batch_size")
RECIPE_KEYS = ("epochs", "hidden_dim", "features", "lr", "batch_size")


@dataclass(frozen=True)
class Candidate:
    epochs: int
    hidden_dim: int
    features: str
    lr: float
    batch_size: int

    @classmethod
    def of(cls, row: dict) -> Candidate:
        return cls(*(row[k] for k in RECIPE_KEYS))

    def __str__(self) -> str:
        return (
            f"{self.epochs} epochs, hidden_dim {self.hidden_dim}, {self.features} features, "
            f"lr {self.lr:g}, batch {self.batch_size}"
        )

    @property
    def cost(self) -> tuple[bool, int, int]:
        """Cheaper first: stored features (no CNN forward passes), then epochs x width^2 (the
        mixer's hidden x hidden layer dominates the transformation's work), then larger batches
        (fewer optimiser steps per epoch)."""
        return (self.features != "stored", self.epochs * self.hidden_dim**2, -self.batch_size)

    def params_line(self, name: str, base: TransformationConfig) -> str:
        """The edge's ``transformations:`` entry in params.yaml with this recipe."""
        o = base.optim
        feats = "" if self.features == "stored" else f" features: {self.features},"
        return (
            f"  {name}: {{from: {base.source}, to: {base.target}, kind: {base.kind}, "
            f"hidden_dim: {self.hidden_dim},{feats} seeds: {base.seeds},\n"
            f"{' ' * (len(name) + 4)}optim: {{epochs: {self.epochs}, batch_size: "
            f"{self.batch_size}, lr: {self.lr}, weight_decay: {o.weight_decay}}}}}"
        )


def _loo(query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor, distance: str):
    return per_query_scores(
        query, gallery, labels, labels, distance=distance, leave_one_out=True
    ).means()


def summary(rows: list[dict], tie: float, edge: str, base: TransformationConfig) -> list[str]:
    """The table of candidates (mean ± sample std over seeds) and the chosen recipe."""
    candidates = list(dict.fromkeys(Candidate.of(r) for r in rows))
    out = [
        "",
        "| epochs | hidden_dim | features | lr | batch | seeds | top-1 | top-1 gap closed "
        "| mAP gap closed | CPU s / run |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    means: dict[Candidate, float] = {}
    ses: dict[Candidate, float] = {}
    for cand in candidates:
        mine = [r for r in rows if Candidate.of(r) == cand]

        def ms(key: str, rs: list[dict] = mine) -> str:
            vals = [r[key] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.fmean(vals):.2f} ± {sd:.2f}"

        closed = [r["gap_closed_top1"] for r in mine]
        means[cand] = statistics.fmean(closed)
        ses[cand] = statistics.stdev(closed) / len(closed) ** 0.5 if len(closed) > 1 else 0.0
        cpu_s = statistics.fmean(r["cpu_s"] for r in mine)
        out.append(
            f"| {cand.epochs} | {cand.hidden_dim} | {cand.features} | {cand.lr:g} | "
            f"{cand.batch_size} | {len(mine)} | "
            f"{ms('top1')} | {ms('gap_closed_top1')} | {ms('gap_closed_mAP')} | {cpu_s:.1f} |"
        )
    top = max(means, key=means.get)
    best = means[top]
    # One-standard-error rule: a candidate within the best's standard error over seeds (or
    # ``tie`` points, if more) is as good as the best, given the seed-to-seed noise.
    tie = max(tie, ses[top])
    chosen = min((c for c in candidates if means[c] >= best - tie), key=lambda c: c.cost)
    return [
        *out,
        "",
        f"chosen: {chosen}: held-out top-1 gap closed {means[chosen]:.2f} (best mean "
        f"{best:.2f} ± {ses[top]:.2f} standard error, {top}; within {tie:.2f} points of it the "
        "cheapest)",
        "params.yaml line:",
        chosen.params_line(edge, base),
    ]


def _read_rows(path: Path, base: TransformationConfig) -> list[dict]:
    """Rows of a ``--csv`` file, typed as the run wrote them; files from before the ``lr`` and
    ``batch_size`` columns ran with ``base``'s."""
    defaults = {"lr": base.optim.lr, "batch_size": base.optim.batch_size}
    with path.open() as f:
        rows = [
            {
                k: v if k == "features" else (int(v) if k in INT_KEYS else float(v))
                for k, v in r.items()
            }
            for r in csv.DictReader(f)
        ]
    return [{**r, **{k: v for k, v in defaults.items() if k not in r}} for r in rows]


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--outputs", type=Path, default=Path("outputs"))
    ap.add_argument("--edge", default="v2_to_v3", help="a name under transformations:")
    ap.add_argument("--held-out", type=int, default=4000, help="training items held out")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the fit/held-out split")
    ap.add_argument("--seeds", type=int, default=3, help="trainings per candidate")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first, first + 1, ...")
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--hidden", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--features", nargs="+", default=["stored"], choices=["stored", "augmented"])
    ap.add_argument("--lr", type=float, nargs="+", help="learning rates (default: the edge's)")
    ap.add_argument("--batch-size", type=int, nargs="+", help="batch sizes (default: the edge's)")
    ap.add_argument(
        "--tie",
        type=float,
        default=1.0,
        help="points of gap closed that tie at least (else the best's standard error over seeds)",
    )
    ap.add_argument("--csv", type=Path, help="write every (candidate, seed) row here")
    ap.add_argument("--log", type=Path, help="write the printed report here")
    ap.add_argument(
        "--summarise",
        type=Path,
        nargs="+",
        help="train nothing: the table and choice from the rows of these --csv files",
    )
    args = ap.parse_args()

    # As a stage (stages/entry.py): a spinning OpenMP pool collapses on shared cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    params: Params = load_checked_params(args.params)
    if args.summarise:  # merge the runs' rows, then the table and the choice
        base = params.transformations[args.edge]
        rows = [r for path in args.summarise for r in _read_rows(path, base)]
        lines = [f"# summarised from {', '.join(map(str, args.summarise))}"]
        lines += summary(rows, args.tie, args.edge, base)
        print("\n".join(lines))
        if args.csv:
            args.csv.write_text(_csv_text(rows))
        if args.log:
            args.log.write_text("\n".join(lines) + "\n")
        return
    if params.determinism == "portable":  # the pipeline's kernels, as its stages run them
        pin_kernels(reexec=True)
    base = params.transformations[args.edge]
    layout = Layout(args.outputs)
    old, new, side = (
        load_embeddings(p)["train"]
        for p in (
            layout.version_embeddings(base.source),
            layout.version_embeddings(base.target),
            layout.side_info_embeddings,
        )
    )
    train = load_prepared(layout.data, "train")
    labels = train.labels
    if params.versions[base.target].classes is not None or base.train_on != "target":
        sys.exit("error: this script covers edges trained on every training item only")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(args.split_seed))
    val, fit = order[: args.held_out].sort().values, order[args.held_out :].sort().values
    y = labels[val]
    distance = params.evaluation.distance
    own_old = _loo(old[val], old[val], y, distance)
    own_new = _loo(new[val], new[val], y, distance)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"# {' '.join(['python', *sys.argv])}")
    say(
        f"# {args.edge} ({base.source}->{base.target}): fit {len(fit)} training items, held-out "
        f"{len(val)} (split seed {args.split_seed}); determinism: {params.determinism}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    say(
        f"# held-out old/old top-1 {own_old['top1']:.2f}, new/new {own_new['top1']:.2f} "
        f"(gap {own_new['top1'] - own_old['top1']:.2f} points); mAP {own_old['mAP']:.2f} / "
        f"{own_new['mAP']:.2f}"
    )
    models = None
    if "augmented" in args.features:
        models = [
            load_model(d)[0]
            for d in (layout.version(base.source), layout.side_info, layout.version(base.target))
        ]
    candidates = [
        Candidate(e, h, f, lr, b)
        for f, e, h, lr, b in itertools.product(
            args.features,
            args.epochs,
            args.hidden,
            args.lr or [base.optim.lr],
            args.batch_size or [base.optim.batch_size],
        )
    ]
    rows: list[dict] = []
    sink = None
    if args.csv:  # row by row, so that an interrupted run keeps what it measured
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        sink = args.csv.open("w", newline="")
    for cand, seed in itertools.product(
        candidates, range(args.first_seed, args.first_seed + args.seeds)
    ):
        cfg = base.model_copy(
            update={
                "hidden_dim": cand.hidden_dim,
                "features": cand.features,
                "optim": base.optim.model_copy(
                    update={"epochs": cand.epochs, "lr": cand.lr, "batch_size": cand.batch_size}
                ),
            }
        )
        spec = transformation_spec(cfg, old.shape[1], new.shape[1], side.shape[1])
        cpu, wall = time.process_time(), time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            common = {
                "seed": params.seed + seed,
                "device": torch.device("cpu"),
                "checkpoint": Path(tmp) / "c.pt",
                "fingerprint": "validation",
                "desc": f"{cand} seed {seed}",
            }
            if models is not None and cand.features == "augmented":
                fit_split = TensorSplit(train.images[fit], labels[fit])
                model, _ = train_transformation_augmented(cfg, fit_split, *models, spec, **common)
            else:
                model, _ = train_transformation(cfg, old[fit], side[fit], new[fit], spec, **common)
        with torch.no_grad():
            h = model.eval()(old[val], side[val]).float()
        s = _loo(new[val], h, y, distance)
        closed = {m: gap_closed(s[m], own_old[m], own_new[m]) for m in ("top1", "mAP")}
        rows.append(
            {
                "epochs": cand.epochs,
                "hidden_dim": cand.hidden_dim,
                "features": cand.features,
                "lr": cand.lr,
                "batch_size": cand.batch_size,
                "seed": params.seed + seed,
                "top1": round(s["top1"], 4),
                "mAP": round(s["mAP"], 4),
                "gap_closed_top1": round(
                    gap_closed(s["top1"], own_old["top1"], own_new["top1"]), 4
                ),
                "gap_closed_mAP": round(closed["mAP"], 4),
                "cpu_s": round(time.process_time() - cpu, 1),
                "wall_s": round(time.perf_counter() - wall, 1),
            }
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
        if sink is not None:
            writer = csv.DictWriter(sink, fieldnames=list(rows[0]), lineterminator="\n")
            if len(rows) == 1:
                writer.writeheader()
            writer.writerow(rows[-1])
            sink.flush()
    if sink is not None:
        sink.close()

    for line in summary(rows, args.tie, args.edge, base):
        say(line)
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        args.log.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
