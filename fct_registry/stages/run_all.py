"""Every training and evaluation stage in one process, in ``dvc.yaml``'s order (notebooks, tests,
a quick GPU check); ``dvc repro`` remains the way to run them incrementally. No DVC stage runs
this module, so its imports widen no stage's deps."""

from __future__ import annotations

from fct_registry.config import Params
from fct_registry.layout import Layout
from fct_registry.stages.bct import bct_stage
from fct_registry.stages.evaluate import evaluate_stage
from fct_registry.stages.prepare import prepare_stage
from fct_registry.stages.side_info import side_info_stage
from fct_registry.stages.transformation import transformation_stage
from fct_registry.stages.version import version_stage


def train_all(params: Params, layout: Layout) -> None:
    """Every training stage (data, side-info, versions, BCT baselines, transformations)."""
    prepare_stage(params, layout)
    side_info_stage(params, layout)
    for version in params.versions:
        version_stage(params, layout, version)
    for name in params.bct:
        bct_stage(params, layout, name)
    for name in params.transformations:
        transformation_stage(params, layout, name)


def run_pipeline(params: Params, layout: Layout) -> dict:
    """Every training and evaluation stage in ``dvc.yaml``'s order, in this process (notebooks,
    tests, a quick GPU check); ``dvc repro`` remains the way to run it incrementally."""
    train_all(params, layout)
    return evaluate_stage(params, layout)
