"""Cross-fitting (``n_folds``): one net per fold, averaged, every request
scored by the net that did not train on it."""

import copy

import joblib
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.utils._param_validation import InvalidParameterError

import sklat
from sklat import LatencyEstimator
from sklat._cli._options import folds
from sklat._splits import cross_fit_folds
from sklat.datasets import make_positioned_latency
from sklat.persistence import ModelFileError, _digest


@pytest.fixture(scope="module")
def data():
    return make_positioned_latency(
        40, noise=0.05, positioned_fraction=0.5, max_output_tokens=64, random_state=0
    )


def _fit(data, **params):
    params = {"max_epochs": 3, "hidden_size": 8, "random_state": 0, **params}
    return LatencyEstimator(**params).fit(
        data.X,
        data.y,
        output_tokens=data.output_tokens,
        positioned_latencies=data.positioned_latencies,
    )


@pytest.fixture(scope="module")
def crossed(data):
    return _fit(data, n_folds=4)


def test_every_request_trains_and_calibrates(crossed, data):
    assert len(crossed.nets_) == 4 and crossed.net_ is crossed.nets_[0]
    assert crossed.conformity_scores_.shape == (40, 2)
    # Each net stopped early on its own fold: 10 held-out requests of 40.
    for net in crossed.nets_:
        assert net.history[0, "valid_loss"] > 0
        assert len(net.history) == 3
    # Requests with per-step data calibrate the per-position intervals.
    n_stepped = sum(p is not None for p in data.positioned_latencies)
    np.testing.assert_allclose(crossed.position_scores_[:, 1].sum(), n_stepped)
    # The averaged curve still sums to its totals.
    n = data.output_tokens[:5]
    curves = crossed.predict_positions(data.X.iloc[:5], np.arange(1, n.max() + 1))
    np.testing.assert_allclose(
        crossed.predict_total(data.X.iloc[:5], n), [curves[i, : n[i]].sum() for i in range(5)]
    )
    bounds = crossed.predict_interval(data.X.iloc[:5], n, confidence=0.9)
    total = crossed.predict_total(data.X.iloc[:5], n)
    assert (bounds[:, 0] < total).all() and (total < bounds[:, 1]).all()


def test_verbose_names_each_net(data, capsys):
    _fit(data, n_folds=4, max_epochs=1, verbose=1)
    out = capsys.readouterr().out
    for k in range(1, 5):
        assert f"cross-fitting: net {k} of 4, stopped early on 10 of 40 requests" in out


def test_the_same_seed_gives_the_same_model(crossed, data):
    again = _fit(data, n_folds=4)
    np.testing.assert_array_equal(
        again.predict(data.X, output_tokens=20), crossed.predict(data.X, output_tokens=20)
    )
    np.testing.assert_array_equal(again.conformity_scores_, crossed.conformity_scores_)


def test_auto_cross_fits_between_10_and_499_requests():
    def nets(n):
        d = make_positioned_latency(n, max_output_tokens=16, random_state=1)
        est = LatencyEstimator(max_epochs=1, hidden_size=4, random_state=0)
        return len(est.fit(d.X, d.y, output_tokens=d.output_tokens).nets_)

    assert [nets(9), nets(10), nets(499), nets(500)] == [1, 5, 5, 1]


def test_too_few_requests_for_the_folds(data):
    with pytest.raises(
        ValueError,
        match=r"n_folds=5 needs at least 10 distinct configurations \(two per fold; requests "
        r"with equal features and output_tokens share a fold\); got 8 in 8 requests",
    ):
        LatencyEstimator(n_folds=5, max_epochs=1).fit(
            data.X.iloc[:8], data.y.iloc[:8], output_tokens=data.output_tokens[:8]
        )


@pytest.mark.parametrize("bad", [1, 0, "all", 2.5])
def test_bad_n_folds(data, bad):
    with pytest.raises(InvalidParameterError, match="The 'n_folds' parameter of LatencyEstimator"):
        LatencyEstimator(n_folds=bad).fit(data.X, data.y, output_tokens=data.output_tokens)


def test_cli_folds_option():
    assert (folds("auto"), folds("none"), folds("3")) == ("auto", None, 3)
    with pytest.raises(Exception, match="expected 'auto', 'none' or an integer, got 'x'"):
        folds("x")


def test_files_keep_every_net(crossed, data, tmp_path):
    path = tmp_path / "model.safetensors"
    sklat.save(crossed, path)
    pickled = tmp_path / "model.joblib"
    joblib.dump(crossed, pickled)
    for loaded in (sklat.load(path), joblib.load(pickled)):
        assert len(loaded.nets_) == 4
        np.testing.assert_array_equal(
            loaded.predict_interval(data.X, 20), crossed.predict_interval(data.X, 20)
        )
        np.testing.assert_array_equal(
            loaded.predict_positions(data.X, [1, 30]), crossed.predict_positions(data.X, [1, 30])
        )
        assert [len(net.history) for net in loaded.nets_] == [3, 3, 3, 3]


def test_a_recalibrated_ensemble_keeps_its_multipliers_in_files(crossed, data, tmp_path):
    moved = copy.deepcopy(crossed)
    y = data.y * 1.3
    moved.recalibrate(data.X.iloc[:20], y.iloc[:20], data.output_tokens[:20])
    assert (moved.cost_scales_ != 1).any()
    path = tmp_path / "moved.safetensors"
    sklat.save(moved, path)
    loaded = sklat.load(path)
    np.testing.assert_array_equal(loaded.cost_scales_, moved.cost_scales_)
    np.testing.assert_array_equal(
        loaded.predict_interval(data.X, 20), moved.predict_interval(data.X, 20)
    )


def test_a_file_missing_a_member_is_refused(crossed, tmp_path):
    path = tmp_path / "model.safetensors"
    sklat.save(crossed, path)
    with safe_open(path, framework="pt") as f:
        body = f.metadata()["sklat"]
    tensors = {k: v for k, v in load_file(path).items() if not k.startswith("member1.")}
    save_file(tensors, path, metadata={"sklat": body, "sha256": _digest(body, tensors)})
    with pytest.raises(
        ModelFileError, match=r"name ensemble members \[2, 3\]; expected members 1..k-1"
    ):
        sklat.load(path)


def test_repeats_of_a_measurement_share_a_fold():
    rng = np.random.RandomState(0)
    configurations = rng.uniform(1, 100, (30, 3))
    lengths = rng.randint(1, 50, 30)
    repeats = rng.randint(1, 5, 30)
    X, n = np.repeat(configurations, repeats, axis=0), np.repeat(lengths, repeats)
    folds = cross_fit_folds(X, n, 5, seed=0)
    group = np.repeat(np.arange(30), repeats)
    for g in range(30):
        assert len(set(folds[group == g])) == 1
    sizes = np.bincount(folds)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= repeats.max()
    # Equal features with another output length are another measurement.
    assert len(set(cross_fit_folds(np.ones((10, 2)), np.arange(10), 5, seed=0))) == 5

    # "auto" needs 10 configurations, however many requests repeat them.
    def repeated(k):
        return np.repeat(configurations[:k], 5, axis=0), np.repeat(lengths[:k], 5)

    assert cross_fit_folds(*repeated(9), "auto", seed=0) is None
    assert cross_fit_folds(*repeated(10), "auto", seed=0) is not None


def test_cross_fitted_intervals_cover_new_requests():
    # Out-of-fold errors calibrate: 90% intervals of a model fitted on 150
    # requests cover about 90% of 1000 new ones. In-sample errors would be too
    # small (a net that saw a request fits it better than a new one).
    train = make_positioned_latency(150, noise=0.08, max_output_tokens=128, random_state=3)
    new = make_positioned_latency(1000, noise=0.08, max_output_tokens=128, random_state=4)
    est = LatencyEstimator(max_epochs=40, hidden_size=16, random_state=0, n_folds=5).fit(
        train.X, train.y, output_tokens=train.output_tokens
    )
    bounds = est.predict_interval(new.X, new.output_tokens, confidence=0.9)
    coverage = sklat.metrics.interval_coverage(new.y["T_LLM_decode"].to_numpy(), bounds)
    assert 0.84 <= coverage <= 0.97
