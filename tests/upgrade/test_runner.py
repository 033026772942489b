"""The ONNX Runtime chain runner against the PyTorch modules it was exported from."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fct_registry.upgrade.runner import OnnxChainRunner, RunnerError
from tests.upgrade.conftest import HIDDEN, NEW_DIM, OLD_DIM, SIDE_DIM, OnnxChain, synthetic_rows


def test_one_graph_matches_torch(chains: dict[str, OnnxChain]) -> None:
    rows = synthetic_rows(37)
    runner = OnnxChainRunner([chains["1-2"].path], threads=1)
    assert (runner.old_dim, runner.side_info_dim, runner.new_dim) == (OLD_DIM, SIDE_DIM, NEW_DIM)
    got = runner(rows.old, rows.side)
    np.testing.assert_allclose(got, chains["1-2"].torch(rows.old, rows.side), atol=1e-5)


def test_steps_run_in_order_on_the_same_side_info(chains: dict[str, OnnxChain]) -> None:
    rows = synthetic_rows(20)
    runner = OnnxChainRunner([chains["1-2"].path, chains["2-2b"].path, chains["3-2"].path])
    want = chains["1-2"].torch(rows.old, rows.side)
    want = chains["2-2b"].torch(want, rows.side)
    want = chains["3-2"].torch(want, rows.side)
    np.testing.assert_allclose(runner(rows.old, rows.side), want, atol=1e-5)


def test_results_do_not_depend_on_batch_or_threads(chains: dict[str, OnnxChain]) -> None:
    """Resumed upgrades rely on this: any split of the rows gives the same bits."""
    rows = synthetic_rows(300)
    whole = OnnxChainRunner([chains["1-2"].path], threads=2)(rows.old, rows.side)
    one = OnnxChainRunner([chains["1-2"].path], threads=1)
    parts = np.concatenate([one(rows.old[:7], rows.side[:7]), one(rows.old[7:], rows.side[7:])])
    assert np.array_equal(whole, parts)


def test_graph_without_side_info_input(chains: dict[str, OnnxChain]) -> None:
    runner = OnnxChainRunner([chains["3-2"].path])
    assert runner.side_info_dim == 0
    rows = synthetic_rows(5, dim=NEW_DIM)
    np.testing.assert_allclose(
        runner(rows.old, None), chains["3-2"].torch(rows.old, rows.side), atol=1e-5
    )


def test_steps_that_do_not_connect_are_refused(chains: dict[str, OnnxChain]) -> None:
    with pytest.raises(RunnerError, match=r"reads 8-d embeddings but the step before .* 6-d"):
        OnnxChainRunner([chains["1-2"].path, chains["1-2"].path])


def test_missing_graph_is_named(tmp_path) -> None:
    with pytest.raises(RunnerError, match=r"does not exist"):
        OnnxChainRunner([tmp_path / "nope.onnx"])


def test_gemm_shapes_are_the_weights(chains: dict[str, OnnxChain]) -> None:
    shapes = OnnxChainRunner([chains["1-2"].path]).gemm_shapes()
    assert sorted(shapes) == sorted(
        [(OLD_DIM, HIDDEN), (SIDE_DIM, HIDDEN), (2 * HIDDEN, HIDDEN), (HIDDEN, NEW_DIM)]
    )


def test_runner_pickles_without_its_session(chains: dict[str, OnnxChain]) -> None:
    """Engines ship runners to workers; the session is rebuilt where it lands."""
    rows = synthetic_rows(4)
    runner = OnnxChainRunner([chains["1-2"].path])
    clone = pickle.loads(pickle.dumps(runner))
    assert np.array_equal(clone(rows.old, rows.side), runner(rows.old, rows.side))
