"""The path search against a brute-force oracle, and every documented rule and error."""

from __future__ import annotations

import json
import math
import random

import pytest

from fct_registry.registry import tags as fct_tags
from fct_registry.registry.refs import parse_ref
from fct_registry.resolver import (
    BackwardRequestError,
    CompatibilityGraph,
    NoPathError,
    ResolverError,
    SideInfoMismatchError,
    UnknownVersionError,
    UnmeasuredError,
    resolve,
)
from fct_registry.resolver.search import TIE_DECIMALS
from tests.resolver.records import (
    FAMILY,
    OTHER_SIDE,
    SIDE,
    Record,
    chain,
    default_family,
    emb,
    side,
    tr,
)


def graph_of(records: list[Record], aliases: dict[str, int] | None = None) -> CompatibilityGraph:
    return CompatibilityGraph.from_records(FAMILY, records, aliases)


def run(records: list[Record], src: str, dst: str, **kw: object):
    return resolve(graph_of(records), parse_ref(src), parse_ref(dst), **kw)


# --- the oracle ---------------------------------------------------------------------------------


def oracle_routes(graph: CompatibilityGraph, src: int, dst: int, side_info: str | None) -> list:
    """Every route, by plain enumeration of segment sequences, with its key; slow and obvious."""
    segments = [e for e in (*graph.edges, *graph.chains) if e.side_info in (None, side_info)]
    patterns = [c.hops for c in graph.chains]
    out = []

    def joins_recorded_chain(path: list) -> bool:
        for i in range(len(path)):
            for p in patterns:
                window = path[i : i + len(p)]
                singles = len(window) == len(p) and all(not s.is_chain for s in window)
                if singles and tuple(s.model_version for s in window) == p:
                    return True
        return False

    def extend(path: list, at: int, seen: set[int]) -> None:
        if at == dst and path:
            if not joins_recorded_chain(path):
                cost = 0.0
                for s in path:
                    cost += -math.log(max(s.top1, 1e-9) / 100.0)
                hops = tuple(h for s in path for h in s.hops)
                key = (round(cost, TIE_DECIMALS), len(hops), len(path), hops)
                out.append((key, path))
            return
        for s in segments:
            if s.source == at and s.target not in seen:
                extend([*path, s], s.target, seen | {s.target})

    extend([], src, {src})
    return sorted(out, key=lambda r: r[0])


def random_dag(rng: random.Random) -> list[Record]:
    n = rng.randint(2, 7)
    records: list[Record] = [emb(v) for v in range(1, n + 1)]
    singles: list[tuple[int, int, int, str | None]] = []
    version = 0
    for _ in range(rng.randint(n, 4 * n)):
        a, b = sorted(rng.sample(range(1, n + 1), 2))
        version += 1
        # Few distinct scores, so ties (equal products, 100% hops costing 0) are common.
        top1 = rng.choice([60.0, 72.0, 80.0, 90.0, 100.0, 100.0])
        extractor = rng.choice([SIDE, SIDE, SIDE, OTHER_SIDE, None])
        kind = "fct" if extractor else "fct-no-side-info"
        records.append(tr(version, a, b, top1, side_info=extractor, kind=kind))
        singles.append((version, a, b, extractor))
    for _ in range(rng.randint(0, 3)):  # recorded chains along existing single hops
        first = rng.choice(singles)
        hops, at, reads = [first], first[2], {first[3]} - {None}
        for _ in range(rng.randint(1, 2)):
            nxt = [s for s in singles if s[1] == at and not ({s[3]} - {None}) - reads]
            if not nxt:
                break
            step = rng.choice(nxt)
            hops.append(step)
            at = step[2]
            reads |= {step[3]} - {None}
        if len(hops) < 2:
            continue
        version += 1
        top1 = rng.choice([40.0, 72.0, 81.0, 95.0, 100.0])
        reads_one = next(iter(reads), None)
        records.append(
            chain(version, [h[0] for h in hops], first[1], at, top1, side_info=reads_one)
        )
    return records


@pytest.mark.parametrize("seed", range(300))
def test_matches_brute_force_on_random_dags(seed: int) -> None:
    rng = random.Random(seed)
    records = random_dag(rng)
    graph = graph_of(records)
    versions = list(graph.nodes)
    src, dst = sorted(rng.sample(versions, 2))
    extractor = rng.choice([SIDE, SIDE, SIDE, OTHER_SIDE])
    expected = oracle_routes(graph, src, dst, extractor)
    ref = (parse_ref(f"{FAMILY}@{src}"), parse_ref(f"{FAMILY}@{dst}"))
    if not expected:
        with pytest.raises(NoPathError):
            resolve(graph, *ref, side_info=extractor)
        return
    got = resolve(graph, *ref, side_info=extractor)
    assert got.chosen is not None
    assert got.chosen.key == expected[0][0]
    assert got.chosen.segments == tuple(expected[0][1])
    # Alternatives: the best route ending with each other last segment.
    best_by_last: dict[int, tuple] = {}
    for key, path in expected:
        best_by_last.setdefault(path[-1].model_version, key)
    routes = [got.chosen, *got.alternatives]
    assert {r.segments[-1].model_version: r.key for r in routes} == best_by_last
    # Never mixes extractors: every hop reads the gallery's extractor or none.
    assert all(s.side_info in (None, extractor) for r in routes for s in r.steps)


@pytest.mark.parametrize("seed", range(60))
def test_matches_brute_force_with_backward_edges(seed: int) -> None:
    """Cycles (backward transformations) but no recorded chains: Dijkstra stays exact."""
    rng = random.Random(1000 + seed)
    n = rng.randint(3, 6)
    records: list[Record] = [emb(v) for v in range(1, n + 1)]
    for version in range(1, rng.randint(3, 3 * n)):
        a, b = rng.sample(range(1, n + 1), 2)
        records.append(tr(version, a, b, rng.choice([55.0, 70.0, 80.0, 90.0])))
    graph = graph_of(records)
    src, dst = rng.sample(range(1, n + 1), 2)
    expected = oracle_routes(graph, src, dst, SIDE)
    ref = (parse_ref(f"{FAMILY}@{src}"), parse_ref(f"{FAMILY}@{dst}"))
    if not expected:
        with pytest.raises(NoPathError):
            resolve(graph, *ref)
        return
    got = resolve(graph, *ref)
    assert got.chosen is not None and got.chosen.key == expected[0][0]


# --- the choice rules ---------------------------------------------------------------------------


def test_direct_edge_wins_when_it_measured_better_than_the_estimate() -> None:
    got = run(default_family(direct=78.0, first=90.0, second=85.0), "fashion@1", "fashion@3")
    assert got.chosen is not None
    assert got.chosen.hops == (3,) and got.chosen.measured
    two_hop = got.alternatives[0]
    assert two_hop.hops == (1, 2) and not two_hop.measured
    assert two_hop.top1 == pytest.approx(90.0 * 85.0 / 100)
    assert "beats" in got.decision


def test_two_hop_estimate_wins_when_the_direct_edge_is_poor() -> None:
    got = run(default_family(direct=60.0, first=90.0, second=88.0), "fashion@1", "fashion@3")
    assert got.chosen is not None and got.chosen.hops == (1, 2)
    assert got.chosen.path == (1, 2, 3)
    assert "estimated" in got.chosen.basis(got.model)


@pytest.mark.parametrize("measured", [70.0, 85.0])
def test_a_recorded_chain_supersedes_the_estimate_of_its_hops(measured: float) -> None:
    # Estimate of 1->2->3 alone: 79.2%. The measurement replaces it, higher or lower.
    records = [*default_family(direct=75.0), chain(9, [1, 2], 1, 3, measured)]
    got = run(records, "fashion@1", "fashion@3")
    assert got.chosen is not None
    routes = [got.chosen, *got.alternatives]
    joined = [r for r in routes if r.hops == (1, 2)]
    assert len(joined) == 1 and joined[0].recorded_chain is not None
    assert joined[0].top1 == measured
    assert got.chosen.hops == ((1, 2) if measured > 75.0 else (3,))


def test_tie_goes_to_fewer_hops() -> None:
    records = [*default_family(direct=80.0), chain(9, [1, 2], 1, 3, 80.0)]
    got = run(records, "fashion@1", "fashion@3")
    assert got.chosen is not None and got.chosen.hops == (3,)
    assert got.alternatives[0].hops == (1, 2) and got.alternatives[0].top1 == 80.0
    assert "fewer hops (1 vs 2)" in got.decision


def test_tie_between_an_edge_and_an_equal_product_goes_to_fewer_hops() -> None:
    got = run(default_family(direct=72.0, first=90.0, second=80.0), "fashion@1", "fashion@3")
    assert got.chosen is not None and got.chosen.hops == (3,)


def test_fewer_hops_wins_a_tie_at_an_intermediate_version() -> None:
    # 1->2 directly or through 4 (all 100%), then 2->3: the tie at 2 is decided by hops.
    records = [emb(v) for v in (1, 2, 3, 4)] + [
        tr(1, 1, 4, 100.0),
        tr(2, 4, 2, 100.0),
        tr(3, 1, 2, 100.0),
        tr(4, 2, 3, 90.0),
    ]
    got = run(records, "fashion@1", "fashion@3")
    assert got.chosen is not None and got.chosen.hops == (3, 4)


def test_side_info_is_never_mixed_even_when_mixing_scores_higher() -> None:
    records = [
        emb(1),
        emb(2),
        emb(3),
        tr(1, 1, 2, 99.0, side_info=SIDE),
        tr(2, 2, 3, 99.0, side_info=OTHER_SIDE),
        tr(3, 1, 3, 50.0, side_info=SIDE),
    ]
    got = run(records, "fashion@1", "fashion@3")
    assert got.chosen is not None and got.chosen.hops == (3,)
    assert all(s.side_info == SIDE for r in (got.chosen, *got.alternatives) for s in r.steps)
    with pytest.raises(NoPathError, match=r"reachable from fashion@1: 2") as info:
        run(records[:-1], "fashion@1", "fashion@3")
    assert not isinstance(info.value, SideInfoMismatchError)


def test_side_info_mismatch_names_both_extractors_and_the_fix() -> None:
    records = [emb(1), emb(2), tr(1, 1, 2, 90.0, side_info=OTHER_SIDE)]
    with pytest.raises(SideInfoMismatchError) as info:
        run(records, "fashion@1", "fashion@2")
    message = str(info.value)
    assert "side-info mismatch" in message
    assert SIDE in message and OTHER_SIDE in message and f"--side-info {OTHER_SIDE}" in message
    # The override says the gallery was indexed with the other extractor.
    got = run(records, "fashion@1", "fashion@2", side_info=OTHER_SIDE)
    assert got.chosen is not None and got.side_info == OTHER_SIDE


def test_edges_without_side_info_fit_any_gallery() -> None:
    records = [emb(1, side_info=None), emb(2), tr(1, 1, 2, 70.0, None, "fct-no-side-info")]
    got = run(records, "fashion@1", "fashion@2")
    assert got.chosen is not None and got.chosen.hops == (1,) and got.side_info is None
    got = run(records, "fashion@1", "fashion@2", side_info=OTHER_SIDE)
    assert got.chosen is not None and got.chosen.hops == (1,)


def test_aliases_and_latest() -> None:
    graph = graph_of(default_family(), aliases={"production": 3, "staging": 2})
    got = resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@production"))
    assert (got.source, got.target) == (1, 3)
    got = resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@latest"))
    assert got.target == 3
    assert graph.nodes[2].aliases == ("staging",)
    with pytest.raises(
        UnknownVersionError,
        match=r"no alias 'prod'; known aliases: production, "
        r"staging, latest",
    ):
        resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@prod"))


def test_same_version_needs_nothing() -> None:
    got = run(default_family(), "fashion@2", "fashion@2")
    assert got.chosen is None and "nothing to apply" in got.decision
    assert got.to_dict()["chosen"] is None


# --- errors -------------------------------------------------------------------------------------


def test_unknown_version_lists_known_ones() -> None:
    with pytest.raises(
        UnknownVersionError, match=r"^unknown version 7 of fashion; known: 1, 2, 3$"
    ):
        run(default_family(), "fashion@1", "fashion@7")


def test_other_family_in_a_reference() -> None:
    with pytest.raises(ResolverError, match=r"shoes@2 belongs to family 'shoes'"):
        run(default_family(), "fashion@1", "shoes@2")


def test_no_path_says_what_is_reachable() -> None:
    records = [emb(1), emb(2), emb(3), emb(4), tr(1, 2, 3, 80.0), tr(2, 1, 2, 80.0)]
    with pytest.raises(NoPathError) as info:
        run(records, "fashion@2", "fashion@4")
    assert str(info.value).startswith("no transformation path from fashion@2 to fashion@4")
    assert "reachable from fashion@2: 3;" in str(info.value)
    # A backward edge exists elsewhere, so this is a plain "no path", not "newer than".
    with pytest.raises(NoPathError, match="reachable from fashion@4: none") as info:
        run([*records, tr(3, 3, 1, 50.0)], "fashion@4", "fashion@1")
    assert not isinstance(info.value, BackwardRequestError)


def test_newer_to_older_without_backward_edges() -> None:
    with pytest.raises(BackwardRequestError) as info:
        run(default_family(), "fashion@3", "fashion@1")
    assert str(info.value).startswith(
        "fashion@3 is newer than fashion@1 and there is no backward transformation; FCT "
        "upgrades old galleries to new versions"
    )


def test_a_backward_edge_is_used_when_registered() -> None:
    got = run([*default_family(), tr(7, 3, 1, 65.0)], "fashion@3", "fashion@1")
    assert got.chosen is not None and got.chosen.hops == (7,)


def test_bad_side_info_reference() -> None:
    records = [*default_family()]
    with pytest.raises(
        ResolverError,
        match=r"unknown side-info extractor fashion-side-info/5; "
        r"known: fashion-side-info/1",
    ):
        run(records, "fashion@1", "fashion@3", side_info="fashion-side-info/5")
    with pytest.raises(ResolverError, match="use <model>/<version>"):
        run(records, "fashion@1", "fashion@3", side_info="simclr")


# --- the explanation ----------------------------------------------------------------------------


def test_json_and_table_carry_the_deciding_numbers() -> None:
    records = [*default_family(direct=78.0), chain(9, [1, 2], 1, 3, 81.5)]
    got = run(records, "fashion@1", "fashion@3")
    data = json.loads(json.dumps(got.to_dict()))
    assert data["chosen"]["path"] == [1, 2, 3]
    assert data["chosen"]["top1"] == 81.5 and data["chosen"]["measured"] is True
    assert data["chosen"]["recorded_chain"]["uri"] == "models:/fashion-transformations/9"
    assert [h["top1"] for h in data["chosen"]["hops"]] == [90.0, 88.0]
    assert data["alternatives"][0]["path"] == [1, 3]
    assert data["alternatives"][0]["top1"] == 78.0
    assert "81.50%" in data["decision"] and "78.00%" in data["decision"]
    table = got.table()
    assert "fashion-transformations/1" in table and "90.00" in table and "88.00" in table
    assert "end to end (recorded chain fashion-transformations/9): top-1 81.50" in table


def test_table_says_when_the_chain_is_only_estimated() -> None:
    got = run(default_family(direct=50.0), "fashion@1", "fashion@3")
    assert "not evaluated" in got.table() and "--evaluate --record" in got.table()


# --- building the graph -------------------------------------------------------------------------


def test_unusable_records_are_left_out_with_a_note() -> None:
    records = [
        *default_family(),
        side(1),
        tr(10, 1, 3, None),  # not measured
        tr(11, 1, 9, 90.0),  # names an unregistered version
        chain(12, [1, 3], 1, 3, 90.0),  # hops do not connect
        chain(13, [1, 99], 1, 3, 90.0),  # unknown hop
        Record("fashion-transformations", "14", {"fct.role": "transformation"}),
        Record("fashion", "4", {"fct.role": "embedding"}, status="PENDING_REGISTRATION"),
    ]
    graph = graph_of(records)
    assert [e.model_version for e in graph.edges] == [1, 2, 3, 4]
    assert graph.chains == []
    assert list(graph.nodes) == [1, 2, 3]
    joined = "\n".join(graph.notes)
    for fragment in (
        "/10 (1->3) skipped: no measured fct.top1",
        "/11 skipped: it names fashion",
        "/12 (chain 1,3) skipped: its hops do not connect",
        "/13 (chain 1,99) skipped: unusable transformations [99]",
        "/14 skipped: no integer",
        "fashion/4 skipped: status PENDING",
    ):
        assert fragment in joined
    got = resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@3"))
    assert any("no measured" in n for n in got.notes)


def test_a_chain_mixing_extractors_is_left_out() -> None:
    records = [
        emb(1),
        emb(2),
        emb(3),
        tr(1, 1, 2, 90.0),
        tr(2, 2, 3, 90.0, side_info=OTHER_SIDE),
        chain(3, [1, 2], 1, 3, 99.0),
    ]
    graph = graph_of(records)
    assert graph.chains == [] and "mix side-info" in "\n".join(graph.notes)


# --- measured accuracy needs its provenance -----------------------------------------------------


def _hand_set(record: Record, top1: str) -> Record:
    """``fct.top1`` set by hand (``mlflow`` UI or client): no evaluation run beside it."""
    tags = {k: v for k, v in record.tags.items() if k != fct_tags.MEASURED_RUN}
    return Record(record.name, record.version, tags | {fct_tags.TOP1: top1})


def test_a_transformation_without_a_measurement_is_named_not_skipped() -> None:
    records = [emb(1), emb(2), emb(3), side(1), tr(1, 1, 2, 90.0), tr(8, 2, 3, None)]
    with pytest.raises(UnmeasuredError) as err:
        run(records, "fashion@1", "fashion@3")
    text = str(err.value)
    assert "`fashion-transformations/8 (2->3)` has no measured fct.top1" in text
    assert "fct register" in text and "dvc repro evaluate register" in text
    assert isinstance(err.value, NoPathError)  # callers catching "no path" still do


@pytest.mark.parametrize("value", ["0", "99.5"])
def test_a_hand_set_top1_is_not_a_measurement(value: str) -> None:
    unmeasured = _hand_set(tr(8, 1, 3, None), value)
    records = [emb(1), emb(2), emb(3), side(1), unmeasured]
    with pytest.raises(UnmeasuredError, match=r"fashion-transformations/8 \(1->3\)` has fct.top1"):
        run(records, "fashion@1", "fashion@3")
    # with a measured route beside it, that route wins whatever the hand-set number says
    got = run([*records, tr(2, 1, 3, 40.0)], "fashion@1", "fashion@3")
    assert got.chosen.hops == (2,)
    assert any("/8 (1->3) skipped" in n and fct_tags.MEASURED_RUN in n for n in got.notes)


def test_an_unmeasured_edge_off_the_way_keeps_the_plain_no_path_error() -> None:
    records = [emb(1), emb(2), emb(3), side(1), tr(1, 1, 2, 90.0), tr(8, 3, 2, None)]
    with pytest.raises(NoPathError) as err:
        run(records, "fashion@1", "fashion@3")
    assert not isinstance(err.value, UnmeasuredError)


# --- routes for a gallery to be backfilled --------------------------------------------------------


def test_for_backfill_takes_the_best_route_ending_in_an_uncertainty_aware_transformation() -> None:
    records = [emb(1), emb(2), emb(3), side(1), tr(1, 1, 2, 95.0), tr(2, 2, 3, 95.0)]
    records += [tr(3, 1, 3, 92.0), tr(4, 2, 3, 70.0, kind=fct_tags.KIND_UNCERTAINTY)]
    records += [tr(5, 1, 3, 60.0, kind=fct_tags.KIND_UNCERTAINTY)]
    assert run(records, "fashion@1", "fashion@3").chosen.hops == (3,)  # plain: best top-1
    got = run(records, "fashion@1", "fashion@3", uncertainty=True)
    assert got.chosen.hops == (1, 4)  # 95% x 70% beats the direct 60%
    assert [r.hops for r in got.alternatives] == [(5,)]
    assert all(
        r.steps[-1].kind == fct_tags.KIND_UNCERTAINTY for r in (got.chosen, *got.alternatives)
    )


def test_for_backfill_without_an_uncertainty_aware_route_names_the_fix() -> None:
    records = [emb(1), emb(3), side(1), tr(1, 1, 3, 90.0)]
    with pytest.raises(NoPathError, match=r"dvc repro backfill register.*--policy random"):
        run(records, "fashion@1", "fashion@3", uncertainty=True)


def test_the_uncertainty_kind_is_the_models_kind() -> None:
    from fct_registry.models.uncertainty import KIND

    assert fct_tags.KIND_UNCERTAINTY == KIND
