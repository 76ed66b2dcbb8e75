"""LatencyEstimator.recalibrate: a fitted model moved to a new setting."""

import copy

import numpy as np
import pytest

import sklat
from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency


@pytest.fixture(scope="module")
def moved(small_data):
    """The fixture's requests in a 'new setting': every decode term and the
    prefill 1.6x slower, with the same noise."""
    d = small_data
    y = d.y.copy()
    y["T_LLM_decode"] *= 1.6
    y["T_prefill_total"] *= 1.3
    return d.X, y, d.output_tokens


def _unscaled_terms(est, X, n):
    """``(decode cost terms, standardised features)`` of requests under
    ``est``'s curve without a recalibration's multipliers and slopes: what
    recalibration fits."""
    coef = est._curve.encode(X.to_numpy(dtype=float), scaled=False, warn=False)
    return est._curve.total_terms(coef, n), coef.z


def test_a_uniform_slowdown_is_learnt_from_a_few_requests(fitted, moved):
    X, y, n = moved
    est = copy.deepcopy(fitted).recalibrate(X.iloc[:20], y.iloc[:20], n[:20])
    # The decode terms move together (each within 15% of the 1.6x applied).
    np.testing.assert_allclose(est.cost_scales_[:3], 1.6, rtol=0.15)
    ratio = est.predict_prefill(X.iloc[20:]) / fitted.predict_prefill(X.iloc[20:])
    np.testing.assert_allclose(np.median(ratio), 1.3, rtol=0.1)
    before = sklat.metrics.mape(
        y["T_LLM_decode"].iloc[20:], fitted.predict_total(X.iloc[20:], n[20:])
    )
    after = sklat.metrics.mape(y["T_LLM_decode"].iloc[20:], est.predict_total(X.iloc[20:], n[20:]))
    assert after < 0.5 * before
    # The shape is kept: the curve moves by the decode multipliers alone
    # (times each configuration's exp(z @ slopes)).
    z = fitted._curve.transform.transform(X.iloc[:3].to_numpy(float), str)
    row = np.exp(z @ est.scale_slopes_[0])[:, None]
    ratio = est.predict_positions(X.iloc[:3], [1, 50]) / fitted.predict_positions(
        X.iloc[:3], [1, 50]
    )
    assert (ratio >= row * est.cost_scales_[:3].min() - 1e-9).all()
    assert (ratio <= row * est.cost_scales_[:3].max() + 1e-9).all()
    # Scores are the new requests' own.
    assert est.conformity_scores_.shape == (20, 2)


def test_recalibration_is_persisted_and_the_original_untouched(fitted, moved, tmp_path):
    X, y, n = moved
    est = copy.deepcopy(fitted).recalibrate(X.iloc[:30], y.iloc[:30], n[:30])
    assert (fitted.cost_scales_ == 1).all()
    sklat.save(est, tmp_path / "m.safetensors")
    loaded = sklat.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.cost_scales_, est.cost_scales_)
    np.testing.assert_allclose(loaded.predict(X, n), est.predict(X, n), rtol=1e-12)
    np.testing.assert_allclose(
        loaded.predict_interval(X, n, confidence=0.9), est.predict_interval(X, n, confidence=0.9)
    )


def test_cross_fitted_scores_are_leave_one_out(fitted, moved):
    # The score of request i is its log error under factors fitted without it.
    from sklat import _recalibration

    X, y, n = moved
    est = copy.deepcopy(fitted).recalibrate(X.iloc[:12], y.iloc[:12], n[:12])
    terms, _ = _unscaled_terms(fitted, X.iloc[:12], n[:12])
    decode = y["T_LLM_decode"].to_numpy()[:12]
    keep = np.arange(1, 12)
    factors = _recalibration.fit_factors(terms[keep], decode[keep])
    expected = np.log(decode[0]) - np.log(terms[0] @ factors.multipliers)
    np.testing.assert_allclose(est.conformity_scores_[0, 0], expected, rtol=1e-6)
    # Fewer than 20 requests: no slopes.
    assert (est.scale_slopes_ == 0).all()


def test_a_slowdown_that_grows_with_a_feature_is_learnt(fitted, small_data, tmp_path):
    # A new setting where the slowdown grows with top_k (a wider expert
    # layer): decode x top_k ** 0.4. Multipliers of the cost terms alone
    # cannot say that; the slopes can, and the choice keeps them.
    from sklat import _recalibration

    d = small_data
    y = d.y.copy()
    y["T_LLM_decode"] *= d.X["top_k"].to_numpy() ** 0.4
    X, n = d.X, d.output_tokens
    est = copy.deepcopy(fitted).recalibrate(X.iloc[:40], y.iloc[:40], n[:40])
    top_k = list(X.columns).index("top_k")
    slopes = est.scale_slopes_[0]
    assert slopes[top_k] > 0.1
    assert np.abs(np.delete(slopes, top_k)).max() < 0.5 * slopes[top_k]
    assert (est.scale_slopes_[1] == 0).all() or np.abs(est.scale_slopes_[1]).max() < 0.1
    # Better on other requests than multipliers alone (no slopes).
    terms, z = _unscaled_terms(fitted, X.iloc[:40], n[:40])
    plain = _recalibration.fit_factors(terms, y["T_LLM_decode"].to_numpy()[:40], z)
    test = slice(40, None)
    measured = y["T_LLM_decode"].to_numpy()[test]
    without = sklat.metrics.mape(
        measured, plain.predict(*_unscaled_terms(fitted, X.iloc[test], n[test]))
    )
    with_slopes = sklat.metrics.mape(measured, est.predict_total(X.iloc[test], n[test]))
    assert with_slopes < 0.8 * without
    # Every closed form still holds: totals are the sums of the positions.
    positions = est.predict_positions(X.iloc[:5], np.arange(1, n[:5].max() + 1))
    sums = [positions[i, : n[i]].sum() for i in range(5)]
    np.testing.assert_allclose(est.predict_total(X.iloc[:5], n[:5]), sums, rtol=1e-9)
    # The slopes are saved with the model.
    sklat.save(est, tmp_path / "m.safetensors")
    loaded = sklat.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.scale_slopes_, est.scale_slopes_)
    np.testing.assert_allclose(loaded.predict(X, n), est.predict(X, n), rtol=1e-12)


def test_the_slopes_penalty_is_chosen_by_cross_fitted_error(fitted, moved):
    # From 20 requests the scores are the leave-one-out errors of the
    # candidate penalty (or no slopes) with the least mean squared error.
    from sklat import _recalibration

    X, y, n = moved
    est = copy.deepcopy(fitted).recalibrate(X.iloc[:24], y.iloc[:24], n[:24])
    terms, z = _unscaled_terms(fitted, X.iloc[:24], n[:24])
    decode = y["T_LLM_decode"].to_numpy()[:24]
    candidates = [
        _recalibration.cross_fitted_log_errors(terms, z, decode, penalty)
        for penalty in (None, *_recalibration.SLOPE_PENALTIES)
    ]
    best = int(np.argmin([np.mean(e**2) for e in candidates]))
    np.testing.assert_allclose(est.conformity_scores_[:, 0], candidates[best], rtol=1e-9)
    assert (est.scale_slopes_[0] == 0).all() == (best == 0)


def test_intervals_of_a_recalibrated_model_cover(small_data):
    # A model fitted on one family, moved to requests 1.5x slower: a 90%
    # interval from 50 recalibration requests covers about 90% of 250 others.
    # One draw of 50 varies by about 4 points; the mean of four draws is judged.
    d = small_data
    est = LatencyEstimator(max_epochs=30, random_state=0).fit(
        d.X, d.y, output_tokens=d.output_tokens
    )
    coverages = []
    for seed in (5, 6, 7, 8):
        new = make_positioned_latency(300, noise=0.05, max_output_tokens=256, random_state=seed)
        y = new.y.copy() * 1.5
        moved = copy.deepcopy(est).recalibrate(new.X.iloc[:50], y.iloc[:50], new.output_tokens[:50])
        bounds = moved.predict_interval(new.X.iloc[50:], new.output_tokens[50:], confidence=0.9)
        coverages.append(sklat.metrics.interval_coverage(y["T_LLM_decode"].to_numpy()[50:], bounds))
    assert 0.8 <= np.mean(coverages) <= 0.98


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda e, X, y, n: e.recalibrate(X, y), "recalibrate needs output_tokens"),
        (lambda e, X, y, n: e.recalibrate(X.iloc[:1], y.iloc[:1], n[:1]), "at least 2 requests"),
        (
            lambda e, X, y, n: e.recalibrate(X, y["T_LLM_decode"], n),
            r"y must have 2 column\(s\), as in fit; got 1",
        ),
        (lambda e, X, y, n: e.recalibrate(X, y, n[:-1]), "output_tokens has 299 entries"),
    ],
)
def test_bad_recalibration_input(fitted, moved, call, message):
    X, y, n = moved
    with pytest.raises(ValueError, match=message):
        call(copy.deepcopy(fitted), X, y, n)


def test_unfitted_model_cannot_be_recalibrated(moved):
    from sklearn.exceptions import NotFittedError

    X, y, n = moved
    with pytest.raises(NotFittedError):
        LatencyEstimator().recalibrate(X, y, n)


def test_a_decode_only_model_gets_decode_slopes(fitted_1d, small_data, tmp_path):
    d = small_data
    y = d.y["T_LLM_decode"].to_numpy() * d.X["top_k"].to_numpy() ** 0.4
    est = copy.deepcopy(fitted_1d).recalibrate(d.X.iloc[:40], y[:40], d.output_tokens[:40])
    assert est.scale_slopes_.shape == (1, d.X.shape[1])
    assert est.scale_slopes_[0, list(d.X.columns).index("top_k")] > 0.1
    sklat.save(est, tmp_path / "m.safetensors")
    loaded = sklat.load(tmp_path / "m.safetensors")
    np.testing.assert_allclose(
        loaded.predict_total(d.X, d.output_tokens), est.predict_total(d.X, d.output_tokens)
    )


def test_too_few_requests_warn_and_the_interval_error_says_what_to_do(fitted, moved):
    X, y, n = moved
    with pytest.warns(UserWarning, match="recalibrate got 5 requests: .* at 90% need at least 9"):
        est = copy.deepcopy(fitted).recalibrate(X.iloc[:5], y.iloc[:5], n[:5])
    with pytest.raises(ValueError, match="a recalibrated model: recalibrate it on more requests"):
        est.predict_interval(X.iloc[:2], output_tokens=8, confidence=0.9)
