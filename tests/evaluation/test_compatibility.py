"""The gap-closed share of the compatibility report."""

import math

from fct_registry.evaluation.compatibility import gap_closed


def test_gap_closed_is_undefined_for_a_gap_within_noise():
    assert gap_closed(60.0, 50.0, 70.0) == 50.0
    assert gap_closed(45.0, 50.0, 70.0) == -25.0
    assert math.isnan(gap_closed(49.0, 50.0, 50.4))  # 0.4-point gap: a ratio of noise
    assert gap_closed(50.5, 50.0, 50.5) == 100.0
