"""``fct init``: a validated ``params.yaml`` for a family from its versions' models or tables.

Each version is given as one string, mapped to a source kind by its syntax (:func:`source_for`):
``models:/name/4`` or ``runs:/id/path`` -> ``mlflow``, ``*.onnx`` -> ``onnx``, ``*.pt`` /
``*.torchscript`` -> ``torchscript``, ``pkg.mod:fn[,WEIGHTS]`` -> ``entrypoint``,
``TRAIN.parquet,TEST.parquet`` (or ``.safetensors``) -> ``embeddings``, and ``train`` -> a version
trained here with the default recipe. The section is built as a :class:`~fct_registry.config.Params`
object, so what is written always loads; kinds this build's ``ModelSource`` does not know are
refused by name, not written.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fct_registry.config import ModelSource, Params, parse_params
from fct_registry.data.embedding_tables import read_table
from fct_registry.errors import ConfigError

TRAIN = "train"
TABLE_SUFFIXES = (".parquet", ".pq", ".safetensors")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
FORMS = (
    "models:/NAME/N, runs:/ID/PATH, FILE.onnx, FILE.pt|.torchscript, pkg.mod:factory[,WEIGHTS], "
    "TRAIN.parquet,TEST.parquet (embedding tables), or train"
)
# Defaults a newcomer can start from: the pipeline's CPU-sized transformation recipe.
TRANSFORMATION_DEFAULTS: dict[str, Any] = {
    "hidden_dim": 512,
    "optim": {"epochs": 10, "batch_size": 512, "lr": 0.001, "weight_decay": 0.0},
}


@dataclass(frozen=True)
class Given:
    """One ``--version`` / ``--side-info`` value, parsed: its source (None: trained here) and
    its width when the source tells it (embedding tables)."""

    text: str
    source: dict[str, Any] | None
    dim: int | None = None

    @property
    def kind(self) -> str | None:
        return None if self.source is None else next(iter(self.source))


def source_for(text: str, where: str, *, read_widths: bool = True) -> Given:
    """The source a value names (module docstring); ``read_widths``: open embedding tables to
    learn their width."""
    value = text.strip()
    if value == TRAIN:
        return Given(value, None)
    parts = [p.strip() for p in value.split(",")]
    if all(p.lower().endswith(TABLE_SUFFIXES) for p in parts):
        if len(parts) != 2:
            raise ConfigError(
                f"{where}: embedding tables come as a pair TRAIN,TEST (e.g. "
                f"old-train.parquet,old-test.parquet), got {value!r}"
            )
        dim = None
        if read_widths:
            train, test = (
                read_table(p, f"{where} ({split})")
                for p, split in zip(parts, ("train", "test"), strict=True)
            )
            if train.dim != test.dim:
                raise ConfigError(
                    f"{where}: {parts[0]} is {train.dim}-d but {parts[1]} is {test.dim}-d; "
                    "give the two splits of one model"
                )
            dim = train.dim
        return Given(value, {"embeddings": {"train": parts[0], "test": parts[1]}}, dim)
    if value.startswith(("models:/", "runs:/")):
        return Given(value, {"mlflow": {"uri": value}})
    if value.lower().endswith(".onnx"):
        return Given(value, {"onnx": {"path": value}})
    # An entry point first: its weights file may end in .pt too (pkg.mod:fn,weights.pt).
    if _ENTRYPOINT.match(parts[0]) and len(parts) <= 2:
        spec = {"factory": parts[0]} | ({"weights": parts[1]} if len(parts) == 2 else {})
        return Given(value, {"entrypoint": spec})
    if value.lower().endswith((".pt", ".pth", ".torchscript")):
        return Given(value, {"torchscript": {"path": value}})
    raise ConfigError(f"{where}: cannot tell what {value!r} is; give one of: {FORMS}")


def data_section(text: str) -> dict[str, Any]:
    """``--data``: ``imagefolder:ROOT`` (ROOT/train, ROOT/test streamed), ``fashion-mnist:ROOT``
    or ``cifar100:ROOT`` (a known dataset), or ``TRAIN,TEST`` (any image source URIs)."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "imagefolder" and rest:
        root = rest.rstrip("/")
        return {"source": {"train": f"{root}/train", "test": f"{root}/test"}}
    if sep and kind in ("fashion-mnist", "cifar100") and rest:
        return {"dataset": kind, "root": rest}
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 2 and all(parts):
        return {"source": {"train": parts[0], "test": parts[1]}}
    raise ConfigError(
        f"--data {text!r}: give imagefolder:ROOT (ROOT/train/<class>/..., ROOT/test/...), "
        "fashion-mnist:ROOT, cifar100:ROOT, or TRAIN,TEST image sources"
    )


def parse_versions(values: list[str]) -> dict[int, str]:
    """``["1=models:/prod/4", "2=new.onnx"]`` -> ``{1: ..., 2: ...}``, numbers checked."""
    out: dict[int, str] = {}
    for value in values:
        number, sep, rest = value.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1 or not rest.strip():
            raise ConfigError(
                f"--version {value!r}: write N=SOURCE with N >= 1, e.g. --version "
                "1=models:/prod/4 or --version 2=new-train.parquet,new-test.parquet"
            )
        if int(number) in out:
            raise ConfigError(f"--version {int(number)} is given twice; give each version once")
        out[int(number)] = rest.strip()
    if len(out) < 2:
        raise ConfigError(
            "give at least two --version N=SOURCE (an old and a new version: FCT trains the "
            "transformation between them)"
        )
    return dict(sorted(out.items()))


def edges(versions: list[int], no_side_info: str) -> list[tuple[str, int, int, str]]:
    """``(name, from, to, kind)``: each consecutive pair and first -> last; ``no_side_info``
    (``first``, ``all``, ``none``): which edges also get a twin that reads no side-info (what
    galleries indexed without side-info upgrade through)."""
    pairs = list(itertools.pairwise(versions))
    if len(versions) > 2:
        pairs.append((versions[0], versions[-1]))
    out = []
    for a, b in pairs:
        out.append((f"v{a}_to_v{b}", a, b, "fct"))
        if no_side_info == "all" or (no_side_info == "first" and a == versions[0]):
            out.append((f"v{a}_to_v{b}_no_side_info", a, b, "fct-no-side-info"))
    return out


def build_params(
    family: str,
    versions: dict[int, str],
    side_info: str,
    data: str | None = None,
    *,
    dims: dict[str, int] | None = None,
    preprocess: dict[str, dict[str, Any]] | None = None,
    no_side_info: str = "first",
    read_widths: bool = True,
) -> tuple[Params, dict[str, Any]]:
    """The validated parameters and the raw mapping they were built from (what is written).
    ``dims``: widths by version number (``"2"``) or ``"side_info"``, for sources that do not
    tell their own (models); tables' widths are read from them. ``preprocess``: each model's
    ``preprocess`` block, by the same keys (required for models that record none)."""
    dims = dict(dims or {})
    preprocess = dict(preprocess or {})
    known = set(ModelSource.model_fields)
    raw: dict[str, Any] = {"family": family, "seed": 0, "device": "auto"}
    side = source_for(side_info, "--side-info", read_widths=read_widths)
    given = {
        n: source_for(v, f"--version {n}", read_widths=read_widths) for n, v in versions.items()
    }
    for where, g in [("--side-info", side), *((f"--version {n}", g) for n, g in given.items())]:
        if g.kind is not None and g.kind not in known:
            raise ConfigError(
                f"{where} {g.text}: model source kind {g.kind!r} is not supported by this "
                f"fct-registry (known: {', '.join(sorted(known))}); give embedding tables, "
                "or upgrade fct-registry"
            )
    tables = [g.kind == "embeddings" for g in [side, *given.values()]]
    if any(tables) and not all(tables):
        named = [("--side-info", side), *((f"--version {n}", g) for n, g in given.items())]
        other = next(w for w, g in named if g.kind != "embeddings")
        raise ConfigError(
            f"{other} is not embedding tables while others are; a family given as tables is "
            "all tables (versions and side-info, rows aligned by id): give TRAIN,TEST tables "
            "for it too"
        )
    if data is not None:
        if all(tables):
            raise ConfigError(
                "--data describes images, but every version is given as embedding tables; "
                "drop --data"
            )
        raw["data"] = data_section(data)
    elif not all(tables):
        raise ConfigError(
            "give --data: versions trained here, the side-info extractor and evaluation read "
            "images (imagefolder:ROOT, fashion-mnist:ROOT, cifar100:ROOT or TRAIN,TEST)"
        )
    side_cfg: dict[str, Any] = {}
    if side.source is not None:
        side_cfg["source"] = side.source
        width = side.dim or dims.get("side_info")
        if width is None:
            raise ConfigError(
                f"--side-info {side.text}: give its width with --dim side_info=N (it is "
                "checked against the model at registration)"
            )
        side_cfg["dim"] = width
        if "side_info" in preprocess:
            side_cfg["preprocess"] = preprocess["side_info"]
    raw["side_info"] = side_cfg
    raw["versions"] = {}
    for n, g in given.items():
        cfg: dict[str, Any] = {}
        if g.source is not None:
            cfg["source"] = g.source
        width = g.dim or dims.get(str(n))
        if width is not None:
            cfg["embedding_dim"] = width
        elif g.source is not None:
            raise ConfigError(f"--version {n}={g.text}: give its embedding width with --dim {n}=N")
        if str(n) in preprocess:
            cfg["preprocess"] = preprocess[str(n)]
        raw["versions"][str(n)] = cfg
    raw["transformations"] = {
        name: {"from": a, "to": b, "kind": kind, **copy.deepcopy(TRANSFORMATION_DEFAULTS)}
        for name, a, b, kind in edges(list(given), no_side_info)
    }
    return parse_params(raw, "the generated params"), raw


_COMMENTS = {
    "family": "# The family's name in the registry (its versions are models:/<family>/N).",
    "data": "# Images: what versions trained here, the side-info extractor and evaluation read.",
    "side_info": (
        "# The side-info extractor stored beside every embedding. {} (no source): a small\n"
        "# SimCLR model trained here on the images; with `source`, one given from outside."
    ),
    "versions": (
        "# The versions a team shipped: each given by `source` (not trained here) with its\n"
        "# embedding width, or trained here from `data` with the default recipe."
    ),
    "transformations": (
        "# FCT transformations h(old, side_info) -> new: each consecutive pair and first -> last.\n"
        "# *_no_side_info twins read no side-info: what galleries indexed without it upgrade\n"
        "# through (`fct gallery add-side-info` adds it; docs/adopt.md)."
    ),
}


def render(raw: dict[str, Any], command: str) -> str:
    """The YAML text: a header naming the command, then each section under its comment."""
    lines = [
        "# fct-registry pipeline parameters, written by:",
        f"#   {command}",
        "# Validated when written and on every load (fct_registry/config/); edit freely.",
        "",
    ]
    for key, value in raw.items():
        if key in _COMMENTS:
            lines.append(_COMMENTS[key])
        if isinstance(value, dict) and value:  # block style, innermost mappings inline
            body = yaml.safe_dump(value, sort_keys=False, default_flow_style=None, width=95)
            lines.append(f"{key}:")
            lines += [f"  {line}" for line in body.rstrip().splitlines()]
        else:
            lines.append(yaml.safe_dump({key: value}, default_flow_style=False).rstrip())
        if key in ("device", "versions", "side_info", "data"):
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_params(text: str, out: Path, *, force: bool = False) -> None:
    """Write ``text`` to ``out`` (atomically); an existing file only with ``force``."""
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it, or --out ANOTHER.yaml")
    if out.exists() and out.is_dir():
        raise ConfigError(f"{out} is a folder; give a file name with --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.fct-tmp")
    tmp.write_text(text)
    tmp.replace(out)


def check_round_trip(text: str, params: Params) -> None:
    """What is written loads as the object it was built from (a bug here must not ship)."""
    again = parse_params(yaml.safe_load(text), "the written params")
    if again != params:
        raise ConfigError("internal: the written params do not load as built; report this")
