"""The release gate's history: one MLflow run per recorded gate evaluation, append-only.

The ``fct.gate.*`` tags on a version hold its *latest* verdict, and the next gate run overwrites
them. The history keeps every one: each gate run that records a verdict (``fct gate --record`` /
``--promote``, the DVC ``gate`` stage) is a run of the family's experiment ``fct-<family>``
(where registration logs its runs), tagged ``fct.role=gate``:

* tags (searchable, e.g. ``tags.`fct.gate.verdict` = 'fail'``): verdict, candidate and baseline
  version numbers, whether this run moved the alias, and what happened to it in words;
* params: how the gate was asked (references, distance, bootstrap, the chain it used) and each
  check's status, ``check.<name>.status``, with the check names in report order (``checks``);
* metrics: each check's ``check.<name>.measured`` / ``.bound`` / ``.margin`` and every score
  ``score.<case>.<metric>`` (percent);
* the JSON report as the artifact ``gate/report.json``, the markdown summary as the run's
  description; the run's start time is when the gate recorded (UTC).

:func:`gate_history` reads it back, newest first, with ``search_runs``; the compatibility page
shows it. Nothing here touches tracked files, so the DVC stage's reports stay byte-identical.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fct_registry._redact import first_line
from fct_registry.errors import FctError
from fct_registry.gate.errors import GateInfrastructureError
from fct_registry.gate.report import markdown, to_json
from fct_registry.gate.run import GateResult
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.experiment import family_experiment
from fct_registry.registry.store import redact_uri, resolve_tracking_uri, tracking_store

HISTORY_LIMIT = 50  # entries the page shows
REPORT_ARTIFACT = "gate/report.json"
CHECKS_PARAM = "checks"  # JSON list of check names, in report order
_NOTE = "mlflow.note.content"  # MLflow's run description

log = logging.getLogger(__name__)


def history_filter() -> str:
    """The ``search_runs`` filter selecting gate runs (the experiment also holds registrations)."""
    return f"tags.`{fct_tags.ROLE}` = '{fct_tags.ROLE_GATE}'"


@dataclass(frozen=True)
class CheckRecord:
    name: str
    status: str  # pass | fail | skipped
    measured: float | None
    bound: float | None


@dataclass(frozen=True)
class GateRecord:
    """One history entry, as read back from its run."""

    run_id: str
    experiment_id: str
    at: datetime  # UTC
    candidate: int
    baseline: int | None
    verdict: str  # pass | fail
    promoted: bool
    promotion: str  # what happened to the alias, in words
    checks: tuple[CheckRecord, ...]
    status: str  # the MLflow run status: FINISHED, or RUNNING/FAILED for an interrupted record

    @property
    def passed(self) -> int:
        return sum(c.status == "pass" for c in self.checks)

    @property
    def failed(self) -> int:
        return sum(c.status == "fail" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "version": self.candidate,
            "baseline": self.baseline,
            "verdict": self.verdict,
            "promoted": self.promoted,
            "promotion": self.promotion,
            "passed": self.passed,
            "failed": self.failed,
            "checks": [c.__dict__ for c in self.checks],
            "status": self.status,
        }


# --- writing -------------------------------------------------------------------------------------


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def start_record(
    client: Any, result: GateResult, *, at: datetime, artifact_location: str | None = None
) -> str:
    """Open the history run of ``result`` (verdict, checks, scores); returns its id. The
    promotion is not known yet: :func:`finish_record` adds it and closes the run."""
    from mlflow.entities import Metric, Param

    experiment = family_experiment(client, result.family, artifact_location)
    base = "" if result.baseline is None else str(result.baseline)
    run = client.create_run(
        experiment,
        start_time=_ms(at),
        run_name=f"gate-{result.family}@{result.candidate}-vs-{base or 'none'}",
        tags={
            fct_tags.ROLE: fct_tags.ROLE_GATE,
            fct_tags.FAMILY: result.family,
            fct_tags.GATE_VERDICT: result.verdict,
            fct_tags.GATE_CANDIDATE: str(result.candidate),
            fct_tags.GATE_BASELINE: base,
            fct_tags.GATE_PROMOTED: "false",
        },
    )
    run_id = run.info.run_id
    params = {
        "candidate_ref": result.candidate_ref,
        "baseline_ref": result.baseline_ref,
        "distance": result.distance,
        "items": str(result.items),
        "bootstrap": str(result.bootstrap).lower(),
        "upgrade_path": "->".join(map(str, result.upgrade["path"])) if result.upgrade else "",
        CHECKS_PARAM: json.dumps([c.name for c in result.checks]),
        **{f"check.{c.name}.status": c.status for c in result.checks},
    }
    numbers = {
        f"check.{c.name}.{what}": value
        for c in result.checks
        for what, value in (("measured", c.measured), ("bound", c.bound), ("margin", c.margin))
        if c.bound is not None and _finite(value)
    } | {
        f"score.{case}.{metric}": value
        for case, scores in result.scores.items()
        for metric, value in (scores or {}).items()
        if _finite(value)
    }
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), _ms(at), 0) for k, v in numbers.items()],
            params=[Param(k[:250], v[:6000]) for k, v in params.items()],
        )
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    return run_id


def finish_record(client: Any, run_id: str, result: GateResult, *, failed: bool = False) -> None:
    """Add what happened to the alias (``result.promotion``), the markdown summary and the JSON
    report; close the run (``FAILED`` when recording broke off)."""
    from mlflow.entities import RunTag

    outcome = result.promotion or {}
    try:
        client.log_batch(
            run_id,
            tags=[
                RunTag(fct_tags.GATE_PROMOTED, str(bool(outcome.get("moved"))).lower()),
                RunTag(fct_tags.GATE_PROMOTION, str(outcome.get("message", ""))[:5000]),
                RunTag(_NOTE, markdown(result)),
            ],
        )
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    try:
        client.log_text(run_id, to_json(result), REPORT_ARTIFACT)
    except Exception as exc:  # the entry is complete without it; an alias may have moved
        log.warning(
            "gate run %s recorded, but its report could not be uploaded to the artifact store "
            "(%s); the run's tags, params and metrics hold the verdict",
            run_id,
            first_line(exc),
        )
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


# --- reading -------------------------------------------------------------------------------------


def gate_history(client: Any, family: str, limit: int = HISTORY_LIMIT) -> list[GateRecord]:
    """The last ``limit`` recorded gate runs of ``family``, newest first (none if the family's
    experiment does not exist)."""
    experiment = client.get_experiment_by_name(fct_tags.experiment_name(family))
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=history_filter(),
        max_results=limit,
        order_by=["attributes.start_time DESC"],
    )
    return [record_from_run(run) for run in runs]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def record_from_run(run: Any) -> GateRecord:
    """A :class:`GateRecord` from a gate run's tags, params and metrics."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    try:
        names = [str(n) for n in json.loads(params.get(CHECKS_PARAM, "[]"))]
    except ValueError:
        names = []
    checks = tuple(
        CheckRecord(
            name,
            params.get(f"check.{name}.status", "?"),
            metrics.get(f"check.{name}.measured"),
            metrics.get(f"check.{name}.bound"),
        )
        for name in names
    )
    return GateRecord(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        at=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        candidate=_int(tags.get(fct_tags.GATE_CANDIDATE)) or 0,
        baseline=_int(tags.get(fct_tags.GATE_BASELINE)),
        verdict=tags.get(fct_tags.GATE_VERDICT, "?"),
        promoted=tags.get(fct_tags.GATE_PROMOTED) == "true",
        promotion=tags.get(fct_tags.GATE_PROMOTION, ""),
        checks=checks,
        status=run.info.status,
    )


def read_history(
    family: str, limit: int = HISTORY_LIMIT, tracking_uri: str | None = None
) -> list[GateRecord]:
    """:func:`gate_history` on the resolved store (read-only), for ``fct gate --history``."""
    uri = resolve_tracking_uri(tracking_uri)
    with tracking_store(uri, read_only=True) as client:
        try:
            return gate_history(client, family, limit)
        except FctError:
            raise
        except Exception as exc:  # unreachable server, refused credentials
            first = first_line(exc)
            raise GateInfrastructureError(
                f"cannot read the gate history at {redact_uri(uri)} ({redact_uri(first)[:300]}); "
                "start the tracking server or pass the right --tracking-uri / MLFLOW_TRACKING_URI"
            ) from None


def format_history(family: str, records: list[GateRecord]) -> str:
    """The history as a text table, newest first (``fct gate --history``)."""
    if not records:
        return (
            f"no gate run recorded for {family} yet (`fct gate --record` or `--promote`, or the "
            "DVC gate stage, records one)"
        )
    head = ["when (UTC)", "candidate", "baseline", "verdict", "passed", "failed", "alias", "run"]
    rows = [
        [
            r.at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{family}@{r.candidate}",
            "—" if r.baseline is None else f"@{r.baseline}",
            r.verdict + ("" if r.status == "FINISHED" else f" ({r.status.lower()})"),
            str(r.passed),
            str(r.failed),
            "promoted" if r.promoted else "-",
            r.run_id,
        ]
        for r in records
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *rows]
    ]
    return "\n".join(
        [
            f"gate history of {family}, newest first: {len(records)} recorded "
            f"{'run' if len(records) == 1 else 'runs'} of experiment "
            f"{fct_tags.experiment_name(family)}",
            *lines,
        ]
    )
