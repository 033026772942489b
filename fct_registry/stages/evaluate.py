"""DVC stage ``evaluate``: every compatibility case on the held-out split, with paired-bootstrap
intervals for the protocol's claims; metrics, tables and plots."""

from __future__ import annotations

from fct_registry.config import Params
from fct_registry.data.splits import split_labels
from fct_registry.evaluation.compatibility import Edge, compatibility_cases
from fct_registry.evaluation.forest_plot import plot_intervals
from fct_registry.evaluation.report import markdown_table, matrix_rows, plot_matrix
from fct_registry.evaluation.uncertainty import uncertainty_report
from fct_registry.layout import Layout, load_embeddings
from fct_registry.models.io import load_model
from fct_registry.models.transformations import uses_side_info
from fct_registry.stages.fingerprint import write_json


def evaluate_stage(params: Params, layout: Layout) -> dict:
    """Score every compatibility case on the test split (every seed of every transformation),
    with paired-bootstrap intervals for the protocol's claims; write metrics, tables, plots."""
    labels = split_labels(layout.data, "test", params.data)
    versions = {v: load_embeddings(layout.version_embeddings(v))["test"] for v in params.versions}
    side_info = load_embeddings(layout.side_info_embeddings)["test"]
    edges = []
    for name, cfg in params.transformations.items():
        modules = [load_model(layout.transformation(name, i))[0] for i in range(cfg.seeds)]
        edges.append(
            Edge(
                name,
                cfg.source,
                cfg.target,
                uses_side_info(cfg.kind),
                modules[0],
                tuple(modules[1:]),
                cfg.kind,
            )
        )
    bct = {
        name: (b.old, b.new, load_embeddings(layout.bct_embeddings(name))["test"])
        for name, b in params.bct.items()
    }
    outcomes: dict = {}
    report = compatibility_cases(
        labels,
        versions,
        side_info,
        edges,
        bct,
        distance=params.evaluation.distance,
        outcomes=outcomes,
    )
    uncertainty = uncertainty_report(
        report,
        outcomes,
        {name: b.kind for name, b in params.bct.items()},
        resamples=params.evaluation.bootstrap_resamples,
        seed=params.seed,
    )
    out = layout.evaluation
    write_json(out / "metrics.json", report)
    write_json(out / "uncertainty.json", uncertainty)
    write_json(out / "matrix.json", matrix_rows(report))
    (out / "compatibility.md").write_text(markdown_table(report, params.family))
    plot_matrix(report, params.family, out / "compatibility.png")
    plot_intervals(uncertainty, out / "intervals.png")
    return report
