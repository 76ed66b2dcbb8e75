"""Point predictions: the curve's centre, or that centre times the factor with
the least expected relative error (``point="relative"``, ``point_factors_``)."""

import copy
import pickle

import numpy as np
import pytest

import sklat
from sklat import LatencyEstimator
from sklat._conformal import relative_error_factor
from sklat.datasets import make_positioned_latency
from sklat.metrics import mape

pytestmark = pytest.mark.filterwarnings("ignore::sklat.ExtrapolationWarning")


def _mean_relative_error(factor, log_errors):
    measured = np.exp(log_errors)
    return np.mean(np.abs(factor - measured) / measured)


@pytest.mark.parametrize("seed", range(5))
def test_relative_error_factor_is_the_minimiser(seed):
    rng = np.random.default_rng(seed)
    # Right-skewed errors: a spread plus occasional slow outliers.
    errors = rng.normal(0, 0.1, 41) + rng.exponential(0.3, 41) * (rng.random(41) < 0.3)
    factor = relative_error_factor(errors)
    grid = np.exp(np.linspace(errors.min() - 0.1, errors.max() + 0.1, 4001))
    best = min(_mean_relative_error(k, errors) for k in grid)
    assert _mean_relative_error(factor, errors) <= best + 1e-12
    # A weighted median: one of the measured ratios, below the plain median
    # for errors skewed to the slow side.
    assert np.isclose(np.log(factor), errors).any()
    assert factor < np.exp(np.median(errors))


def test_relative_error_factor_needs_enough_errors():
    # Weights 6 against 14 exp(-0.5) = 8.5: the weighted median is at the
    # slow errors; one error fewer is too few to fit on.
    slow = np.r_[np.zeros(6), np.full(14, 0.5)]
    assert relative_error_factor(slow) == np.exp(0.5)
    assert relative_error_factor(slow[1:]) == 1.0
    assert relative_error_factor([]) == 1.0


def _skewed(n, seed):
    """Synthetic requests whose measurements are slowed by a busy machine
    now and then (never sped up): right-skewed errors."""
    data = make_positioned_latency(n, noise=0.03, random_state=seed)
    rng = np.random.default_rng(seed)
    slow = np.exp(rng.exponential(0.25, n) * (rng.random(n) < 0.4))
    y = data.y.copy()
    y["T_LLM_decode"] *= slow
    return data.X, y, data.output_tokens


@pytest.fixture(scope="module")
def skewed_model():
    X, y, n = _skewed(240, 0)
    return LatencyEstimator(max_epochs=60, random_state=0).fit(X, y, output_tokens=n)


def test_relative_points_have_less_relative_error_on_skewed_measurements(skewed_model):
    est = copy.deepcopy(skewed_model)
    X, y, n = _skewed(400, 1)
    assert est.point == "relative" and 0 < est.point_factors_[0] < 1
    relative = mape(y["T_LLM_decode"], est.predict_total(X, n))
    centre = mape(y["T_LLM_decode"], est.set_params(point="center").predict_total(X, n))
    assert relative < 0.97 * centre


def test_relative_points_are_the_centre_times_the_factors(skewed_model):
    est = copy.deepcopy(skewed_model)
    X, n = _skewed(6, 2)[0], [3, 9, 20, 40, 1, 7]
    decode, prefill = est.point_factors_[0], est.point_factors_[1]
    relative = {
        "predict": est.predict(X, n),
        "total": est.predict_total(X, n),
        "expected": est.predict_total(X),
        "positions": est.predict_positions(X, [1, 5, 30]),
        "prefill": est.predict_prefill(X),
        "budget": est.predict_budget(X, "expectation"),
        "interval": est.predict_interval(X, n),
        "attainment": est.predict_slo_attainment(X, output_tokens=n, e2e_ms=300.0),
        "upper budget": est.predict_budget(X, confidence=0.9),
    }
    est.set_params(point="center")
    np.testing.assert_allclose(relative["predict"], est.predict(X, n) * [prefill, decode])
    np.testing.assert_allclose(relative["total"], est.predict_total(X, n) * decode)
    np.testing.assert_allclose(relative["expected"], est.predict_total(X) * decode)
    positions = est.predict_positions(X, [1, 5, 30]) * decode
    np.testing.assert_allclose(relative["positions"], positions)
    np.testing.assert_allclose(relative["prefill"], est.predict_prefill(X) * prefill)
    budget = est.predict_budget(X, "expectation") * decode
    np.testing.assert_allclose(relative["budget"], budget)
    # The predictive distribution does not move.
    np.testing.assert_array_equal(relative["interval"], est.predict_interval(X, n))
    attainment = est.predict_slo_attainment(X, output_tokens=n, e2e_ms=300.0)
    np.testing.assert_array_equal(relative["attainment"], attainment)
    np.testing.assert_array_equal(relative["upper budget"], est.predict_budget(X, confidence=0.9))


def test_relative_totals_are_the_sum_of_relative_positions(skewed_model):
    X, n = _skewed(5, 3)[0], np.array([1, 4, 17, 60, 128])
    curves = skewed_model.predict_positions(X, np.arange(1, n.max() + 1))
    summed = [curve[:length].sum() for curve, length in zip(curves, n)]
    np.testing.assert_allclose(skewed_model.predict_total(X, n), summed, rtol=1e-9)


def test_cross_fitted_factors_come_from_the_out_of_fold_errors(skewed_model):
    # Cross-fitted, and the slow-downs do not depend on the features: the
    # difficulty is flat, so the scores are the plain out-of-fold log errors
    # (test_curve checks the factors where the difficulty is not flat).
    assert len(skewed_model.nets_) == 5
    assert (skewed_model._calibrator.difficulty_trees[:, 0] == -1).all()
    for k in range(2):
        expected = relative_error_factor(skewed_model.conformity_scores_[:, k])
        assert skewed_model.point_factors_[k] == expected


def test_a_split_model_takes_its_factors_from_the_calibration_requests():
    X, y, n = _skewed(120, 4)
    est = LatencyEstimator(n_folds=None, max_epochs=40, random_state=0).fit(X, y, output_tokens=n)
    assert len(est.conformity_scores_) == 24 and est.point_factors_[0] < 1
    # Without any out-of-sample request there is nothing to fit them on.
    bare = LatencyEstimator(
        n_folds=None, calibration_fraction=0.0, validation_fraction=0.0, max_epochs=5
    )
    bare.fit(X, y, output_tokens=n)
    np.testing.assert_array_equal(bare.point_factors_, [1.0, 1.0])


def test_recalibration_refits_the_factors(skewed_model):
    est = copy.deepcopy(skewed_model)
    X, y, n = _skewed(30, 5)
    y = y * 1.5
    est.recalibrate(X, y, output_tokens=n)
    for k in range(2):
        assert est.point_factors_[k] == relative_error_factor(est.conformity_scores_[:, k])


def test_factors_survive_model_files_and_pickles(skewed_model, tmp_path):
    X, n = _skewed(4, 6)[0], [2, 8, 30, 90]
    path = tmp_path / "model.safetensors"
    sklat.save(skewed_model, path)
    for copied in (sklat.load(path), pickle.loads(pickle.dumps(skewed_model))):
        assert copied.point == "relative"
        np.testing.assert_array_equal(copied.point_factors_, skewed_model.point_factors_)
        np.testing.assert_array_equal(copied.predict(X, n), skewed_model.predict(X, n))


def test_a_pickle_without_factors_predicts_the_centre(skewed_model):
    # What a pickle of sklat 0.8 holds: no point parameter, no factors.
    state = copy.deepcopy(skewed_model).__getstate__()
    del state["point"]
    del state["_calibrator"].__dict__["point_factors"]
    old = pickle.loads(pickle.dumps(state))
    est = LatencyEstimator.__new__(LatencyEstimator)
    est.__setstate__(old)
    X = _skewed(3, 7)[0]
    assert est.point == "center"
    np.testing.assert_array_equal(est.point_factors_, [1.0, 1.0])
    centre = copy.deepcopy(skewed_model).set_params(point="center")
    np.testing.assert_array_equal(est.predict(X, 8), centre.predict(X, 8))


def test_a_model_file_with_bad_factors_is_refused(skewed_model, tmp_path):
    from sklat._state import check_attributes, export_state

    attrs = export_state(skewed_model)[0]
    for bad in ([1.0], [0.9, -1.0], [0.9, "x"], 0.9):
        with pytest.raises(ValueError, match="point_factors_ must be a list of 2 finite numbers"):
            check_attributes({**attrs, "point_factors_": bad})


def test_an_unknown_point_is_refused(skewed_model):
    X, y, n = _skewed(20, 8)
    with pytest.raises(ValueError, match="'point' parameter of LatencyEstimator must be"):
        LatencyEstimator(point="mean").fit(X, y, output_tokens=n)
    est = copy.deepcopy(skewed_model).set_params(point="mean")
    with pytest.raises(ValueError, match=r"point must be one of \['center', 'relative'\] to"):
        est.predict_total(X, n)
