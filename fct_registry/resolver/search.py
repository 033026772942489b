"""The route search over a compatibility graph: best route first, then the alternatives.

Scoring. A single transformation and a recorded chain (``fct.role=chain``, evaluated end to end)
each carry a *measured* top-1. A route that joins several of them has no measurement, so it is
*estimated* as the product of their top-1 fractions (``100 * prod(top1_i / 100)``): each hop is
assumed to lose accuracy independently of the others. The estimate is pessimistic on purpose,
so an unmeasured multi-hop route beats a measured one only by a clear margin; evaluating and
recording the route (``fct resolve --evaluate --record``) replaces the estimate by a measurement.
When a recorded chain exists, the same hops joined one by one are not considered again: the
measurement supersedes the estimate, whether it came out higher or lower.

Choice. Highest top-1; ties (top-1 equal to 1e-9 in log space) go to fewer transformation hops,
then to fewer joined segments (more of the route measured), then to the lower transformation
version numbers, so the answer is deterministic.

Search. Dijkstra on ``-ln(top1 / 100)`` (non-negative, so it is exact on any graph, including
backward edges that make cycles) over states ``(version, automaton state)``: a small
Aho-Corasick automaton over transformation versions recognises a recorded chain's hops being
joined one by one and forbids that transition. Without recorded chains there is one state per
version. The search is O(E log V) per query, over versions that can reach the target only: a
few milliseconds on 1,000 versions and 5,000 edges (``benchmarks/bench_resolver.py``).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from fct_registry.resolver.graph import CompatibilityGraph, TransformEdge

State = tuple[int, int]
"""A search state: (family version, automaton state)."""

TIE_DECIMALS = 9
"""Route costs (sums of ``-ln(top1/100)``) are compared rounded to this many decimals."""


@dataclass(frozen=True)
class Route:
    """A route through the compatibility graph, ``path[0]`` to ``path[-1]``: its segments are
    single transformations or recorded chains (``fct.role=chain``), applied in order."""

    segments: tuple[TransformEdge, ...]
    steps: tuple[TransformEdge, ...]  # the single transformations applied, in order
    cost: float  # sum of the segments' -ln(top1/100), in path order

    @property
    def source(self) -> int:
        return self.segments[0].source

    @property
    def target(self) -> int:
        return self.segments[-1].target

    @property
    def path(self) -> tuple[int, ...]:
        return (self.steps[0].source, *(s.target for s in self.steps))

    @property
    def hops(self) -> tuple[int, ...]:
        """Transformation versions applied, in order."""
        return tuple(s.model_version for s in self.steps)

    @property
    def n_hops(self) -> int:
        return len(self.steps)

    @property
    def measured(self) -> bool:
        """True when the whole route was evaluated end to end (one segment)."""
        return len(self.segments) == 1

    @property
    def top1(self) -> float:
        return 100.0 * math.prod(s.top1 / 100.0 for s in self.segments)

    @property
    def recorded_chain(self) -> TransformEdge | None:
        return self.segments[0] if self.measured and self.segments[0].is_chain else None

    @property
    def key(self) -> tuple[float, int, int, tuple[int, ...]]:
        """Sort key, best first: the choice rule of the module docstring."""
        return (round(self.cost, TIE_DECIMALS), self.n_hops, len(self.segments), self.hops)

    def basis(self, model: str) -> str:
        chain = self.recorded_chain
        if chain is not None:
            return f"measured end to end (recorded chain {model}/{chain.model_version})"
        if self.measured:
            return "measured"
        parts = " x ".join(f"{s.top1:.2f}%" for s in self.segments)
        return f"estimated: product of measured {parts}"

    def label(self) -> str:
        return "->".join(map(str, self.path))

    def to_dict(self, model: str) -> dict[str, Any]:
        chain = self.recorded_chain
        return {
            "path": list(self.path),
            "hops": [_edge_dict(s, model) for s in self.steps],
            "n_hops": self.n_hops,
            "top1": self.top1,
            "top5": self.segments[0].top5 if self.measured else None,
            "mAP": self.segments[0].mAP if self.measured else None,
            "measured": self.measured,
            "basis": self.basis(model),
            "recorded_chain": None
            if chain is None
            else {"model_version": chain.model_version, "uri": _uri(model, chain.model_version)},
            "segments": [
                {"model_version": s.model_version, "hops": list(s.hops), "top1": s.top1}
                for s in self.segments
            ],
        }


def best_routes(
    graph: CompatibilityGraph, src: int, dst: int, side_info: str | None
) -> list[Route]:
    """Best route first, then for every other last segment into ``dst`` the best route ending
    with it (the alternatives the choice is explained against)."""
    adj = _adjacency(graph, side_info)
    automaton = _automaton(graph)
    steps_of = _steps_index(graph)
    useful = _reaching(graph, side_info, dst)  # versions from which dst can be reached at all
    if src not in useful:
        return []
    # label: (rounded cost, hops, segments, raw cost). The last tie-break, the hop versions, is
    # read off the parent links only when the first three tie (rare), so no per-relaxation copy.
    start: State = (src, 0)
    labels: dict[State, tuple[float, int, int, float]] = {start: (0.0, 0, 0, 0.0)}
    parent: dict[State, tuple[State, TransformEdge] | None] = {start: None}
    heap: list[tuple[float, int, int, int, int, int]] = [(0.0, 0, 0, 0, src, 0)]
    pushed = 0
    settled: set[State] = set()
    into_dst: list[tuple[State, TransformEdge]] = []
    while heap:
        *_, v, a = heapq.heappop(heap)
        state = (v, a)
        if state in settled:
            continue
        settled.add(state)
        if v == dst:
            continue  # routes end here; going on would only make cycles through dst
        _, hops, segs, raw = labels[state]
        for e, cost, n_hops, tracked in adj.get(v, ()):
            if e.target not in useful:
                continue
            # Only single hops that start or continue a recorded chain move the automaton.
            nxt = automaton.step(a, e.model_version) if tracked else 0
            if nxt < 0:
                continue  # these hops are a recorded chain: its measurement is used instead
            if e.target == dst:
                into_dst.append((state, e))
            nstate = (e.target, nxt)
            if nstate in settled:
                continue
            nraw = raw + cost
            label = (round(nraw, TIE_DECIMALS), hops + n_hops, segs + 1, nraw)
            old = labels.get(nstate)
            if old is not None:
                if label[:3] > old[:3]:
                    continue
                if label[:3] == old[:3]:
                    old_parent = parent[nstate]
                    assert old_parent is not None
                    mine = (*_hop_versions(parent, state), *e.hops)
                    theirs = (*_hop_versions(parent, old_parent[0]), *old_parent[1].hops)
                    if mine >= theirs:
                        continue
            labels[nstate] = label
            parent[nstate] = (state, e)
            pushed += 1
            heapq.heappush(heap, (label[0], label[1], label[2], pushed, e.target, nxt))

    best: dict[int, Route] = {}  # by last segment: the best route ending with it
    for state, e in into_dst:
        segments = (*_segments(parent, state), e)
        if dst in (s.source for s in segments):
            continue  # a detour through dst (possible only with backward edges)
        steps = tuple(steps_of[h] for s in segments for h in s.hops)
        route = Route(segments, steps, labels[state][3] + e.cost)
        if e.model_version not in best or route.key < best[e.model_version].key:
            best[e.model_version] = route
    return sorted(best.values(), key=lambda c: c.key)


def _hop_versions(parent: dict, state: tuple[int, int]) -> tuple[int, ...]:
    return tuple(h for s in _segments(parent, state) for h in s.hops)


def _adjacency(
    graph: CompatibilityGraph, side_info: str | None
) -> dict[int, list[tuple[TransformEdge, float, int, bool]]]:
    """``out_edges`` with what the search's inner loop needs precomputed: cost, hop count, and
    whether the edge is a single hop that occurs in some recorded chain (else the automaton,
    from any state, goes back to its root on it)."""
    key = ("adjacency", side_info)
    if key not in graph._cache:
        in_patterns = {h for c in graph.chains for h in c.hops}
        graph._cache[key] = {
            v: [
                (e, e.cost, e.n_hops, not e.is_chain and e.model_version in in_patterns)
                for e in edges
            ]
            for v, edges in graph.out_edges(side_info).items()
        }
    return graph._cache[key]


def _reaching(graph: CompatibilityGraph, side_info: str | None, dst: int) -> set[int]:
    """Versions with some path to ``dst`` (reverse breadth-first search): the search skips the
    rest, which on an old-to-new family is everything newer than ``dst``."""
    key = ("reverse", side_info)
    if key not in graph._cache:
        reverse: dict[int, list[int]] = {}
        for v, edges in graph.out_edges(side_info).items():
            for e in edges:
                reverse.setdefault(e.target, []).append(v)
        graph._cache[key] = reverse
    reverse = graph._cache[key]
    seen, frontier = {dst}, [dst]
    while frontier:
        nxt = []
        for v in frontier:
            for u in reverse.get(v, ()):
                if u not in seen:
                    seen.add(u)
                    nxt.append(u)
        frontier = nxt
    return seen


def _segments(parent: dict, state: tuple[int, int]) -> list[TransformEdge]:
    out: list[TransformEdge] = []
    link = parent[state]
    while link is not None:
        state, e = link
        out.append(e)
        link = parent[state]
    return out[::-1]


def _steps_index(graph: CompatibilityGraph) -> dict[int, TransformEdge]:
    if "steps" not in graph._cache:
        graph._cache["steps"] = {e.model_version: e for e in graph.edges}
    return graph._cache["steps"]


class _Automaton:
    """Aho-Corasick over transformation versions; ``step`` returns -1 on completing a pattern."""

    def __init__(self, patterns: list[tuple[int, ...]]) -> None:
        self.goto: list[dict[int, int]] = [{}]
        self.fail: list[int] = [0]
        self.done: list[bool] = [False]
        for pattern in patterns:
            s = 0
            for sym in pattern:
                if sym not in self.goto[s]:
                    self.goto.append({})
                    self.fail.append(0)
                    self.done.append(False)
                    self.goto[s][sym] = len(self.goto) - 1
                s = self.goto[s][sym]
            self.done[s] = True
        queue = deque(self.goto[0].values())
        while queue:
            s = queue.popleft()
            for sym, t in self.goto[s].items():
                f = self.fail[s]
                while f and sym not in self.goto[f]:
                    f = self.fail[f]
                self.fail[t] = self.goto[f].get(sym, 0)
                self.done[t] = self.done[t] or self.done[self.fail[t]]
                queue.append(t)

    def step(self, state: int, sym: int) -> int:
        while state and sym not in self.goto[state]:
            state = self.fail[state]
        state = self.goto[state].get(sym, 0)
        return -1 if self.done[state] else state


def _automaton(graph: CompatibilityGraph) -> _Automaton | None:
    if "automaton" not in graph._cache:
        patterns = [c.hops for c in graph.chains]
        graph._cache["automaton"] = _Automaton(patterns) if patterns else None
    return graph._cache["automaton"]


def _uri(model: str, version: int) -> str:
    return f"models:/{model}/{version}"


def _edge_dict(e: TransformEdge, model: str) -> dict[str, Any]:
    return {
        "model_version": e.model_version,
        "uri": _uri(model, e.model_version),
        "from": e.source,
        "to": e.target,
        "kind": e.kind,
        "side_info": e.side_info,
        "top1": e.top1,
        "top5": e.top5,
        "mAP": e.mAP,
    }
