"""The release gate: may candidate ``F@c`` replace baseline ``F@production``?

``rules`` (pure checks over measured numbers), ``run`` (the whole gate run: measurements from
the registry, the resolver and the stored test embeddings), ``report`` (table, JSON, JUnit XML,
markdown), ``promote`` (verdict tags, alias move), ``history`` (one MLflow run per recorded
evaluation, read back newest first). ``fct gate`` and the DVC ``gate`` stage are thin shells over
:func:`run_gate`.
"""

from fct_registry.gate.errors import GateError, GateInfrastructureError, StaleOutputsError
from fct_registry.gate.history import GateRecord, gate_history
from fct_registry.gate.promote import gate_tags, promotion_alias, record_and_promote
from fct_registry.gate.report import format_table, junit_xml, markdown, to_json, write_reports
from fct_registry.gate.rules import CASES, CheckResult, check_rule, check_rules, describe, verdict
from fct_registry.gate.run import (
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_PASS,
    GateResult,
    choose_versions,
    run_gate,
)
from fct_registry.gate.stage import gate_stage

__all__ = [
    "CASES",
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_PASS",
    "CheckResult",
    "GateError",
    "GateInfrastructureError",
    "GateRecord",
    "GateResult",
    "StaleOutputsError",
    "check_rule",
    "check_rules",
    "choose_versions",
    "describe",
    "format_table",
    "gate_history",
    "gate_stage",
    "gate_tags",
    "junit_xml",
    "markdown",
    "promotion_alias",
    "record_and_promote",
    "run_gate",
    "to_json",
    "verdict",
    "write_reports",
]
