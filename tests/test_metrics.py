"""sklat.metrics: values against hand computations, and every error message."""

import numpy as np
import pytest

from sklat.metrics import mape, per_token_mae, positioned_mape


def test_values_match_hand_computations():
    assert mape([100.0, 200.0], [110.0, 190.0]) == pytest.approx(7.5)
    assert mape([100.0, 200.0], [110.0, 190.0], sample_weight=[1, 0]) == pytest.approx(10.0)
    assert mape([[100.0, 10.0]], [[110.0, 10.0]]) == pytest.approx(5.0)
    assert per_token_mae([100.0, 200.0], [110.0, 190.0], [10, 20]) == pytest.approx(0.75)
    measured = [np.array([10.0, 10.0, 20.0]), np.array([20.0])]
    pred = np.array([[11.0, 9.0, 20.0], [22.0, 0.0, 0.0]])
    # Each request weighs the same, whatever its length.
    assert positioned_mape(measured, pred) == pytest.approx((20 / 3 + 10) / 2)
    assert positioned_mape(measured[:1], pred[:1], start=3) == pytest.approx(0.0)
    curves = np.array([[10.0, 10.0, 99.0], [20.0, 99.0, 99.0]])
    assert positioned_mape(curves, pred, output_tokens=[2, 1]) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mape([1.0, 2.0], [1.0]), r"same shape; got \(2,\) and \(1,\)"),
        (lambda: mape([], []), "y_true is empty"),
        (
            lambda: mape([1.0, -2.0], [1.0, 1.0]),
            r"y_true must be positive latencies \(> 0\); entry 1 is -2.0",
        ),
        (lambda: mape([1.0, np.nan], [1.0, 1.0]), r"y_true must be finite .*; entry 1 is nan"),
        (lambda: per_token_mae([1.0], [1.0], [0]), "output_tokens must be >= 1"),
        (
            lambda: positioned_mape([np.ones(2)], [np.ones(2)], start=3),
            "request 0 has 2 steps, fewer than start=3",
        ),
        (
            lambda: positioned_mape([np.ones(2)], [np.ones(1)]),
            "request 0: 2 steps expected, y_true has 2 and y_pred 1",
        ),
        (
            lambda: positioned_mape([np.array([1.0, 0.0])], [np.ones(2)]),
            r"y_true\[0\] must be positive latencies \(> 0\); step 2 is 0.0",
        ),
        (lambda: positioned_mape([np.ones(1)], []), "y_true has 1 requests but y_pred 0"),
        (lambda: positioned_mape([], []), "y_true is empty"),
    ],
)
def test_errors_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
