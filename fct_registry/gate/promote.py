"""Act on a gate result: record the verdict on the candidate version, move the alias on a pass.

Every judged run with ``--promote`` or ``--record`` (and every DVC ``gate`` stage run), failing
ones included, is recorded twice: as the candidate's *latest* verdict (``fct.gate.verdict``,
``fct.gate.report``, ``fct.gate.run``: schema in :mod:`fct_registry.registry.tags`), so its page
shows why it was or was not promoted, and as one more entry of the append-only history
(:mod:`fct_registry.gate.history`: a run of the family's experiment). The alias moves only when
every check passed, and only if it still points where it pointed when the gate measured: a gate
that raced another promotion refuses rather than overwrite a version it never compared against.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fct_registry.gate.errors import GateError
from fct_registry.gate.history import finish_record, start_record
from fct_registry.gate.report import finite
from fct_registry.gate.run import GateResult, as_ref
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.pages import refresh_descriptions
from fct_registry.registry.store import (
    default_artifact_location,
    resolve_tracking_uri,
    tracking_store,
)


def promotion_alias(baseline_ref: str) -> str:
    """The alias ``--promote`` moves: the baseline's own (``fashion@production`` ->
    ``production``). A numbered or ``latest`` baseline is refused: the gate must have compared
    the candidate with what the alias serves."""
    ref = as_ref(baseline_ref)
    if ref.alias is None or ref.is_latest:
        raise GateError(
            f"--promote moves the baseline's alias, but the baseline {ref} is not an alias; "
            f"gate against it: --baseline {ref.family}@{fct_tags.PRODUCTION_ALIAS}"
        )
    return ref.alias


def gate_tags(result: GateResult, at: datetime | None = None) -> dict[str, str]:
    """The candidate version's ``fct.gate.*`` tags: verdict and a compact JSON of the numbers."""
    summary = {
        "verdict": result.verdict,
        "candidate": result.candidate,
        "baseline": result.baseline,
        "baseline_ref": result.baseline_ref,
        "bootstrap": result.bootstrap,
        "upgrade_path": result.upgrade["path"] if result.upgrade else None,
        "upgrade_hops": result.upgrade["hops"] if result.upgrade else None,
        "scores": {
            case: {m: round(v, 4) for m, v in s.items()}
            for case, s in result.scores.items()
            if s is not None
        },
        "checks": {
            c.name: {"status": c.status, "measured": c.measured, "bound": c.bound}
            for c in result.checks
        },
        "distance": result.distance,
        "items": result.items,
        "at": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    report = json.dumps(finite(summary), sort_keys=True, separators=(",", ":"))
    return {fct_tags.GATE_VERDICT: result.verdict, fct_tags.GATE_REPORT: report}


def record_and_promote(
    result: GateResult, *, promote: bool, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Record the verdict (history run + the candidate's tags); with ``promote`` and a pass,
    move the alias.

    Returns (and stores in ``result.promotion``) what happened, with a readable ``message`` and
    the history ``run`` id.
    """

    family, cand = result.family, result.candidate
    alias = promotion_alias(result.baseline_ref) if promote else None
    outcome: dict[str, Any] = {
        "moved": False,
        "alias": alias,
        "tagged": False,
        "from": None,
        "to": None,
    }
    if result.verdict == "skip":
        why = result.notes[-1] if result.notes else "nothing to gate"
        outcome["message"] = f"nothing recorded or promoted: {why}"
        result.promotion = outcome
        return outcome
    uri = resolve_tracking_uri(tracking_uri)
    at = datetime.now(UTC)
    with tracking_store(uri) as client:
        run_id = start_record(
            client, result, at=at, artifact_location=default_artifact_location(uri, family)
        )
        outcome["run"] = run_id
        broke_off = True
        try:
            for key, value in (gate_tags(result, at) | {fct_tags.GATE_RUN: run_id}).items():
                client.set_model_version_tag(family, str(cand), key, value)
            outcome["tagged"] = True
            try:
                _decide(client, result, alias, outcome)
            except GateError as exc:  # a raced promotion: the verdict stands, nothing moved
                outcome["message"] = f"not promoted: {exc}"
                broke_off = False
                raise
            broke_off = False
        finally:
            result.promotion = outcome
            try:
                finish_record(client, run_id, result, failed=broke_off)
            finally:  # the verdict (and any promotion) shows on the version pages
                refresh_descriptions(client, family)
    return outcome


def _decide(client: Any, result: GateResult, alias: str | None, outcome: dict[str, Any]) -> None:
    """Fill ``outcome``; move ``alias`` to the candidate only when the gate passed and the
    alias still points at the version the gate compared with."""
    family, cand = result.family, result.candidate
    if alias is None:
        outcome["message"] = f"recorded verdict {result.verdict!r} on {family}@{cand}"
    else:
        current = _alias_version(client, family, alias)
        outcome["from"] = current
        if not result.passed:
            where = f"stays at version {current}" if current is not None else "stays unset"
            outcome["message"] = (
                f"not promoted: the gate failed; {family}@{alias} {where} "
                f"(verdict recorded on {family}@{cand})"
            )
        elif current != result.baseline and not (result.bootstrap and current is None):
            raise GateError(
                f"{family}@{alias} moved to version {current} while the gate compared "
                f"{family}@{cand} with version {result.baseline}; rerun the gate against "
                f"the current {family}@{alias}"
            )
        else:
            client.set_registered_model_alias(family, alias, str(cand))
            outcome.update(
                moved=True,
                to=cand,
                message=(
                    f"{family}@{alias} moved from "
                    f"{'version ' + str(current) if current is not None else 'nothing'} to "
                    f"version {cand}"
                ),
            )


def _alias_version(client: Any, family: str, alias: str) -> int | None:
    aliases = client.get_registered_model(family).aliases or {}
    value = aliases.get(alias)
    return int(value) if value is not None else None
