"""The gate's measurements, from the registry, the resolver and the stored test embeddings.

For a candidate ``F@c`` and a baseline ``F@b`` (usually ``F@production``), on the held-out split
of ``dvc repro`` (leave-one-out, the way every registry number was measured):

* ``candidate``: candidate queries / candidate gallery;
* ``baseline``: baseline queries / baseline gallery (what users get today);
* ``upgraded``: candidate queries / baseline gallery upgraded through the chain the resolver
  picks (``resolve``, ``load_chain``, ``evaluate_chain``: the same code as ``fct resolve
  --evaluate``);
* ``raw``: candidate queries / baseline gallery as stored, i.e. shipping without a
  transformation (only when both embed to the same width).

Registry versions map to pipeline outputs through ``fct.pipeline_key``
(``CompatibilityGraph.stored_as``). Before trusting them, the gate checks that the stored model
folders hash to the registered versions' ``fct.content_hash``: a registry version retrained
since (same key, new weights) would otherwise be judged on another model's embeddings.

No production alias yet (the first release): without ``bootstrap`` that is an error; with it,
the baseline is the newest registered version older than the candidate, and if there is none
only rules that need no baseline are evaluated. The report says which happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry._redact import first_line
from fct_registry.config import GateRule
from fct_registry.data.prepared import load_prepared
from fct_registry.errors import FctError
from fct_registry.evaluation.retrieval import retrieval_scores
from fct_registry.gate.errors import GateError, GateInfrastructureError, StaleOutputsError
from fct_registry.gate.rules import CheckResult, Verdict, check_rules, verdict
from fct_registry.layout import Layout, load_embeddings, read_given
from fct_registry.models.io import SPEC_FILE, WEIGHTS_FILE
from fct_registry.models.io import load_model as load_hop
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.chains import load_chain
from fct_registry.registry.checksums import content_hash
from fct_registry.registry.given import given_digest
from fct_registry.registry.refs import VersionRef, parse_ref
from fct_registry.registry.store import redact_uri, resolve_tracking_uri, tracking_store
from fct_registry.resolver.chain import evaluate_chain
from fct_registry.resolver.errors import NoPathError, UnknownVersionError
from fct_registry.resolver.load import load_graph
from fct_registry.resolver.resolve import resolve

if TYPE_CHECKING:
    import torch

    from fct_registry.evaluation.retrieval import RetrievalScores
    from fct_registry.resolver.graph import CompatibilityGraph

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
"""``fct gate`` exit statuses: CI tells a failing model (1) from a broken run (2)."""


@dataclass
class GateResult:
    """Everything the gate measured and decided; ``report`` renders it, ``promote`` acts on it."""

    family: str
    candidate: int
    baseline: int | None  # None: bootstrapping with no older version to compare against
    candidate_ref: str  # as asked, e.g. "fashion@latest"
    baseline_ref: str
    verdict: Verdict
    scores: dict[str, dict[str, float] | None]  # case -> {"top1", "top5", "mAP"} (percent)
    checks: list[CheckResult]
    upgrade: dict[str, Any] | None  # the resolved chain, when there is one
    items: int  # held-out items
    distance: str
    tracking_uri: str | None  # redacted; None in the DVC stage's tracked reports
    bootstrap: bool  # True when the baseline alias was missing and --bootstrap chose one
    notes: list[str] = field(default_factory=list)
    seconds: float | None = 0.0  # None in the DVC stage's tracked reports
    promotion: dict[str, Any] | None = None  # filled in by ``promote``

    @property
    def passed(self) -> bool:
        return self.verdict != "fail"

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    @property
    def title(self) -> str:
        base = f"{self.family}@{self.baseline}" if self.baseline is not None else "no baseline"
        return f"{self.family}@{self.candidate} vs {base}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "candidate": {"version": self.candidate, "ref": self.candidate_ref},
            "baseline": {"version": self.baseline, "ref": self.baseline_ref},
            "verdict": self.verdict,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "bootstrap": self.bootstrap,
            "scores": self.scores,
            "checks": [c.as_dict() for c in self.checks],
            "upgrade": self.upgrade,
            "items": self.items,
            "distance": self.distance,
            "notes": list(self.notes),
            "promotion": self.promotion,
        } | {
            key: value
            for key, value in (("tracking_uri", self.tracking_uri), ("seconds", self.seconds))
            if value is not None
        }


def _load_graph(client: Any, family: str, safe_uri: str) -> CompatibilityGraph:

    try:
        return load_graph(client, family)
    except FctError:
        raise
    except Exception as exc:  # unreachable server, bad database URI, refused credentials
        first = first_line(exc)
        raise GateInfrastructureError(
            f"cannot read the registry at {safe_uri} ({redact_uri(first)[:300]}); start the "
            "tracking server or pass the right --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


# --- choosing the versions ----------------------------------------------------------------------


def as_ref(value: str | VersionRef, family: str | None = None) -> VersionRef:
    """A full reference (``fashion@3``, ``fashion/3``, ``models:/fashion/3``) as is; a bare
    selector (``3``, ``production``, ``latest``) within ``family``, the form ``params.yaml``'s
    ``gate:`` section uses."""
    if isinstance(value, VersionRef):
        return value
    if not any(mark in value for mark in "@/:") and family is not None:
        value = f"{family}@{value}"
    return parse_ref(value)


def choose_versions(
    graph: CompatibilityGraph, candidate: VersionRef, baseline: VersionRef, bootstrap: bool
) -> tuple[int, int | None, bool, list[str]]:
    """``(candidate, baseline or None, bootstrapped, notes)`` as registry version numbers."""

    cand = graph.version_of(candidate)
    notes: list[str] = []
    missing_alias = (
        baseline.alias is not None
        and not baseline.is_latest
        and baseline.alias not in graph.aliases
    )
    if not missing_alias:
        if bootstrap:
            notes.append(f"{baseline} exists, so --bootstrap had no effect")
        base = graph.version_of(baseline)
        if base > cand:
            raise GateError(
                f"candidate {candidate} (version {cand}) is older than baseline {baseline} "
                f"(version {base}); the gate checks upgrades. To roll back, move the alias "
                f"yourself: MlflowClient().set_registered_model_alias('{graph.family}', "
                f"'{baseline.alias or fct_tags.PRODUCTION_ALIAS}', '{cand}')"
            )
        return cand, base, False, notes
    if not bootstrap:
        known = ", ".join(sorted(graph.aliases)) or "none"
        raise UnknownVersionError(
            f"{graph.family} has no alias {baseline.alias!r} yet (aliases: {known}), so there is "
            f"no baseline to gate against. For the first release pass --bootstrap (compares "
            f"with the newest version older than the candidate, or with nothing if there is "
            f"none), or name a baseline version: --baseline {graph.family}@N"
        )
    older = [v for v in graph.nodes if v < cand]
    if older:
        base = max(older)
        notes.append(
            f"bootstrap: {baseline} does not exist yet; compared with the previous version "
            f"{graph.family}@{base} instead"
        )
        return cand, base, True, notes
    notes.append(
        f"bootstrap: {baseline} does not exist yet and {candidate} (version {cand}) is the "
        "oldest registered version; only rules that need no baseline were evaluated"
    )
    return cand, None, True, notes


# --- stored outputs ----------------------------------------------------------------------------


def verify_outputs(client: Any, model: str, version: int, folder: Path, what: str) -> str | None:
    """Check that ``folder`` (a pipeline output) holds the registered ``model/version``, by
    content hash; a note when it cannot be checked, :class:`StaleOutputsError` when it differs."""

    recorded = client.get_model_version(model, str(version)).tags.get(fct_tags.CONTENT_HASH)
    if not recorded:
        return (
            f"{model}/{version} has no {fct_tags.CONTENT_HASH} tag: could not check that "
            f"{folder} holds it"
        )
    given = read_given(folder)  # given as embedding tables: their sha256 are its content
    if given is not None:
        found = given_digest(given)
    elif not (folder / SPEC_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        return (
            f"{folder} has no model files: could not check that the stored {what} come "
            f"from {model}/{version}"
        )
    else:
        module, spec = load_hop(folder)
        found = content_hash([module], [spec])
    if found != recorded:
        raise StaleOutputsError(
            f"the stored {what} were computed by the model in {folder} (content hash "
            f"{found[:12]}…), but {model}/{version} is {recorded[:12]}…: that registry version "
            "comes from another pipeline run. Run the gate on that run's outputs (check out its "
            "commit and `dvc pull`/`dvc repro`, then pass --outputs), or gate against a version "
            "these outputs were registered as"
        )
    return None


def _embeddings(layout: Layout, key: int) -> torch.Tensor:

    return load_embeddings(layout.version_embeddings(key))["test"]


def _labels(layout: Layout) -> torch.Tensor:

    path = layout.data / "test.safetensors"
    if not path.is_file():
        raise StaleOutputsError(
            f"{path} not found; run the pipeline first (`dvc repro`) or pass "
            "--outputs pointing at its outputs folder"
        )
    return load_prepared(layout.data, "test").labels


def _score(
    query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor, distance: str, device: str
) -> RetrievalScores:

    # Query i and gallery i are the same test image: leave-one-out, like every registry number.
    return retrieval_scores(
        query, gallery, labels, labels, distance=distance, leave_one_out=True, device=device
    )


# --- the gate --------------------------------------------------------------------------------


def run_gate(
    candidate: str | VersionRef,
    baseline: str | VersionRef,
    rules: Mapping[str, GateRule],
    *,
    layout: Layout | None = None,
    tracking_uri: str | None = None,
    distance: str = "l2",
    device: str = "cpu",
    bootstrap: bool = False,
) -> GateResult:
    """Measure the candidate against the baseline and check ``rules``; read-only.

    ``tracking_uri``: default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
    working directory (as ``fct register``). ``layout``: the pipeline outputs holding the stored
    test embeddings (default ``outputs/``). Raises a ``FctError`` (exit 2) when it cannot judge.
    """

    start = time.perf_counter()
    cand_ref = as_ref(candidate)
    base_ref = as_ref(baseline, cand_ref.family)
    if cand_ref.family != base_ref.family:
        raise GateError(
            f"candidate {cand_ref} and baseline {base_ref} belong to different families; gate "
            f"versions of one family, e.g. --candidate {cand_ref.family}@latest --baseline "
            f"{cand_ref.family}@{fct_tags.PRODUCTION_ALIAS}"
        )
    layout = layout or Layout()
    uri = resolve_tracking_uri(tracking_uri)
    safe_uri = redact_uri(uri)
    with tracking_store(uri, read_only=True) as client:
        graph = _load_graph(client, cand_ref.family, safe_uri)
        cand, base, bootstrapped, notes = choose_versions(graph, cand_ref, base_ref, bootstrap)
        result = GateResult(
            family=graph.family,
            candidate=cand,
            baseline=base,
            candidate_ref=str(cand_ref),
            baseline_ref=str(base_ref),
            verdict="pass",
            scores={case: None for case in ("candidate", "baseline", "upgraded", "raw")},
            checks=[],
            upgrade=None,
            items=0,
            distance=distance,
            tracking_uri=safe_uri,
            bootstrap=bootstrapped,
            notes=notes,
        )
        if base == cand:
            result.verdict = "skip"
            result.notes.append(
                f"{cand_ref} is already {base_ref} (version {cand}): nothing to gate"
            )
        else:
            _measure(client, graph, result, layout, device)
            result.checks += check_rules(rules, result.scores)
            result.verdict = verdict(result.checks)
    result.seconds = time.perf_counter() - start
    return result


def _measure(
    client: Any, graph: CompatibilityGraph, result: GateResult, layout: Layout, device: str
) -> None:
    """Fill ``result.scores``, ``result.upgrade`` and the ``upgrade-path`` check."""

    family, cand, base, distance = graph.family, result.candidate, result.baseline, result.distance
    labels = _labels(layout)
    result.items = len(labels)
    check = _check_outputs(client, graph, layout, result)
    new = _embeddings(layout, graph.stored_as(cand))
    if base is None:
        result.scores["candidate"] = _score(new, new, labels, distance, device).as_dict()
        result.checks.append(
            CheckResult(
                "upgrade-path",
                "a registered chain upgrades the baseline gallery to the candidate",
                "skipped",
                reason="no baseline (bootstrap)",
            )
        )
        return
    old = _embeddings(layout, graph.stored_as(base))
    if old.shape[1] == new.shape[1]:
        result.scores["raw"] = _score(new, old, labels, distance, device).as_dict()
    else:
        result.notes.append(
            f"raw case not measured: {family}@{base} embeds to {old.shape[1]} dims and "
            f"{family}@{cand} to {new.shape[1]}, so the stored gallery cannot even be searched "
            "without a transformation"
        )
    path_text = "a registered chain upgrades the baseline gallery to the candidate"
    try:
        resolution = resolve(
            graph, VersionRef(family, version=base), VersionRef(family, version=cand)
        )
    except NoPathError as exc:
        result.scores["candidate"] = _score(new, new, labels, distance, device).as_dict()
        result.scores["baseline"] = _score(old, old, labels, distance, device).as_dict()
        result.checks.append(CheckResult("upgrade-path", path_text, "fail", reason=str(exc)))
        return
    chosen = resolution.chosen
    assert chosen is not None  # base != cand
    evaluation = _evaluate_chain(
        family, chosen, layout, graph, distance, device, lambda: check(resolution.side_info)
    )
    result.scores["candidate"] = evaluation.new_new.as_dict()
    result.scores["baseline"] = evaluation.old_old.as_dict()
    result.scores["upgraded"] = evaluation.cross.as_dict()
    model = resolution.model
    result.upgrade = {
        "path": list(chosen.path),
        "hops": list(chosen.hops),
        "uris": [f"models:/{model}/{h}" for h in chosen.hops],
        "side_info": resolution.side_info,
        "registry_top1": chosen.top1,
        "basis": chosen.basis(model),
        "decision": resolution.decision,
        "gap_closed_top1": evaluation.gap_closed_top1,
        "gap_closed_mAP": evaluation.gap_closed_mAP,
    }
    route = "->".join(map(str, chosen.path))
    hops = f"{chosen.n_hops} hop{'s' if chosen.n_hops > 1 else ''}"
    result.checks.append(
        CheckResult(
            "upgrade-path",
            path_text,
            "pass",
            reason=f"{route} ({hops}) through {', '.join(result.upgrade['uris'])}",
        )
    )


def _evaluate_chain(
    family: str,
    chosen: Any,
    layout: Layout,
    graph: CompatibilityGraph,
    distance: str,
    device: str,
    check_side_info: Callable[[], None],
) -> Any:
    """``load_chain`` + ``evaluate_chain``, the resolver's own measurement of a route."""

    loaded = load_chain(family, chosen.hops, chosen.path)
    if loaded.side_info_dim:  # the chain reads the stored side-info: it must be the gallery's
        check_side_info()
    return evaluate_chain(
        loaded,
        layout,
        distance=distance,
        device=device,
        stored_as=(graph.stored_as(chosen.source), graph.stored_as(chosen.target)),
    )


def _check_outputs(
    client: Any, graph: CompatibilityGraph, layout: Layout, result: GateResult
) -> Callable[[str | None], None]:
    """Verify the stored models of both versions now; return a checker for the side-info
    extractor the chosen chain reads (known only after resolving)."""
    for version in (result.candidate, result.baseline):
        if version is None:
            continue
        key = graph.stored_as(version)
        note = verify_outputs(
            client,
            graph.family,
            version,
            layout.version(key),
            f"test embeddings of {graph.family}@{version} ({layout.version_embeddings(key)})",
        )
        if note:
            result.notes.append(note)

    def side_info(extractor: str | None) -> None:
        if not extractor:
            return
        name, version = fct_tags.parse_model_ref(extractor)
        note = verify_outputs(
            client, name, version, layout.side_info, f"side-info ({layout.side_info_embeddings})"
        )
        if note:
            result.notes.append(note)

    return side_info
