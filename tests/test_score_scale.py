"""The scale of the conformity scores: Box-Cox powers, their choice, and the
intervals and probabilities computed on them."""

import numpy as np
import pytest

import sklat
from sklat import LatencyEstimator
from sklat._conformal import attainment, interval_rank, mixture_quantiles
from sklat._score_scale import (
    SCORE_POWERS,
    choose_power,
    cross_validated_width,
    score_of,
    shifted,
    to_scale,
)
from sklat.datasets import make_positioned_latency


@pytest.mark.parametrize("power", SCORE_POWERS)
def test_shifted_and_score_of_are_inverse(power):
    rng = np.random.RandomState(0)
    center = np.exp(rng.uniform(1, 9, 50))
    limit = center * np.exp(rng.normal(0, 0.3, 50))
    sigma = rng.uniform(0.5, 2, 50)
    np.testing.assert_allclose(
        shifted(center, sigma, score_of(limit, center, sigma, power), power), limit, rtol=1e-9
    )
    # A shift is monotone in the score, and zero is no shift.
    assert (shifted(center, sigma, 0.1, power) > center).all()
    np.testing.assert_allclose(shifted(center, sigma, 0.0, power), center, rtol=1e-12)


@pytest.mark.parametrize("power", [0.25, 0.5, 1.0])
def test_below_the_scale_a_latency_is_zero_not_negative(power):
    far_below = -2 * to_scale(10.0, power)
    assert shifted(np.array([10.0]), 1.0, far_below, power)[0] == 0.0


def _folds(n):
    return np.arange(n) % 5


def _noisy(kind, n=1000, seed=0):
    rng = np.random.RandomState(seed)
    predicted = np.exp(rng.uniform(np.log(300), np.log(30_000), n))
    noise = rng.normal(size=n)
    measured = {
        "relative": predicted * np.exp(0.1 * noise),
        "absolute": predicted + 100 * noise,
        "sqrt": predicted + 5 * np.sqrt(predicted) * noise,
    }[kind]
    return measured, predicted


def _chosen(measured, predicted):
    folds = _folds(len(measured))
    widths = {p: cross_validated_width(measured, predicted, folds, p) for p in SCORE_POWERS}
    return choose_power(widths)


def test_the_chosen_scale_follows_how_the_spread_grows():
    assert _chosen(*_noisy("relative")) == 0.0
    assert _chosen(*_noisy("absolute")) >= 0.75
    assert 0.25 <= _chosen(*_noisy("sqrt")) <= 0.75


@pytest.mark.parametrize("power", SCORE_POWERS)
def test_widths_are_equivariant_to_the_unit(power):
    measured, predicted = _noisy("sqrt")
    folds = _folds(len(measured))
    in_ms = cross_validated_width(measured, predicted, folds, power)
    in_s = cross_validated_width(measured / 1000, predicted / 1000, folds, power)
    assert in_s == pytest.approx(in_ms / 1000, rel=1e-9)


def test_log_errors_are_kept_without_a_clear_gain():
    assert choose_power({0.0: 100.0, 0.5: 96.0, 1.0: None}) == 0.0
    assert choose_power({0.0: 100.0, 0.5: 94.0, 1.0: 99.0}) == 0.5
    assert choose_power({0.0: None, 0.5: 10.0}) == 0.0
    # Ten requests in five folds: eight bound each fold, too few for 90%.
    measured, predicted = _noisy("absolute", n=10)
    assert cross_validated_width(measured, predicted, _folds(10), 1.0) is None
    assert cross_validated_width(measured, predicted, np.zeros(10, dtype=int), 1.0) is None


def _pooled_quantiles(center, sigma, weights, scores, levels, power, divisor):
    """The exact weighted quantiles of every (length, score) value of one row."""
    values = np.concatenate(
        [shifted(c, s, scores, power) / d for c, s, d in zip(center, sigma, divisor)]
    )
    w = np.repeat(weights / len(scores), len(scores))
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(w[order])
    return [values[order][np.searchsorted(cumulative, level - 1e-12)] for level in levels]


# J lengths x n scores, rows, levels: the sorted support, bisection, and a
# few quantiles narrowed by bisection and read off.
@pytest.mark.parametrize(
    "J, n, rows, levels",
    [(3, 40, 4, [0.05, 0.5, 0.95]), (1500, 200, 3, [0.1, 0.5, 0.9]), (100, 200, 1, [0.2, 0.8])],
)
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_mixture_quantiles_on_any_scale_are_weighted_quantiles(J, n, rows, levels, power):
    rng = np.random.RandomState(J)
    scores = np.sort(rng.normal(0, 1, n)) * (0.2 if power == 0 else 3.0)
    center = np.exp(rng.uniform(3, 6, (rows, J)))
    sigma = rng.uniform(0.5, 1.5, (rows, J))
    divisor = np.tile(rng.randint(1, 300, J).astype(float), (rows, 1))
    weights = rng.dirichlet(np.ones(J))
    got = mixture_quantiles(center, sigma, weights, scores, levels, power=power, divisor=divisor)
    for r in range(rows):
        row = (center[r], sigma[r], weights, scores, levels, power, divisor[r])
        expected = _pooled_quantiles(*row)
        np.testing.assert_allclose(got[r], expected, rtol=1e-9)


@pytest.mark.parametrize("with_e2e", [False, True])
def test_attainment_on_any_scale_counts_the_calibration_requests(with_e2e):
    rng = np.random.RandomState(1)
    rows, J, n = 6, 3, 30
    scores = np.column_stack([rng.normal(0, 2, n), rng.normal(0, 0.1, n)])
    powers = (0.5, 0.25)
    total = np.exp(rng.uniform(5, 7, (rows, J)))
    total_sigma = rng.uniform(0.5, 1.5, (rows, J))
    lengths = np.tile([16.0, 64.0, 256.0], (rows, 1))
    weights = np.array([0.2, 0.5, 0.3])
    prefill, prefill_sigma = np.exp(rng.uniform(3, 4, rows)), rng.uniform(0.5, 1.5, rows)
    ttft, tpot = prefill * 1.1, np.median(total / lengths, axis=1)
    e2e = np.median(total, axis=1) + prefill if with_e2e else None
    got = attainment(
        prefill=prefill,
        prefill_sigma=prefill_sigma,
        total=total,
        total_sigma=total_sigma,
        lengths=lengths,
        weights=weights,
        scores=scores,
        ttft=ttft,
        tpot=tpot,
        e2e=e2e,
        powers=powers,
    )
    for r in range(rows):
        pre = shifted(prefill[r], prefill_sigma[r], scores[:, 1], powers[1])
        met = 0.0
        for j in range(J):
            dec = shifted(total[r, j], total_sigma[r, j], scores[:, 0], powers[0])
            ok = (pre <= ttft[r]) & (dec / lengths[r, j] <= tpot[r])
            if with_e2e:
                ok &= pre + dec <= e2e[r]
            met += weights[j] * ok.mean()
        assert got[r] == pytest.approx(met, rel=1e-12)


@pytest.fixture(scope="module")
def additive():
    """Requests of decode totals from 500 ms whose decode jitters by an
    absolute amount (150 ms): 30% of the shortest, 1.5% of the longest."""
    d = make_positioned_latency(
        3000, noise=0.0, max_output_tokens=128, random_state=5, positioned_fraction=0.0
    )
    keep = np.flatnonzero(d.y["T_LLM_decode"].to_numpy() >= 500)[:1400]
    X, y = d.X.iloc[keep].reset_index(drop=True), d.y.iloc[keep].reset_index(drop=True)
    rng = np.random.RandomState(0)
    y["T_LLM_decode"] += rng.normal(0, 150, len(y))
    return X, y, d.output_tokens[keep]


@pytest.fixture(scope="module")
def additive_fitted(additive):
    X, y, n = additive
    est = LatencyEstimator(max_epochs=40, random_state=0, n_folds=None)
    return est.fit(X.iloc[:700], y.iloc[:700], output_tokens=n[:700])


def test_absolute_jitter_calibrates_on_a_power_scale_and_covers(additive, additive_fitted):
    X, y, n = additive
    est = additive_fitted
    assert est.score_powers_.shape == (2,) and est.score_powers_[0] >= 0.5
    X, n = X.iloc[700:], n[700:]
    bounds = est.predict_interval(X, n, confidence=0.9)
    truth = y["T_LLM_decode"].to_numpy()[700:]
    # 140 calibration requests: one draw's coverage varies by about 2.5 points.
    assert 0.84 <= np.mean((bounds[:, 0] <= truth) & (truth <= bounds[:, 1])) <= 0.97
    assert (bounds[:, 0] >= 0).all() and (bounds[:, 0] < bounds[:, 1]).all()
    # Intervals and probabilities come from one predictive distribution: the
    # upper bound of an interval is met by the calibration requests whose
    # score is at most the interval's.
    upper = est.predict_interval(X, n, target="per_token", confidence=0.8)[:, 1]
    p = est.predict_slo_attainment(X, output_tokens=n, tpot_ms=upper)
    scores = est.conformity_scores_[:, 0]
    q = np.sort(np.abs(scores))[interval_rank(len(scores), 0.8, "") - 1]
    assert (p >= np.mean(scores < q) - 1e-12).all() and (p <= np.mean(scores <= q) + 1e-12).all()


def test_the_scale_is_saved_and_loaded(additive_fitted, additive, tmp_path):
    X, _, n = additive
    path = tmp_path / "model.safetensors"
    sklat.save(additive_fitted, path)
    loaded = sklat.load(path)
    np.testing.assert_array_equal(loaded.score_powers_, additive_fitted.score_powers_)
    X, n = X.iloc[700:720], n[700:720]
    np.testing.assert_array_equal(
        loaded.predict_interval(X, n), additive_fitted.predict_interval(X, n)
    )
