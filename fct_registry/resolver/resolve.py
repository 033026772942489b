"""Pick the upgrade route for a stored gallery: ``resolve(graph, fashion@1, fashion@3)``.

:mod:`.search` finds and ranks the routes (scoring, tie-breaks, the search itself);
:mod:`.explanation` says why the first one won; :mod:`.errors` holds what is raised when no
route exists.

Side-info. The gallery stores side-info from one extractor (the source version's
``fct.side_info`` tag, or ``side_info=`` when the gallery was indexed differently), so only
edges reading that extractor, or none, are used: extractors are never mixed.
"""

from __future__ import annotations

from fct_registry.registry import tags as fct_tags
from fct_registry.registry.refs import VersionRef
from fct_registry.resolver.errors import (
    BackwardRequestError,
    NoPathError,
    ResolverError,
    SideInfoMismatchError,
    UnmeasuredError,
)
from fct_registry.resolver.explanation import Resolution
from fct_registry.resolver.graph import MEASURE_HINT, CompatibilityGraph, UnmeasuredEdge
from fct_registry.resolver.search import Route, best_routes

MAX_ALTERNATIVES = 10


def resolve(
    graph: CompatibilityGraph,
    source: VersionRef,
    target: VersionRef,
    side_info: str | None = None,
    *,
    uncertainty: bool = False,
) -> Resolution:
    """The best chain upgrading a gallery of ``source`` to ``target``, and the alternatives.

    ``side_info`` names the extractor the gallery was indexed with (``"<F>-side-info/<n>"``);
    default: the source version's ``fct.side_info`` tag. Raises ``UnknownVersionError``,
    ``BackwardRequestError``, ``SideInfoMismatchError`` or ``NoPathError`` (all ``FctError``),
    each naming what is known or reachable. ``uncertainty``: only routes whose last
    transformation predicts a per-row uncertainty (kind ``fct-uncertainty``), the ones whose
    upgraded gallery ``fct backfill plan`` can order by.
    """
    src, dst = graph.version_of(source), graph.version_of(target)
    extractor = _check_side_info(graph, side_info) if side_info else graph.nodes[src].side_info
    notes = tuple(graph.notes)
    if src == dst:
        return Resolution(graph.family, src, dst, extractor, None, (), notes)
    routes = best_routes(graph, src, dst, extractor)
    if not routes:
        raise _no_path_error(graph, src, dst, extractor)
    if uncertainty:
        routes = uncertainty_routes(routes)
        if not routes:
            f = graph.family
            raise NoPathError(
                f"no route from {f}@{src} to {f}@{dst} ends in an uncertainty-aware "
                f"transformation ({fct_tags.KIND}={fct_tags.KIND_UNCERTAINTY}); register one (the "
                "backfill stage trains it and the register stage registers it: `dvc repro backfill "
                "register`), or upgrade without --for-backfill and plan the backfill with "
                "--policy random"
            )
    return Resolution(
        graph.family, src, dst, extractor, routes[0], tuple(routes[1 : MAX_ALTERNATIVES + 1]), notes
    )


def uncertainty_routes(routes: list[Route]) -> list[Route]:
    """The routes whose last transformation predicts uncertainty, best first. ``best_routes``
    keeps the best route per last segment, so every such ending is among them."""
    return [r for r in routes if r.steps[-1].kind == fct_tags.KIND_UNCERTAINTY]


def _check_side_info(graph: CompatibilityGraph, value: str) -> str:
    name, _, version = value.rpartition("/")
    expected = fct_tags.side_info_model_name(graph.family)
    if not name or not version.isdigit():
        raise ResolverError(
            f"bad side-info reference {value!r}; use <model>/<version>, e.g. {expected}/1"
        )
    known_versions = graph.side_info_versions
    if name == expected and known_versions and int(version) not in known_versions:
        known = ", ".join(f"{expected}/{v}" for v in known_versions)
        raise ResolverError(f"unknown side-info extractor {value}; known: {known}")
    return value


def _no_path_error(
    graph: CompatibilityGraph, src: int, dst: int, extractor: str | None
) -> NoPathError:
    f = graph.family
    blocking = _unmeasured_on_the_way(graph, src, dst, extractor)
    if blocking:
        model = graph.transformations_model
        named = "; ".join(f"`{u.label(model)}` has {u.why}" for u in blocking)
        return UnmeasuredError(
            f"no measured transformation path from {f}@{src} to {f}@{dst}: {named}; {MEASURE_HINT}"
        )
    others = [x for x in graph.extractors() if x != extractor]
    with_other = [x for x in others if dst in graph.reachable(src, x)]
    if with_other:
        gallery = (
            f"was indexed with {extractor}"
            if extractor
            else f"has no known side-info extractor (no {fct_tags.SIDE_INFO} tag on {f}@{src})"
        )
        return SideInfoMismatchError(
            f"side-info mismatch: the gallery of {f}@{src} {gallery}, but every transformation "
            f"path to {f}@{dst} reads {' or '.join(with_other)}, and extractors are never mixed; "
            f"pass --side-info {with_other[0]} if the gallery was indexed with it, or register "
            f"transformations to {f}@{dst} that read {extractor or 'the gallery side-info'}"
        )
    reachable = graph.reachable(src, extractor)
    if src > dst and not any(e.source > e.target for e in graph.edges):
        return BackwardRequestError(
            f"{f}@{src} is newer than {f}@{dst} and there is no backward transformation; FCT "
            f"upgrades old galleries to new versions (swap FROM and TO, or re-index the gallery "
            f"with {f}@{dst})"
        )
    reach = ", ".join(map(str, reachable)) or "none"
    return NoPathError(
        f"no transformation path from {f}@{src} to {f}@{dst} with side-info "
        f"{extractor or 'none'}; reachable from {f}@{src}: {reach}; register a transformation "
        f"into {f}@{dst} from one of those (or re-index the gallery with {f}@{dst})"
    )


def _unmeasured_on_the_way(
    graph: CompatibilityGraph, src: int, dst: int, extractor: str | None
) -> list[UnmeasuredEdge]:
    """The unmeasured transformations (usable with ``extractor``) on some path from ``src`` to
    ``dst`` that measured edges alone do not give: the ones to measure."""
    usable = [u for u in graph.unmeasured if u.side_info is None or u.side_info == extractor]
    if not usable:
        return []
    adj: dict[int, set[int]] = {}
    back: dict[int, set[int]] = {}
    measured = [(e.source, e.target) for es in graph.out_edges(extractor).values() for e in es]
    for a, b in [*measured, *((u.source, u.target) for u in usable)]:
        adj.setdefault(a, set()).add(b)
        back.setdefault(b, set()).add(a)

    def closure(start: int, links: dict[int, set[int]]) -> set[int]:
        seen, todo = {start}, [start]
        while todo:
            for n in links.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    ahead, behind = closure(src, adj), closure(dst, back)
    return [u for u in usable if u.source in ahead and u.target in behind]
