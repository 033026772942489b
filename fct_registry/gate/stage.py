"""The DVC ``gate`` stage: run the gate at the end of the pipeline and write its reports.

The stage reports; it does not decide. It records the verdict (one more entry of the gate
history, a run of the family's experiment; ``fct.gate.*`` tags and the release row of the
candidate's page) but never promotes, and a failing verdict does not fail ``dvc repro`` (the
models are built and registered by then, and a failed stage would be rerun and leave no
report): the verdict is in ``outputs/gate/report.json`` (``dvc metrics show``), and CI acts on
``fct gate``'s exit status. A missing production alias is bootstrapped (compared with the
previous version) since nothing is promoted here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fct_registry.config import Params
from fct_registry.gate.promote import record_and_promote
from fct_registry.gate.report import format_table, write_reports
from fct_registry.gate.run import GateResult, run_gate
from fct_registry.layout import Layout

REPORT, JUNIT, SUMMARY = "report.json", "junit.xml", "summary.md"


def gate_dir(layout: Layout) -> Path:
    return layout.root / "gate"


def gate_stage(params: Params, layout: Layout, tracking_uri: str | None = None) -> GateResult:
    """``params.gate``'s candidate against its baseline; reports under ``outputs/gate/``."""
    result = run_gate(
        f"{params.family}@{params.gate.candidate}",
        f"{params.family}@{params.gate.baseline}",
        params.gate.rules,
        layout=layout,
        tracking_uri=tracking_uri,
        distance=params.evaluation.distance,
        bootstrap=True,
    )
    out = gate_dir(layout)
    # The reports are kept in git: no store URI, timing or history run id (they are written
    # before the verdict is recorded), so a rerun on an unchanged registry (the stage is
    # always_changed) rewrites the same bytes; each rerun still adds a history entry.
    tracked = replace(result, tracking_uri=None, seconds=None)
    write_reports(
        tracked, json_path=out / REPORT, junit_path=out / JUNIT, markdown_path=out / SUMMARY
    )
    print(format_table(result))
    record_and_promote(result, promote=False, tracking_uri=tracking_uri)
    return result
