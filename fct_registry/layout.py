"""Where every pipeline output lives, and the format of its stored embeddings.

One place, used by the stages, the registry, the resolver, the gate and tests alike; it sits in
the base layer so that none of them has to import the pipeline to find a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry.errors import DataError

if TYPE_CHECKING:
    import torch


def _under(*parts: str) -> Any:
    """A fixed path under the layout's root, read as an attribute (``layout.data``)."""
    return property(lambda layout: layout.root.joinpath(*parts))


@dataclass(frozen=True)
class Layout:
    root: Path = Path("outputs")

    data = _under("data")

    side_info = _under("side_info")

    def version(self, version: int) -> Path:
        return self.root / "models" / f"v{version}"

    def bct(self, name: str) -> Path:
        return self.root / "bct" / name

    def transformation(self, name: str, seed_index: int = 0) -> Path:
        """Seed 0 is the registered model; further seeds (uncertainty only) live apart."""
        if seed_index == 0:
            return self.root / "transformations" / name
        return self.root / "transformation_seeds" / name / f"seed-{seed_index}"

    def transformation_seeds(self, name: str) -> Path:
        return self.root / "transformation_seeds" / name

    backfill = _under("backfill")  # the backfill stage's report: metrics.json, curves.csv

    # The backfill stage's uncertainty-aware transformation (its first seed), which the register
    # stage registers; only a ``DISABLED`` note while the stage is off.
    backfill_transformation = _under("backfill_transformation")

    embeddings = _under("embeddings")

    def version_embeddings(self, version: int) -> Path:
        return self.embeddings / f"v{version}.safetensors"

    def bct_embeddings(self, name: str) -> Path:
        return self.embeddings / f"bct-{name}.safetensors"

    side_info_embeddings = _under("embeddings", "side_info.safetensors")

    evaluation = _under("eval")

    def history(self, stage: str) -> Path:
        """Per-epoch training metrics of a stage (``dvc plots``)."""
        return self.root / "history" / f"{stage}.csv"

    def checkpoint(self, stage: str) -> Path:
        # Not a DVC output: DVC deletes outputs before a stage runs, and resume needs these.
        return self.root / "checkpoints" / f"{stage}.pt"


# safetensors.torch imports torch: loaded on first use, so that importing Layout stays light.
def save_embeddings(path: Path, train: torch.Tensor, test: torch.Tensor) -> None:
    """Write a version's ``train``/``test`` embeddings (the format every stage reads back)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"train": train.contiguous(), "test": test.contiguous()}, str(path))


def load_embeddings(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.exists():
        raise DataError(f"{path} not found; run the stage that produces it (`dvc repro`)")
    return load_file(str(path))


# A model given from outside (``source:`` in params) has no weights: its folder holds this record
# (source kind, width, and each split's table URI and sha256), registered as its lineage.
SOURCE_FILE = "source.json"


def write_given(folder: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as the model folder's ``source.json`` (the folder holds nothing else)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SOURCE_FILE
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


# The weights file of a model folder (``fct_registry.models.io.WEIGHTS_FILE``, a layer above).
_WEIGHTS_FILE = "model.safetensors"


def read_source(folder: Path) -> dict[str, Any] | None:
    """The model folder's ``source.json`` (any model given from outside), or ``None``."""
    path = Path(folder) / SOURCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_given(folder: Path) -> dict[str, Any] | None:
    """The ``source.json`` of a model given as embeddings (no weights: nothing to run), or
    ``None`` for a model with weights, trained here or external (``source: {onnx: ...}``)."""
    if (Path(folder) / _WEIGHTS_FILE).is_file():
        return None
    return read_source(folder)
