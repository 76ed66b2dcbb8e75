"""Calibrated intervals, SLO attainment and the confidence of budgets."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import check_random_state

from sklat import LatencyEstimator
from sklat._conformal import interval_rank, mixture_quantiles
from sklat._splits import calibration_split, measurement_groups
from sklat.datasets import make_positioned_latency
from sklat.exceptions import ExtrapolationWarning


def _calibration_rows(est, data):
    """The rows of ``data`` (a dataset Bunch) that ``est`` calibrated on, drawn
    as fit draws them."""
    seed = int(check_random_state(est.random_state).randint(2**31 - 1))
    groups = measurement_groups(data.X.to_numpy(np.float64), data.output_tokens)
    return calibration_split(len(data.X), est.calibration_fraction, seed, groups)[1]


@pytest.fixture(scope="module")
def split_fitted(small_data):
    """The fixture model fitted as one net, calibrated on set-aside requests."""
    d = small_data
    return LatencyEstimator(max_epochs=30, random_state=0, n_folds=None).fit(
        d.X, d.y, output_tokens=d.output_tokens, positioned_latencies=d.positioned_latencies
    )


@pytest.fixture(scope="module")
def cal(split_fitted, small_data):
    """The split model's calibration requests."""
    rows = _calibration_rows(split_fitted, small_data)
    d = small_data
    return (
        d.X.iloc[rows],
        d.y.iloc[rows],
        d.output_tokens[rows],
    )


def test_calibration_requests_are_held_out_of_the_fit(split_fitted, small_data, cal):
    fitted = split_fitted
    assert len(fitted.conformity_scores_) == int(0.2 * len(small_data.X)) == len(cal[0])
    # The fitted ranges and lengths are those of the other requests.
    fit_rows = np.setdiff1d(np.arange(len(small_data.X)), cal[0].index)
    X_fit = small_data.X.iloc[fit_rows].to_numpy()
    np.testing.assert_array_equal(fitted.feature_range_, [X_fit.min(0), X_fit.max(0)])
    assert fitted.max_output_tokens_ == small_data.output_tokens[fit_rows].max()


@pytest.mark.parametrize("target", ["total", "per_token", "prefill"])
@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95])
def test_calibration_requests_hold_the_rank_share_exactly(split_fitted, cal, target, confidence):
    """On its own calibration requests an interval holds exactly the scores
    between its two ranks: the scores, the difficulty model and the bounds
    agree with one another."""
    X, y, n = cal
    truth = {
        "total": y["T_LLM_decode"].to_numpy(),
        "per_token": y["T_LLM_decode"].to_numpy() / n,
        "prefill": y["T_prefill_total"].to_numpy(),
    }[target]
    bounds = split_fitted.predict_interval(X, n, target=target, confidence=confidence)
    k = interval_rank(len(n), confidence, "")
    inside = (bounds[:, 0] <= truth * (1 + 1e-9)) & (truth <= bounds[:, 1] * (1 + 1e-9))
    assert inside.sum() == k


def test_intervals_are_ordered_nested_positive_and_float64(fitted, small_data):
    X, n = small_data.X.iloc[:40], small_data.output_tokens[:40]
    narrow = fitted.predict_interval(X, n, confidence=0.5)
    wide = fitted.predict_interval(X, n, confidence=0.95)
    assert narrow.dtype == np.float64 and narrow.shape == (40, 2)
    assert (narrow[:, 0] > 0).all() and (narrow[:, 0] <= narrow[:, 1]).all()
    assert (wide[:, 0] <= narrow[:, 0]).all() and (wide[:, 1] >= narrow[:, 1]).all()


def test_per_token_is_the_total_over_n(fitted, small_data):
    X, n = small_data.X.iloc[:20], small_data.output_tokens[:20]
    np.testing.assert_allclose(
        fitted.predict_interval(X, n, target="per_token"),
        fitted.predict_interval(X, n) / n[:, None],
        rtol=1e-12,
    )


def test_output_tokens_column_and_argument_agree(fitted, small_data):
    X, n = small_data.X.iloc[:10], small_data.output_tokens[:10]
    with_column = X.assign(output_tokens=n)
    np.testing.assert_array_equal(
        fitted.predict_interval(with_column), fitted.predict_interval(X, n)
    )


def test_unknown_length_mixes_over_the_distribution(fitted, small_data):
    X = small_data.X.iloc[:10]
    # A one-point distribution is a known length.
    np.testing.assert_allclose(
        fitted.predict_interval(X, output_tokens_distribution=[64]),
        fitted.predict_interval(X, 64),
        rtol=1e-12,
    )
    mixed = fitted.predict_interval(X, output_tokens_distribution=[16, 128])
    short, long = fitted.predict_interval(X, 16), fitted.predict_interval(X, 128)
    # The mixture's bounds lie between those of its components.
    assert (mixed[:, 0] >= short[:, 0] - 1e-9).all() and (mixed[:, 1] <= long[:, 1] + 1e-9).all()
    assert (mixed[:, 1] > short[:, 1]).all()


def test_mixture_quantiles_are_weighted_quantiles():
    """Bisection finds the exact order statistic of the pooled values."""
    scores = np.sort(np.random.RandomState(0).normal(size=50))
    center, sigma = np.array([[10.0, 20.0]]), np.array([[0.1, 0.2]])
    values = np.concatenate([c * np.exp(s * scores) for c, s in zip(center[0], sigma[0])])
    weights = np.concatenate([np.full(50, 0.3 / 50), np.full(50, 0.7 / 50)])
    order = np.argsort(values)
    levels = [0.05, 0.5, 0.95]
    got = mixture_quantiles(center, sigma, np.array([0.3, 0.7]), scores, levels)
    for j, level in enumerate(levels):
        expected = values[order][np.searchsorted(np.cumsum(weights[order]), level - 1e-12)]
        assert got[0, j] == pytest.approx(expected, rel=1e-12)
    # One length: the order statistic itself.
    one = mixture_quantiles(center[:, :1], sigma[:, :1], np.ones(1), scores, [3 / 50])
    assert one[0, 0] == pytest.approx(10.0 * np.exp(0.1 * scores[2]), rel=1e-15)


def test_width_adapts_to_where_the_model_is_less_sure():
    """Noise 2% on tier 0 and 20% on tier 2: the intervals follow."""
    d = make_positioned_latency(
        800, noise=0.0, max_output_tokens=128, random_state=3, positioned_fraction=0.0
    )
    rng = np.random.RandomState(0)
    noise = np.where(d.X["tier_idx"].to_numpy() == 2, 0.2, 0.02)
    y = d.y.copy()
    y["T_LLM_decode"] *= np.exp(noise * rng.normal(size=len(y)))
    y["T_prefill_total"] *= np.exp(noise * rng.normal(size=len(y)))
    est = LatencyEstimator(max_epochs=40, random_state=0).fit(d.X, y, output_tokens=d.output_tokens)
    bounds = est.predict_interval(d.X, d.output_tokens, confidence=0.9)
    relative = np.log(bounds[:, 1] / bounds[:, 0])
    noisy = d.X["tier_idx"].to_numpy() == 2
    assert relative[noisy].mean() > 3 * relative[~noisy].mean()


def test_coverage_on_fresh_requests():
    """On 2000 requests drawn like the training ones, coverage is near nominal.
    With 400 calibration requests, the coverage of one calibration draw has a
    standard deviation of about 2 points: 6 points of slack."""
    train = make_positioned_latency(
        1000, noise=0.05, positioned_fraction=0.5, max_output_tokens=256, random_state=5
    )
    est = LatencyEstimator(max_epochs=20, calibration_fraction=0.4, random_state=0)
    est.fit(
        train.X,
        train.y,
        output_tokens=train.output_tokens,
        positioned_latencies=train.positioned_latencies,
    )
    d = make_positioned_latency(
        2000, noise=0.05, positioned_fraction=1.0, max_output_tokens=256, random_state=99
    )
    for target, y in (("total", d.y["T_LLM_decode"]), ("prefill", d.y["T_prefill_total"])):
        for confidence in (0.8, 0.9, 0.95):
            bounds = est.predict_interval(
                d.X, d.output_tokens, target=target, confidence=confidence
            )
            coverage = np.mean((bounds[:, 0] <= y) & (y <= bounds[:, 1]))
            assert abs(coverage - confidence) < 0.06, (target, confidence, coverage)
    # Per step: the share of each request's steps inside, averaged over requests.
    rows = np.arange(300)
    n = d.output_tokens[rows]
    positions = np.arange(1, n.max() + 1)
    for confidence in (0.8, 0.9):
        bounds = est.predict_interval(
            d.X.iloc[rows], target="position", positions=positions, confidence=confidence
        )
        shares = [
            np.mean((bounds[i, : n[i], 0] <= steps) & (steps <= bounds[i, : n[i], 1]))
            for i, steps in zip(rows, (d.positioned_latencies[i] for i in rows))
        ]
        assert abs(np.mean(shares) - confidence) < 0.06, (confidence, np.mean(shares))


def test_too_few_calibration_requests(small_data):
    d = small_data
    est = LatencyEstimator(max_epochs=2, random_state=0, calibration_fraction=0.05, n_folds=None)
    est.fit(d.X.iloc[:200], d.y.iloc[:200], output_tokens=d.output_tokens[:200])
    est.predict_interval(d.X.iloc[:3], 10, confidence=0.9)  # 10 requests: 9 are enough
    with pytest.raises(ValueError, match="confidence=0.95 needs at least 19 calibration requests"):
        est.predict_interval(d.X.iloc[:3], 10, confidence=0.95)
    with pytest.raises(ValueError, match="confidence=0.95 needs at least 19 calibration requests"):
        est.predict_budget(d.X.iloc[:3], confidence=0.95)


def test_no_calibration_requests(small_data):
    d = small_data
    est = LatencyEstimator(max_epochs=2, random_state=0, calibration_fraction=0.0, n_folds=None)
    est.fit(d.X.iloc[:100], d.y.iloc[:100], output_tokens=d.output_tokens[:100])
    assert est.conformity_scores_.shape == (0, 2)
    assert est.predict_total(d.X.iloc[:2], 5).shape == (2,)
    for call in (
        lambda: est.predict_interval(d.X.iloc[:2], 5),
        lambda: est.predict_slo_attainment(d.X.iloc[:2], tpot_ms=5.0, output_tokens=5),
    ):
        with pytest.raises(ValueError, match="holds no calibration requests"):
            call()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": "median"}, "target must be one of"),
        ({"confidence": 1.0}, r"confidence must be a number in \(0, 1\)"),
        ({"confidence": 0}, r"confidence must be a number in \(0, 1\)"),
        ({"confidence": "90%"}, r"confidence must be a number in \(0, 1\)"),
        ({"confidence": True}, r"confidence must be a number in \(0, 1\)"),
        ({"output_tokens_distribution": [3]}, "not both"),
    ],
)
def test_bad_interval_arguments(fitted, small_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fitted.predict_interval(small_data.X.iloc[:2], 5, **kwargs)


def test_prefill_interval_needs_a_prefill_head(fitted_1d, small_data):
    with pytest.raises(ValueError, match="has no prefill head"):
        fitted_1d.predict_interval(small_data.X.iloc[:2], target="prefill")
    with pytest.raises(ValueError, match="has no prefill head"):
        fitted_1d.predict_slo_attainment(small_data.X.iloc[:2], ttft_ms=10.0)
    p = fitted_1d.predict_slo_attainment(small_data.X.iloc[:2], tpot_ms=1e9, output_tokens=5)
    np.testing.assert_array_equal(p, [1.0, 1.0])


# ------------------------------------------------------------------ SLOs
def test_attainment_is_a_monotone_probability(fitted, small_data):
    X, n = small_data.X.iloc[:30], small_data.output_tokens[:30]
    per_token = fitted.predict_total(X, n) / n
    previous = np.zeros(len(X))
    for factor in (0.5, 0.9, 1.0, 1.1, 2.0):
        p = fitted.predict_slo_attainment(X, tpot_ms=factor * per_token, output_tokens=n)
        assert p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
        assert (p >= previous).all()
        previous = p
    assert (previous == 1).all()
    tiny = fitted.predict_slo_attainment(X, tpot_ms=1e-6, ttft_ms=1e-6, output_tokens=n)
    np.testing.assert_array_equal(tiny, 0.0)


def test_attainment_matches_the_interval_ranks(fitted, small_data):
    """Meeting a TPOT objective set at an interval's upper bound has the
    probability that a calibration score lies at or below that bound's score."""
    X, n = small_data.X.iloc[:15], small_data.output_tokens[:15]
    scores = fitted.conformity_scores_[:, 0]
    upper = fitted.predict_interval(X, n, target="per_token", confidence=0.8)[:, 1]
    k = interval_rank(len(scores), 0.8, "")
    bound = np.sort(np.abs(scores))[k - 1]
    p = fitted.predict_slo_attainment(X, tpot_ms=upper * (1 + 1e-9), output_tokens=n)
    np.testing.assert_allclose(p, np.mean(scores <= bound))


def test_joint_objectives_are_at_most_each_one(fitted, small_data):
    X, n = small_data.X.iloc[:30], small_data.output_tokens[:30]
    ttft = np.median(fitted.predict_prefill(X))
    tpot = np.median(fitted.predict_total(X, n) / n)
    both = fitted.predict_slo_attainment(X, ttft_ms=ttft, tpot_ms=tpot, output_tokens=n)
    one = fitted.predict_slo_attainment(X, ttft_ms=ttft, output_tokens=n)
    other = fitted.predict_slo_attainment(X, tpot_ms=tpot, output_tokens=n)
    assert (both <= np.minimum(one, other) + 1e-12).all()
    e2e = fitted.predict_slo_attainment(X, e2e_ms=1e9, output_tokens=n)
    np.testing.assert_array_equal(e2e, 1.0)


def test_attainment_with_unknown_length_averages_the_known_ones(fitted, small_data):
    X = small_data.X.iloc[:10]
    tpot = float(np.median(fitted.predict_total(X, 64) / 64))
    mixed = fitted.predict_slo_attainment(
        X,
        tpot_ms=tpot,
        output_tokens_distribution={"values": [8, 64], "probabilities": [0.25, 0.75]},
    )
    short = fitted.predict_slo_attainment(X, tpot_ms=tpot, output_tokens=8)
    long = fitted.predict_slo_attainment(X, tpot_ms=tpot, output_tokens=64)
    np.testing.assert_allclose(mixed, 0.25 * short + 0.75 * long)


def _record_every_pair(monkeypatch):
    """The number of rows of each call of ``_conformal._every_pair``, which
    goes on working."""
    from sklat import _conformal

    rows, every_pair = [], _conformal._every_pair

    def recorded(prefill, *args):
        rows.append(len(prefill))
        return every_pair(prefill, *args)

    monkeypatch.setattr(_conformal, "_every_pair", recorded)
    return rows


@pytest.mark.parametrize("with_tpot", [False, True])
def test_end_to_end_attainment_of_a_fitted_model_is_the_same_on_both_paths(
    monkeypatch, fitted, small_data, with_tpot
):
    # N unknown, over the fitted output-length distribution: the sorted
    # counts and every (length, request) pair give the same probabilities.
    from sklat import _conformal

    X = small_data.X.iloc[:20]
    e2e = np.median(fitted.predict(X).sum(axis=1))
    kwargs = dict(e2e_ms=e2e, ttft_ms=np.median(fitted.predict(X)[:, 0]) * 1.05)
    if with_tpot:
        kwargs["tpot_ms"] = float(np.median(fitted.predict_total(X, 64) / 64))
    paired_rows = _record_every_pair(monkeypatch)
    monkeypatch.setattr(_conformal, "_COUPLED_PAIRS", 0)
    sorted_counts = fitted.predict_slo_attainment(X, **kwargs)
    # The fitted time per token grows with the output length: no candidate
    # needs every pair.
    assert paired_rows == []
    monkeypatch.setattr(_conformal, "_COUPLED_PAIRS", np.inf)
    pairs = fitted.predict_slo_attainment(X, **kwargs)
    np.testing.assert_allclose(sorted_counts, pairs, atol=1e-12)
    assert 0 < pairs.mean() < 1


@pytest.mark.parametrize("with_tpot", [False, True])
def test_end_to_end_attainment_ignores_the_order_of_the_lengths(
    monkeypatch, fitted, small_data, with_tpot
):
    # A distribution's lengths in any order: the sorted paths (which rely on
    # the totals growing with the length, or fall back to every pair) agree.
    from sklat import _conformal

    monkeypatch.setattr(_conformal, "_COUPLED_PAIRS", 0)
    X = small_data.X.iloc[:10]
    kwargs = dict(e2e_ms=np.median(fitted.predict(X).sum(axis=1)))
    if with_tpot:
        kwargs["tpot_ms"] = float(np.median(fitted.predict_total(X, 64) / 64))
    values, probabilities = [8, 30, 64, 200], [0.1, 0.2, 0.3, 0.4]
    ordered = fitted.predict_slo_attainment(
        X, output_tokens_distribution={"values": values, "probabilities": probabilities}, **kwargs
    )
    shuffled = fitted.predict_slo_attainment(
        X,
        output_tokens_distribution={"values": values[::-1], "probabilities": probabilities[::-1]},
        **kwargs,
    )
    np.testing.assert_allclose(shuffled, ordered, atol=1e-12)
    assert 0 < ordered.mean() < 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give at least one objective"),
        ({"tpot_ms": -1.0}, r"tpot_ms must be positive latencies \(> 0\)"),
        ({"ttft_ms": np.nan}, r"ttft_ms must be finite"),
        (
            {"e2e_ms": [1.0, 2.0, 3.0]},
            r"e2e_ms must be a number or have one entry per sample \(2\)",
        ),
        ({"tpot_ms": 5.0, "output_tokens_distribution": [4]}, "not both"),
    ],
)
def test_bad_objectives(fitted, small_data, kwargs, message):
    kwargs = {"output_tokens": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        fitted.predict_slo_attainment(small_data.X.iloc[:2], **kwargs)


# --------------------------------------------------------------- budgets
def test_budget_confidence_bounds_the_point(fitted, small_data):
    X = small_data.X.iloc[:20]
    for strategy in ("max", "position"):
        point = fitted.predict_budget(X, strategy)
        low = fitted.predict_budget(X, strategy, confidence=0.6)
        high = fitted.predict_budget(X, strategy, confidence=0.95)
        assert (high >= low).all() and (high > point).all()
    expectation = fitted.predict_budget(X, "expectation", confidence=0.9)
    assert (expectation > fitted.predict_budget(X, "expectation")).all()


def test_budget_expectation_upper_bound_is_the_per_token_quantile(fitted, small_data):
    X = small_data.X.iloc[:5]
    upper = fitted.predict_budget(X, "expectation", confidence=0.9, output_tokens_distribution=[32])
    attained = fitted.predict_slo_attainment(X, tpot_ms=upper * (1 + 1e-9), output_tokens=32)
    assert (attained >= 0.9).all()


def test_budget_max_reaches_the_long_positions_of_a_rising_curve(fitted, small_data):
    """The issue's case: a rising curve's maximum lies past position 20."""
    X = small_data.X.iloc[:20]
    probes = fitted.predict_budget(X, positions=[1, 5, 10, 20])
    curve = fitted.predict_positions(X, np.arange(1, 200))
    rising = curve[:, -1] > curve[:, 19]
    assert rising.any()
    assert (fitted.predict_budget(X)[rising] > probes[rising]).all()


def test_bad_output_tokens_quantile(fitted, small_data):
    with pytest.raises(ValueError, match=r"output_tokens_quantile must be a number in \(0, 1\)"):
        fitted.predict_budget(small_data.X.iloc[:2], output_tokens_quantile=1.5)


def test_intervals_survive_a_pipeline(small_data):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    d = small_data
    pipe = make_pipeline(FunctionTransformer(), LatencyEstimator(max_epochs=2, random_state=0))
    pipe.fit(d.X, d.y, latencyestimator__output_tokens=d.output_tokens)
    Xt = pipe[:-1].transform(d.X.iloc[:3])
    bounds = pipe[-1].predict_interval(pd.DataFrame(Xt, columns=d.X.columns), 10)
    assert bounds.shape == (3, 2)


def test_position_interval_brackets_the_curve(fitted, small_data):
    X = small_data.X.iloc[:4]
    positions = [1, 10, 100]
    bounds = fitted.predict_interval(X, target="position", positions=positions, confidence=0.8)
    # The centre is the curve's, about which the per-step scores were measured.
    curve = clone_with(fitted, point="center").predict_positions(X, positions)
    assert bounds.shape == (4, 3, 2) and bounds.dtype == np.float64
    # One log-symmetric factor for every step: lower * upper = curve ** 2.
    np.testing.assert_allclose(bounds[..., 0] * bounds[..., 1], curve**2, rtol=1e-10)
    ratio = bounds[..., 1] / curve
    assert (ratio > 1).all() and np.allclose(ratio, ratio[0, 0])
    wider = fitted.predict_interval(X, target="position", positions=positions, confidence=0.9)
    assert (wider[..., 1] >= bounds[..., 1]).all()


@pytest.mark.parametrize("target", ["position", "total", "per_token", "prefill"])
def test_intervals_do_not_depend_on_the_point(fitted, small_data, target):
    # The point factors move the point predictions only: every interval is
    # built about the curve's centre, where its scores were measured.
    assert not np.allclose(fitted.point_factors_, 1)
    X = small_data.X.iloc[:4]
    kwargs = {"positions": [1, 10, 100]} if target == "position" else {"output_tokens": 16}
    if target == "prefill":
        kwargs = {}
    got = {
        point: clone_with(fitted, point=point).predict_interval(
            X, target=target, confidence=0.8, **kwargs
        )
        for point in ("relative", "center")
    }
    np.testing.assert_array_equal(got["relative"], got["center"])


def clone_with(est, **params):
    """A copy of fitted ``est`` with other (post-fit) parameters."""
    return copy.deepcopy(est).set_params(**params)


def test_position_interval_errors(fitted, fitted_1d, small_data):
    X = small_data.X.iloc[:2]
    with pytest.raises(ValueError, match="positions= goes with target='position'"):
        fitted.predict_interval(X, 5, positions=[1])
    with pytest.raises(ValueError, match="positions= goes with target='position'"):
        fitted.predict_interval(X, target="position")
    with pytest.raises(ValueError, match="needs calibration requests with per-step data"):
        fitted_1d.predict_interval(X, target="position", positions=[1])


def _random_mixture(rows, J, n, seed):
    """``(center, sigma, weights, sorted scores)`` of a random mixture."""
    rng = np.random.RandomState(seed)
    center = np.exp(rng.normal(5, 1, (rows, J)))
    sigma = np.exp(rng.normal(0, 0.3, (rows, J)))
    return center, sigma, rng.dirichlet(np.ones(J)), np.sort(rng.normal(0, 0.2, n))


@pytest.mark.parametrize("J, n", [(2, 9), (13, 120), (211, 200)])
def test_sorted_and_bisected_mixture_quantiles_agree(monkeypatch, J, n):
    # The sorted support is exact; the bisection converges to float precision.
    from sklat import _conformal

    center, sigma, weights, scores = _random_mixture(20, J, n, seed=J)
    levels = [1e-4, 0.05, 0.5, 0.95, 1.0]
    exact = mixture_quantiles(center, sigma, weights, scores, levels)
    monkeypatch.setattr(_conformal, "_SORTED_SUPPORT", 0)
    bisected = mixture_quantiles(center, sigma, weights, scores, levels)
    np.testing.assert_allclose(exact, bisected, rtol=1e-11)
    # Every quantile is one of the mixture's values.
    values = np.log(center)[:, :, None] + sigma[:, :, None] * scores[None, None, :]
    gap = np.abs(np.log(exact)[:, :, None, None] - values[:, None, :, :]).min(axis=(2, 3))
    assert gap.max() < 1e-11


@pytest.mark.parametrize("objectives", [("tpot",), ("ttft",), ("tpot", "ttft")])
def test_threshold_attainment_counts_as_the_pairs_do(objectives):
    # Without an end-to-end objective each one is a threshold on a score; an
    # infinite e2e takes the path that evaluates every (length, request) pair.
    from sklat._conformal import attainment

    rng = np.random.RandomState(1)
    rows, J, n = 9, 5, 50
    kw = dict(
        prefill=np.exp(rng.normal(3, 0.3, rows)),
        prefill_sigma=np.exp(rng.normal(0, 0.2, rows)),
        total=np.exp(rng.normal(6, 0.5, (rows, J))),
        total_sigma=np.exp(rng.normal(0, 0.2, (rows, J))),
        lengths=np.tile(rng.randint(5, 300, J).astype(float), (rows, 1)),
        weights=rng.dirichlet(np.ones(J)),
        scores=rng.normal(0, 0.3, (n, 2)),
    )
    limits = {
        "tpot": kw["total"][:, 0] / kw["lengths"][:, 0] * np.exp(rng.normal(0, 0.2, rows)),
        "ttft": kw["prefill"] * np.exp(rng.normal(0, 0.2, rows)),
    }
    given = {k: limits[k] for k in objectives}
    fast = attainment(**kw, **given)
    pairs = attainment(**kw, **given, e2e=np.full(rows, np.inf))
    np.testing.assert_allclose(fast, pairs, atol=1e-12)
    assert 0 < fast.mean() < 1


@pytest.mark.parametrize("others", [(), ("ttft",), ("tpot",), ("tpot", "ttft")])
def test_end_to_end_attainment_sorted_counts_as_the_pairs_do(monkeypatch, others):
    # Above _COUPLED_PAIRS an end-to-end objective sorts each row's keys once
    # per difficulty. Rows of one difficulty and of a few, rows whose prefill
    # alone spends the objective, rows whose time per token grows with the
    # output (a first run of lengths met) and rows where it falls (every pair)
    # count as every pair does.
    from sklat import _conformal
    from sklat._conformal import attainment

    rng = np.random.RandomState(2)
    rows, J, n = 12, 40, 60
    lengths = np.arange(1.0, J + 1)
    # Per-position latencies that grow (rows 0-7) or fall (8-11) with the position.
    steps = np.exp(rng.normal(3, 0.3, (rows, 1)) + np.sort(rng.normal(0, 0.5, (rows, J)), axis=1))
    steps[8:] = steps[8:, ::-1]
    total = np.cumsum(steps, axis=1)
    levels = np.exp(rng.normal(0, 0.3, (rows, 3)))
    sigma = np.take_along_axis(levels, rng.randint(0, 3, (rows, J)), axis=1)
    one = [1, 4, 6, 9]  # of one difficulty, among rows of a few
    sigma[one] = levels[one, :1]
    kw = dict(
        prefill=np.exp(rng.normal(5, 0.3, rows)),
        prefill_sigma=np.exp(rng.normal(0, 0.2, rows)),
        total=total,
        total_sigma=sigma,
        lengths=np.tile(lengths, (rows, 1)),
        weights=rng.dirichlet(np.ones(J)),
        scores=rng.normal(0, 0.3, (n, 2)),
    )
    kw["scores"][::6, 0] = 0.1  # tied decode scores
    e2e = (kw["prefill"] + np.median(total, axis=1)) * np.exp(rng.normal(0, 0.3, rows))
    e2e[0] = kw["prefill"][0] * 0.5
    limits = {
        "ttft": kw["prefill"],
        "tpot": np.median(total / lengths, axis=1) * np.exp(rng.normal(0, 0.1, rows)),
    }
    given = {"e2e": e2e, **{k: limits[k] for k in others}}
    assert J * n > _conformal._COUPLED_PAIRS
    paired_rows = _record_every_pair(monkeypatch)
    sorted_counts = attainment(**kw, **given)
    # Only the rows whose time per token falls evaluate every pair.
    assert paired_rows == ([4] if "tpot" in others else [])
    monkeypatch.setattr(_conformal, "_COUPLED_PAIRS", J * n)
    pairs = attainment(**kw, **given)
    np.testing.assert_allclose(sorted_counts, pairs, atol=1e-12)
    assert sorted_counts[0] == 0
    assert 0 < sorted_counts[:8].mean() < 1
    assert 0 < sorted_counts[8:].mean() < 1


@pytest.mark.parametrize("J, n", [(211, 200), (1000, 100)])
def test_narrowed_quantiles_of_one_configuration_are_exact(monkeypatch, J, n):
    # One row and two levels take the narrowing path: the same bounds as the
    # bisection to float precision, each one of the mixture's values.
    from sklat import _conformal

    center, sigma, weights, scores = _random_mixture(1, J, n, seed=n)
    levels = [0.05, 0.95]
    narrowed = mixture_quantiles(center, sigma, weights, scores, levels)
    monkeypatch.setattr(_conformal, "_SORTED_SUPPORT", 0)
    monkeypatch.setattr(_conformal, "_FEW_QUANTILES", 0)
    np.testing.assert_allclose(
        narrowed, mixture_quantiles(center, sigma, weights, scores, levels), rtol=1e-12
    )
    values = np.log(center)[0][:, None] + sigma[0][:, None] * scores[None, :]
    assert np.abs(np.log(narrowed)[0][:, None, None] - values[None]).min(axis=(1, 2)).max() < 1e-12


def test_narrowed_quantiles_of_tied_values_are_exact(monkeypatch):
    # Lengths in pairs of equal centre and difficulty: every value of the
    # mixture is tied with another, and the running sum of weights that
    # finds the quantile among the narrowed values counts them one by one.
    from sklat import _conformal

    center, sigma, weights, scores = _random_mixture(1, 60, 400, seed=5)
    center, sigma = np.repeat(center, 2, axis=1), np.repeat(sigma, 2, axis=1)
    weights = np.repeat(weights, 2) / 2
    levels = [0.05, 0.5, 0.95]
    calls = []
    narrowed_path = _conformal._narrowed_mixture_quantiles

    def recorded(*args):
        calls.append(1)
        return narrowed_path(*args)

    monkeypatch.setattr(_conformal, "_narrowed_mixture_quantiles", recorded)
    narrowed = mixture_quantiles(center, sigma, weights, scores, levels)
    assert calls
    monkeypatch.setattr(_conformal, "_SMALL_SUPPORT", np.inf)
    np.testing.assert_allclose(
        narrowed, mixture_quantiles(center, sigma, weights, scores, levels), rtol=1e-12
    )


@pytest.mark.parametrize("shift", [-2, -1, 0, 1, 3])
def test_a_wrong_guess_of_the_first_value_reaching_a_level_is_caught(shift):
    # The running sum of weights that guesses the quantile among sorted
    # values is off where rounding counts a value twice: whatever the guess,
    # the CDF itself decides.
    from sklat._conformal import first_reaching

    center, sigma, weights, scores = _random_mixture(1, 30, 50, seed=2)
    log_center, sigma = np.log(center[0]), sigma[0]
    values = np.sort((log_center[:, None] + sigma[:, None] * scores[None, :]).ravel())
    at = values + 1e-12 * (1 + np.abs(values))

    def cdf(points):
        below = np.searchsorted(scores, (points[:, None] - log_center) / sigma, side="right")
        return (below @ weights) / len(scores)

    exact = cdf(at)
    for level in (0.03, 0.5, 0.97):
        t = int(np.argmax(exact >= level))
        # The guess shifted by ``shift`` values, still non-decreasing.
        guess = np.roll(exact, -shift)
        guess[len(guess) - max(shift, 0) :] = 1.0
        guess[: max(-shift, 0)] = 0.0
        assert first_reaching(at, guess, level, cdf) == t
    assert first_reaching(at, exact, 1.5, cdf) is None


@pytest.mark.parametrize(
    "objective", [{"tpot_ms": 1.0}, {"e2e_ms": 1.0}, {"tpot_ms": 1.0, "ttft_ms": 1.0}]
)
def test_wide_distributions_count_per_row_as_every_length_does(
    monkeypatch, fitted, small_data, objective
):
    # 300 lengths, some past training, in shuffled order with uneven
    # weights, read one by one: the per-request binary searches among the
    # lengths (above _LENGTHS_PER_REQUEST lengths per request) give the
    # probabilities of counting every length.
    from sklat import _conformal

    fitted = copy.deepcopy(fitted).set_params(length_groups=None)
    X = small_data.X.iloc[:12]
    rng = np.random.default_rng(1)
    values = rng.permutation(np.arange(1, 301))
    dist = {"values": values, "probabilities": rng.dirichlet(np.ones(300))}
    scale = {
        "tpot_ms": float(np.median(fitted.predict_total(X, 64) / 64)),
        "e2e_ms": float(np.median(fitted.predict(X).sum(axis=1))),
        "ttft_ms": float(np.median(fitted.predict(X)[:, 0])) * 1.05,
    }
    kwargs = {k: v * scale[k] for k, v in objective.items()}
    kwargs["output_tokens_distribution"] = dist
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        monkeypatch.setattr(_conformal, "_LENGTHS_PER_REQUEST", 0)
        per_row = fitted.predict_slo_attainment(X, **kwargs)
        monkeypatch.setattr(_conformal, "_LENGTHS_PER_REQUEST", np.inf)
        every = fitted.predict_slo_attainment(X, **kwargs)
    np.testing.assert_allclose(per_row, every, atol=1e-12)
    assert 0 < every.mean() < 1


def test_mixture_quantiles_of_sorted_runs_are_those_of_every_length(
    monkeypatch, fitted, small_data
):
    from sklat import _conformal

    fitted = copy.deepcopy(fitted).set_params(length_groups=None)
    X = small_data.X.iloc[:1]
    dist = {"values": np.arange(1, 2001), "probabilities": np.full(2000, 1 / 2000)}
    monkeypatch.setattr(_conformal, "_LENGTHS_PER_REQUEST", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        runs = fitted.predict_interval(X, output_tokens_distribution=dist, confidence=0.8)
        monkeypatch.setattr(_conformal, "_LENGTHS_PER_REQUEST", np.inf)
        every = fitted.predict_interval(X, output_tokens_distribution=dist, confidence=0.8)
    np.testing.assert_allclose(runs, every, rtol=1e-12)


def test_tpot_over_lengths_handles_rising_falling_and_mixed_rows():
    # Per-token centres that rise, fall, or do both with the length, and a
    # difficulty that changes at some length: every row's attainment is the
    # count over every (length, request) pair.
    from sklat._conformal import _tpot_over_lengths

    rng = np.random.default_rng(0)
    lengths = np.arange(1, 201, dtype=np.float64)
    per_token = np.vstack([10 + lengths / 50, 10 + 40 / lengths, 10 + np.abs(lengths - 100) / 20])
    total = per_token * lengths
    sigma = np.where(lengths < 60, 0.8, 1.3)[None, :].repeat(3, axis=0)
    weights = rng.dirichlet(np.ones(200))
    decode = np.sort(rng.normal(0, 0.1, 97))
    tpot = np.array([11.0, 10.5, 12.0])
    got = _tpot_over_lengths(total, sigma, lengths[None, :], weights, decode, tpot)
    met = (
        decode[None, None, :]
        <= (np.log(tpot)[:, None] - np.log(per_token))[:, :, None] / sigma[:, :, None]
    )
    np.testing.assert_allclose(got, met.mean(axis=2) @ weights, atol=1e-12)
    assert 0 < got.min() and got.max() < 1
