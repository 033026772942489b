"""Stages ``train@N`` and ``side_info`` with a model given from outside (``source:``): imported
in place of training, into the outputs a trained model would have. Apart from
:mod:`.trained` so that ``bct@NAME``, which never imports, does not depend on the importers."""

from __future__ import annotations

from pathlib import Path

from fct_registry.config import ModelSource, Params, PreprocessConfig
from fct_registry.stages.dvc_deps import check_model_files_listed
from fct_registry.stages.sources import ModelContext, build_given, save_given
from fct_registry.stages.trained import ImageOutputs
from fct_registry.training.distributed import context


def import_given(
    out: ImageOutputs,
    params: Params,
    source: ModelSource,
    preprocess: PreprocessConfig | None,
    *,
    role: str,
    where: str,
    width: int,
) -> None:
    """Import the model ``source`` names into ``out``; rank 0 imports, other torchrun ranks do
    nothing. ``role``: embedding or side_info; ``where``: its params section, for errors."""
    if not context().is_main:
        return
    stage = "train" if role == "embedding" else "side_info"
    check_model_files_listed(stage, source.local_files(Path(".")), Path("dvc.yaml"))
    given = build_given(
        source,
        layout=out.layout,
        where=where,
        field="embedding_dim" if role == "embedding" else "dim",
        width=width,
        context=ModelContext(source, params, preprocess, role, Path(".")),
    )
    save_given(given, out.folder, out.embeddings, out.history)
