"""The calibration split of a fit: repeats of a measurement stay on one side."""

import numpy as np
import pandas as pd
import pytest

import sklat._fitting
from sklat import LatencyEstimator
from sklat._calibrator import Calibrator
from sklat._splits import (
    MIN_MEASUREMENTS,
    calibration_split,
    measurement_groups,
    unseen,
)
from sklat.datasets import make_positioned_latency

FRACTIONS = [0.2, 0.5]


def _repeated(n_configurations, seed=0, max_repeats=6):
    rng = np.random.RandomState(seed)
    X = rng.uniform(1, 100, (n_configurations, 3))
    lengths = rng.randint(1, 50, n_configurations)
    repeats = rng.randint(1, max_repeats + 1, n_configurations)
    return np.repeat(X, repeats, axis=0), np.repeat(lengths, repeats), repeats


def test_measurement_groups_are_equal_features_and_length():
    X = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [3.0, 2.0]])
    groups = measurement_groups(X, [5, 5, 6, 5])
    assert groups[0] == groups[1]
    assert len(set(groups)) == 3
    assert measurement_groups(np.zeros((0, 2)), []).shape == (0,)


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_repeats_calibrate_together(fraction, seed):
    X, n_tokens, repeats = _repeated(60, seed)
    groups = measurement_groups(X, n_tokens)
    n = len(groups)
    kept, held = calibration_split(n, fraction, seed, groups)
    assert not set(groups[kept]) & set(groups[held])
    assert sorted(np.concatenate([kept, held])) == list(range(n))
    # At least the share asked for, short of it by less than one measurement
    # before the last one drawn.
    k = int(fraction * n)
    assert k <= len(held) < k + repeats.max()


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_distinct_measurements_draw_the_same_rows_as_without_groups(fraction):
    X, n_tokens, _ = _repeated(80, max_repeats=1)
    groups = measurement_groups(X, n_tokens)
    assert len(set(groups)) == len(groups)
    for seed in range(5):
        with_groups = calibration_split(len(groups), fraction, seed, groups)
        without = calibration_split(len(groups), fraction, seed)
        for a, b in zip(with_groups, without):
            np.testing.assert_array_equal(a, b)


def test_unseen_held_out_rows_have_no_repeat_outside_them():
    groups = np.array([0, 0, 1, 2, 2, 3])
    np.testing.assert_array_equal(unseen([0, 1, 3, 5], groups), [0, 1, 5])
    np.testing.assert_array_equal(unseen([], groups), [])


def test_few_measurements_are_split_request_by_request():
    # A handful of configurations measured many times over: whole
    # measurements would hold out far more (or fewer) requests than asked.
    groups = np.repeat(np.arange(MIN_MEASUREMENTS - 1), 20)
    kept, held = calibration_split(len(groups), 0.2, 0, groups)
    assert len(held) == int(0.2 * len(groups))
    np.testing.assert_array_equal(held, calibration_split(len(groups), 0.2, 0)[1])


def test_a_draw_of_whole_measurements_that_would_keep_none_is_made_request_by_request():
    # 10 measurements of 10 requests, 95 to hold out: whole measurements would
    # hold out all 100.
    groups = np.repeat(np.arange(MIN_MEASUREMENTS), 10)
    kept, held = calibration_split(len(groups), 0.95, 0, groups)
    assert (len(kept), len(held)) == (5, 95)
    np.testing.assert_array_equal(held, calibration_split(len(groups), 0.95, 0)[1])


def _data_with_repeats(n_configurations, repeats, seed=0):
    d = make_positioned_latency(
        n_configurations, noise=0.05, positioned_fraction=0.0, random_state=seed
    )
    rows = np.repeat(np.arange(n_configurations), repeats)
    y = d.y.iloc[rows].reset_index(drop=True)
    # Repeated measurements differ by their noise only.
    y = y * np.random.RandomState(seed).lognormal(0, 0.05, (len(rows), 1))
    return d.X.iloc[rows].reset_index(drop=True), y, d.output_tokens[rows]


def test_a_fit_on_repeated_measurements_calibrates_on_unseen_ones(monkeypatch):
    # 103 configurations measured 3 times, one net (n_folds=None): the
    # requests that calibrate are no repeats of a request the net trained on;
    # those that stop training early are drawn request by request.
    X, y, n_tokens = _data_with_repeats(103, 3)
    seen = []
    train = sklat._fitting.train

    def recording_train(params, data, **kwargs):
        seen.append((data, kwargs["held_out"]))
        return train(params, data, **kwargs)

    monkeypatch.setattr(sklat._fitting, "train", recording_train)
    fit_calibrator = Calibrator.fit.__func__
    checked = []

    def recording_fit(cls, curve, fit_part, cal_part, *, held_out=None, **kwargs):
        checked.append(held_out)
        return fit_calibrator(cls, curve, fit_part, cal_part, held_out=held_out, **kwargs)

    monkeypatch.setattr(Calibrator, "fit", classmethod(recording_fit))
    est = LatencyEstimator(max_epochs=3, n_folds=None, random_state=0)
    est.fit(X, y, output_tokens=n_tokens)

    # int(0.2 * 309) = 61 requests asked for: whole measurements make it 63.
    assert len(est.conformity_scores_) == 63
    ((data, held_out),) = seen
    assert len(data) == len(X) - 63
    keys = pd.DataFrame(data.x).assign(n=data.output_tokens)
    groups = measurement_groups(keys.to_numpy(np.float64), data.output_tokens)
    kept = np.setdiff1d(np.arange(len(data)), held_out)
    assert len(held_out) == round(0.1 * len(data))
    assert set(groups[kept]) & set(groups[held_out])
    # The difficulty tree is judged on the held-out requests none of whose
    # repeats trained the net: here none (three repeats, a tenth held out),
    # so the difficulty is flat.
    (judged,) = checked
    np.testing.assert_array_equal(judged, unseen(held_out, groups))
    assert len(judged) == 0
    assert (est._calibrator.difficulty_trees[:, 0] == -1).all()
    # The calibration requests: X's measurements absent from the training data.
    trained = {tuple(row) for row in keys.to_numpy()}
    assert len(trained) == (len(X) - 63) // 3


def _recording_train(monkeypatch):
    """A list that each training of a fit appends ``(data, held_out, net)`` to."""
    seen = []
    train = sklat._fitting.train

    def recording_train(params, data, **kwargs):
        net = train(params, data, **kwargs)
        seen.append((data, kwargs["held_out"], net))
        return net

    monkeypatch.setattr(sklat._fitting, "train", recording_train)
    return seen


def _measurements(data):
    """The measurement of each request of a net's training data, as tuples."""
    keys = np.column_stack([data.x, data.output_tokens]).astype(np.float64)
    return [tuple(row) for row in keys]


def test_many_requests_of_few_measurements_calibrate_through_folds(monkeypatch, capsys):
    # 125 configurations measured 4 times (500 requests): the model is one
    # net trained on every request (a tenth, drawn one by one, stops it
    # early); five more nets, each trained as many epochs without a fifth of
    # the measurements, score every request.
    X, y, n_tokens = _data_with_repeats(125, 4)
    seen = _recording_train(monkeypatch)
    est = LatencyEstimator(max_epochs=4, random_state=0, verbose=1)
    est.fit(X, y, output_tokens=n_tokens)

    assert len(seen) == 6 and len(est.nets_) == 1
    assert len(est.conformity_scores_) == 500
    assert (est._calibrator.difficulty_trees[:, 0] == -1).all()
    data, held_out, net = seen[0]
    assert (len(data), len(held_out)) == (500, 50) and net is est.net_
    measurements = _measurements(data)
    everything = set(measurements)
    assert len(everything) == 125
    kept = set(np.setdiff1d(np.arange(500), held_out))
    assert {measurements[i] for i in kept} & {measurements[i] for i in held_out}
    epochs = int(np.argmin(est.history_[:, "valid_loss"])) + 1
    left_out = []
    for data, held_out, net in seen[1:]:
        left_out.append(everything - set(_measurements(data)))
        # Every repeat of a measurement left out: none of them trains.
        assert len(data) == 4 * (125 - len(left_out[-1]))
        assert len(held_out) == 0 and len(net.history) == epochs
    out = capsys.readouterr().out
    for k, (data, _, _) in enumerate(seen[1:], start=1):
        assert f"calibration: net {k} of 5, {epochs} epochs on {len(data)} requests" in out
    assert sum(len(s) for s in left_out) == 125 and set().union(*left_out) == everything


def test_folds_given_from_500_requests_are_averaged():
    X, y, n_tokens = _data_with_repeats(125, 4)
    est = LatencyEstimator(n_folds=5, max_epochs=1, random_state=0)
    assert len(est.fit(X, y, output_tokens=n_tokens).nets_) == 5


def test_intervals_through_folds_cover_new_measurements():
    # 150 configurations measured 4 times: 90% intervals cover about 90% of
    # 1000 configurations the fit never saw, measured alike.
    X, y, n_tokens = _data_with_repeats(150, 4, seed=3)
    new_X, new_y, new_tokens = _data_with_repeats(1000, 1, seed=4)
    est = LatencyEstimator(hidden_size=16, random_state=0)
    est.fit(X, y, output_tokens=n_tokens)
    assert len(est.nets_) == 1 and len(est.conformity_scores_) == 600
    bounds = est.predict_interval(new_X, new_tokens, confidence=0.9)
    coverage = sklat.metrics.interval_coverage(new_y["T_LLM_decode"].to_numpy(), bounds)
    assert 0.84 <= coverage <= 0.97
