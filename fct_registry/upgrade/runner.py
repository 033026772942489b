"""Chain runners: ``(old [N, d_old], side_info [N, d_s]) -> new [N, d_new]``, float32 NumPy.

The upgrade engine only needs this callable, so the same batch function runs in one process, in
Ray actors, or on a GPU provider. :class:`OnnxChainRunner` runs a chain of one or more ONNX
graphs (each a transformation or a fused chain, as the ``fct`` flavor stores them) with ONNX
Runtime; it is picklable (the session is rebuilt lazily where it lands), so engines can ship it
to workers. Results do not depend on the thread count or on the batch size (measured with
onnxruntime 1.32 on CPU: bit-identical), which resumable upgrades rely on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fct_registry.errors import FctError

OLD_NAMES = ("old_embedding", "old")
SIDE_INFO_NAMES = ("side_info",)
UNCERTAINTY_NAME = "log_variance"
"""Second output of an uncertainty-aware transformation's graph: per-row log-variance ``[N]``."""


class RunnerError(FctError):
    """An ONNX graph cannot serve as a chain step."""


@runtime_checkable
class ChainRunner(Protocol):
    old_dim: int
    side_info_dim: int  # 0: reads no side-info
    new_dim: int

    def __call__(self, old: np.ndarray, side_info: np.ndarray | None) -> np.ndarray: ...


@dataclass(frozen=True)
class GraphInterface:
    """What one ONNX graph reads and writes, taken from the graph itself."""

    old_input: str
    side_info_input: str | None
    output: str
    old_dim: int
    side_info_dim: int
    new_dim: int
    uncertainty_output: str | None = None


def graph_interface(session: Any, where: str) -> GraphInterface:
    """Find the old-embedding and side-info inputs by name (``old_embedding``/``old`` and
    ``side_info``); a lone input is the old embedding."""
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    by_name = {i.name: i for i in inputs}
    old = next((n for n in OLD_NAMES if n in by_name), None)
    side = next((n for n in SIDE_INFO_NAMES if n in by_name), None)
    if old is None and len(inputs) == 1:
        old = names[0]
    if old is None or len(inputs) > 2 or (len(inputs) == 2 and side is None):
        raise RunnerError(
            f"{where}: inputs {names} are not a transformation's; expected "
            "old_embedding [N, d] and optionally side_info [N, d_s] (export with "
            "fct_registry.registry.onnx_export.export_onnx)"
        )
    outputs = session.get_outputs()
    uncertainty = next((o.name for o in outputs if o.name == UNCERTAINTY_NAME), None)
    outputs = [o for o in outputs if o.name != uncertainty]
    if len(outputs) != 1:
        raise RunnerError(
            f"{where}: {len(outputs)} embedding outputs, expected one (and optionally "
            f"{UNCERTAINTY_NAME})"
        )
    return GraphInterface(
        old,
        side,
        outputs[0].name,
        _width(by_name[old], where),
        _width(by_name[side], where) if side else 0,
        _width(outputs[0], where),
        uncertainty,
    )


def _width(arg: Any, where: str) -> int:
    shape = list(arg.shape)
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise RunnerError(
            f"{where}: {arg.name} has shape {shape}, expected [batch, d] with a fixed d"
        )
    return int(shape[1])


def session_options(threads: int | None = None, spinning: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning workers burn CPU between batches that co-tenants (and our own Parquet I/O) could
    # use; off by default, measured no slower on a shared 2-core machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class OnnxChainRunner:
    """Run ONNX graphs one after another; each step reads the same side-info (FCT never changes
    it). ``threads``: ONNX Runtime's intra-op threads (default: its own choice, the cores)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        threads: int | None = None,
        spinning: bool = False,
    ) -> None:
        if not paths:
            raise RunnerError("a chain runner needs at least one ONNX graph")
        self.paths = tuple(str(p) for p in paths)
        self.threads, self.spinning = threads, spinning
        self._sessions: list[tuple[Any, GraphInterface]] | None = None
        steps = self._load()
        for (_, a), (_, b), path in zip(steps, steps[1:], self.paths[1:], strict=False):
            if a.new_dim != b.old_dim:
                raise RunnerError(
                    f"{path} reads {b.old_dim}-d embeddings but the step before "
                    f"it writes {a.new_dim}-d; order the steps from oldest to newest"
                )
        side_dims = {i.side_info_dim for _, i in steps if i.side_info_dim}
        if len(side_dims) > 1:
            raise RunnerError(
                f"the steps read side-info of different widths {sorted(side_dims)}; "
                "a chain reads one extractor's side-info"
            )
        self.old_dim = steps[0][1].old_dim
        self.side_info_dim = side_dims.pop() if side_dims else 0
        self.new_dim = steps[-1][1].new_dim
        # The last step's log-variance is the chain's: earlier hops' errors reach it as input.
        self.predicts_uncertainty = steps[-1][1].uncertainty_output is not None

    def _load(self) -> list[tuple[Any, GraphInterface]]:
        if self._sessions is None:
            import onnxruntime as ort

            options = session_options(self.threads, self.spinning)
            sessions = []
            for path in self.paths:
                if not Path(path).is_file():
                    raise RunnerError(f"ONNX graph {path} does not exist")
                try:
                    session = ort.InferenceSession(
                        path, options, providers=["CPUExecutionProvider"]
                    )
                except Exception as exc:  # onnxruntime raises its own untyped errors
                    raise RunnerError(
                        f"{path} is not a loadable ONNX graph ({exc}); re-export it"
                    ) from None
                sessions.append((session, graph_interface(session, path)))
            self._sessions = sessions
        return self._sessions

    def __call__(self, old: np.ndarray, side_info: np.ndarray | None) -> np.ndarray:
        return self.predict(old, side_info, uncertainty=False)[0]

    def predict(
        self, old: np.ndarray, side_info: np.ndarray | None, *, uncertainty: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(new [N, d_new], log_variance [N] or None)``; None when the last step predicts no
        uncertainty (or ``uncertainty=False``)."""
        x = np.ascontiguousarray(old, dtype=np.float32)
        log_var = None
        steps = self._load()
        for i, (session, io) in enumerate(steps):
            feeds = {io.old_input: x}
            if io.side_info_input is not None:
                if side_info is None:
                    raise RunnerError("this chain reads side-info but none was given")
                feeds[io.side_info_input] = np.ascontiguousarray(side_info, dtype=np.float32)
            if uncertainty and i == len(steps) - 1 and io.uncertainty_output is not None:
                x, log_var = session.run([io.output, io.uncertainty_output], feeds)
            else:
                (x,) = session.run([io.output], feeds)
        return x, log_var

    def gemm_shapes(self) -> list[tuple[int, int]]:
        """``(K, N)`` of every matrix multiplication by a weight in the graphs, in order: the
        work per row is ``sum(K * N)`` multiply-adds (what the GEMM bound of a benchmark uses)."""
        import onnx
        from onnx import numpy_helper

        shapes: list[tuple[int, int]] = []
        for path in self.paths:
            graph = onnx.load(path).graph
            weights = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
            for node in graph.node:
                if node.op_type not in ("Gemm", "MatMul") or node.input[1] not in weights:
                    continue
                k, n = weights[node.input[1]][-2:]
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                shapes.append((int(n), int(k)) if trans_b else (int(k), int(n)))
        return shapes

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sessions"] = None  # sessions are not picklable; rebuilt on first call
        return state

    def __repr__(self) -> str:
        return (
            f"OnnxChainRunner({len(self.paths)} step(s), {self.old_dim}+"
            f"{self.side_info_dim} -> {self.new_dim})"
        )
