"""The training domain: ranges recorded, extrapolation warned of, outputs finite."""

import warnings

import numpy as np
import pandas as pd
import pytest

from sklat import ExtrapolationWarning, LatencyEstimator
from sklat._domain import extended_range


@pytest.fixture(scope="module")
def inside(fitted, small_data):
    """Requests at the corners and the middle of the training box."""
    lo, hi = fitted.feature_range_
    cols = small_data.X.columns
    return pd.DataFrame([lo, hi, (lo + hi) / 2], columns=cols)


def _all_predictions(est, X, n):
    return [
        est.predict(X, n),
        est.predict_total(X),
        est.predict_positions(X, [1, est.max_output_tokens_]),
        est.predict_budget(X),
        est.predict_budget(X, "expectation", confidence=0.9),
        est.predict_interval(X, n),
        est.predict_interval(X, target="per_token"),
        est.predict_slo_attainment(X, ttft_ms=50.0, tpot_ms=5.0),
    ]


def test_nothing_in_range_warns(fitted, inside):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _all_predictions(fitted, inside, [1, fitted.max_output_tokens_, 7])
    assert fitted.in_domain(inside, [1, fitted.max_output_tokens_, 7]).all()


def test_feature_outside_its_range_warns_naming_it(fitted, inside):
    X = inside.copy()
    X.loc[1, "top_k"] = 10_000.0
    lo, hi = fitted.feature_range_[:, list(X.columns).index("top_k")]
    message = (
        rf"X column 'top_k' = 10000 \(sample 1\) is outside its training range "
        rf"\[{lo:g}, {hi:g}\] \(1 of 3 samples outside\)"
    )
    with pytest.warns(ExtrapolationWarning, match=message) as record:
        fitted.predict_total(X, 10)
    # The warning points at the caller's line, not into sklat.
    assert record[0].filename == __file__
    np.testing.assert_array_equal(fitted.in_domain(X), [True, False, True])


def test_lengths_and_positions_past_the_longest_request_warn(fitted, inside):
    longest = fitted.max_output_tokens_
    with pytest.warns(ExtrapolationWarning, match=rf"output_tokens {longest + 1} \(entry 2\)"):
        fitted.predict_total(inside, [1, 2, longest + 1])
    with pytest.warns(ExtrapolationWarning, match=rf"position {2 * longest} \(entry 1\)"):
        fitted.predict_positions(inside, [1, 2 * longest])
    with pytest.warns(ExtrapolationWarning, match="output_tokens_distribution value"):
        fitted.predict_budget(inside, "expectation", output_tokens_distribution=[longest + 5])
    np.testing.assert_array_equal(
        fitted.in_domain(inside, [1, longest, longest + 1]), [True, True, False]
    )


@pytest.mark.parametrize("value", [1e4, 1e6, 1e300])
def test_far_outside_every_output_is_finite_and_held_at_the_edge(fitted, inside, value):
    """The issue's top_k values: 2.5e21 ms, inf and NaN before."""
    X = inside.iloc[[2]].copy()
    X["top_k"] = value
    col = list(X.columns).index("top_k")
    edge = X.copy()
    edge["top_k"] = extended_range(
        fitted.feature_range_, fitted.feature_log_mask_, fitted.feature_log_shift_
    )[1, col]
    with pytest.warns(ExtrapolationWarning, match="evaluated at that edge"):
        outputs = _all_predictions(fitted, X, [50])
    for out in outputs:
        assert np.isfinite(out).all()
    with pytest.warns(ExtrapolationWarning):
        np.testing.assert_allclose(fitted.predict_total(X, 50), fitted.predict_total(edge, 50))


def test_extended_range_widens_by_the_range_in_log_units():
    mask, shift = np.array([True, True, False]), np.array([0.0, 1.0, 0.0])
    rng = np.array([[1.0, 0.0, -2.0], [8.0, 3.0, 4.0]])
    ext = extended_range(rng, mask, shift)
    np.testing.assert_allclose(ext[:, 0], [1 / 8, 64])
    # log1p: 1 + x in [1, 4] widens to [1/4, 16]; a count stays >= 0.
    np.testing.assert_allclose(ext[:, 1], [0.0, 15.0])
    np.testing.assert_allclose(ext[:, 2], [-8.0, 10.0])


def test_negative_count_is_an_error_not_a_number(fitted, inside):
    X = inside.iloc[[0]].copy()
    X["top_k"] = -1e30
    with pytest.raises(ValueError, match="X column 'top_k' was log-scaled at fit time"):
        fitted.predict_total(X, 10)


def test_a_constant_training_feature_is_held(small_data):
    d = small_data
    X = d.X.copy()
    X["tier_idx"] = 1
    est = LatencyEstimator(max_epochs=2, random_state=0).fit(X, d.y, output_tokens=d.output_tokens)
    other = X.iloc[:2].copy()
    other["tier_idx"] = 3
    with pytest.warns(ExtrapolationWarning, match=r"training range \[1, 1\]"):
        np.testing.assert_allclose(est.predict_total(other, 9), est.predict_total(X.iloc[:2], 9))


def test_zero_of_a_positive_count_is_held_at_the_edge(fitted, inside):
    """A 0 where training saw only positive values is outside the range, not
    an error (MAPIE's fitted-model check predicts on zeros)."""
    col = list(inside.columns).index("top_k")
    assert fitted.feature_log_shift_[col] == 0  # log(x): trained on values > 0
    X = inside.iloc[[0]].copy()
    X["top_k"] = 0.0
    with pytest.warns(ExtrapolationWarning, match="X column 'top_k' = 0"):
        assert np.isfinite(fitted.predict_total(X, 5)).all()
    X["top_k"] = -1.0
    with pytest.raises(
        ValueError, match="X column 'top_k' was log-scaled at fit time and needs values >= 0"
    ):
        fitted.predict_total(X, 5)
