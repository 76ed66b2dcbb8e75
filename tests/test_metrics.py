"""sklat.metrics: values against hand computations, and every error message."""

import numpy as np
import pytest

from sklat.metrics import (
    interval_coverage,
    mape,
    mean_interval_width,
    per_token_mae,
    positioned_mape,
    segment_mape,
)


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


def test_interval_metrics():
    y = [10.0, 20.0, 30.0, 40.0]
    bounds = [[9.0, 11.0], [20.0, 20.0], [31.0, 35.0], [30.0, 39.0]]
    # Bounds are included: 2 of 4 inside.
    assert interval_coverage(y, bounds) == 0.5
    assert mean_interval_width(bounds) == pytest.approx((2 + 0 + 4 + 9) / 4)
    stacked = np.stack([bounds, [[0.0, 100.0]] * 4], axis=2)
    np.testing.assert_allclose(interval_coverage(y, stacked), [0.5, 1.0])
    np.testing.assert_allclose(mean_interval_width(stacked), [3.75, 100.0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: interval_coverage([1.0], [1.0, 2.0]), r"y_interval must have shape"),
        (
            lambda: interval_coverage([1.0], [[2.0, 1.0]]),
            "lower bound above its upper bound at sample 0",
        ),
        (lambda: interval_coverage([1.0, 2.0], [[0.0, 3.0]]), r"one value per interval \(1\)"),
        (lambda: interval_coverage([np.nan], [[0.0, 3.0]]), "y_true must be finite"),
        (lambda: interval_coverage([1.0], [[np.nan, 3.0]]), "y_interval holds NaN"),
        (lambda: mean_interval_width([[0.0, np.inf]]), "must be finite to have a width"),
    ],
)
def test_interval_metric_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


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
        (
            lambda: positioned_mape([np.ones(2), None], np.ones((2, 2))),
            r"y_true\[1\] is None: that request has no per-step latencies",
        ),
        (
            lambda: segment_mape([None, ([1, 1], [2.0, 2.0])], np.ones((2, 3))),
            r"segments\[0\] is None: that request has no decode segments",
        ),
    ],
)
def test_errors_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_evaluate_reports_what_its_inputs_allow():
    from sklat import LatencyEstimator
    from sklat.datasets import make_positioned_latency
    from sklat.metrics import evaluate

    d = make_positioned_latency(120, positioned_fraction=0.5, random_state=0)
    est = LatencyEstimator(max_epochs=5, random_state=0, calibration_fraction=0.2).fit(
        d.X, d.y, output_tokens=d.output_tokens
    )
    bare = evaluate(est, d.X, d.y, output_tokens=d.output_tokens)
    assert set(bare) == {
        "n_requests",
        "total_decode_mape_pct",
        "total_decode_mae_ms",
        "prefill_mape_pct",
        "prefill_mae_ms",
        "n_outside_domain",
    }
    assert bare["n_requests"] == 120 and bare["n_outside_domain"] == 0
    groups = np.where(np.arange(120) < 40, "a", "b")
    segments = [None if s is None else (np.ones(len(s), int), s) for s in d.positioned_latencies]
    full = evaluate(
        est,
        d.X,
        d.y,
        output_tokens=d.output_tokens,
        positioned_latencies=d.positioned_latencies,
        decode_segments=segments,
        groups=groups,
        confidences=(0.8, 0.95),
    )
    # One-token segments are per-step data: the same error.
    assert full["segment_mape_pct"] == pytest.approx(full["positioned_mape_pct"])
    assert full["n_requests_with_per_step"] == full["n_requests_with_segments"] > 0
    assert {k: v["n_requests"] for k, v in full["by_dataset"].items()} == {"a": 40, "b": 80}
    # 24 calibration requests: enough for 80% (4 needed) and 95% (19 needed).
    assert set(full["decode_interval"]) == {"0.8", "0.95"}
    decode_only = evaluate(est, d.X, d.y["T_LLM_decode"], output_tokens=d.output_tokens)
    assert "prefill_mape_pct" not in decode_only
    assert decode_only["total_decode_mape_pct"] == bare["total_decode_mape_pct"]


def test_evaluate_refuses_inputs_that_do_not_match_X():
    # y, groups and the per-request lists were reshaped or indexed by the
    # number of output_tokens: a y of the wrong length or width gave numbers
    # for pairs that do not belong together.
    from sklat import LatencyEstimator
    from sklat.datasets import make_positioned_latency
    from sklat.metrics import evaluate

    d = make_positioned_latency(40, random_state=0)
    est = LatencyEstimator(max_epochs=2, random_state=0).fit(
        d.X, d.y, output_tokens=d.output_tokens
    )
    y = d.y.to_numpy()
    cases = [
        (dict(y=y[:20]), "y has 20 rows but X has 40 samples"),
        (dict(y=np.c_[y, y][:30]), r"y must have 1 column \(T_LLM_decode\) or 2 columns"),
        (dict(output_tokens=d.output_tokens[:10]), "output_tokens has 10 entries but X has 40"),
        (dict(groups=["a"] * 10), "groups has 10 entries but X has 40 samples"),
        (dict(positioned_latencies=[None] * 39), "positioned_latencies has 39 entries"),
        (dict(decode_segments=[None] * 41), "decode_segments has 41 entries"),
        (dict(confidences=[0.9, 0.9]), "confidences 0.9 and 0.9 both report under the key"),
        (
            dict(confidences=[0.8, 0.80000001]),
            "confidences 0.8 and 0.80000001 both report under the key '0.8'",
        ),
    ]
    for change, message in cases:
        kwargs = dict(y=y, output_tokens=d.output_tokens) | change
        y_given = kwargs.pop("y")
        with pytest.raises(ValueError, match=message):
            evaluate(est, d.X, y_given, **kwargs)
