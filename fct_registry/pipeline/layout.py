"""Where every pipeline output lives: one place, used by stages, registry and tests alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path("outputs")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def side_info(self) -> Path:
        return self.root / "side_info"

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

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    def version_embeddings(self, version: int) -> Path:
        return self.embeddings / f"v{version}.safetensors"

    def bct_embeddings(self, name: str) -> Path:
        return self.embeddings / f"bct-{name}.safetensors"

    @property
    def side_info_embeddings(self) -> Path:
        return self.embeddings / "side_info.safetensors"

    @property
    def evaluation(self) -> Path:
        return self.root / "eval"

    def history(self, stage: str) -> Path:
        """Per-epoch training metrics of a stage (``dvc plots``)."""
        return self.root / "history" / f"{stage}.csv"

    def checkpoint(self, stage: str) -> Path:
        # Not a DVC output: DVC deletes outputs before a stage runs, and resume needs these.
        return self.root / "checkpoints" / f"{stage}.pt"
