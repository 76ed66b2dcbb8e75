"""Files written by sklat 0.6.0 to 0.9.0 load and predict as they did: their
model files (formats 5, 6 and 7, read by this sklat), and joblib pickles of the
0.6.0 and 0.7.0 estimators (0.6.0 stored its fitted attributes itself; both
held one net and had no ``n_folds``). None before 0.9.0 had ``point``: they
predicted the curve's centre, which is what ``point="center"`` does. None had
the recalibration's slopes: they are 0."""

import json
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest

import sklat
from sklat.datasets import make_positioned_latency

DATA = Path(__file__).parent / "data"


def _load_pickle(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's version warning, if any
        return joblib.load(path)


# Written by sklat 0.6.0 and by 0.7.0: LatencyEstimator(hidden_size=4,
# n_basis=2, max_epochs=2, random_state=0) fitted on
# make_positioned_latency(60, random_state=0, positioned_fraction=0.5) with
# its per-step lists; the model file is sklat.save of the same estimator.
@pytest.mark.parametrize("version", ["0.6.0", "0.7.0"])
@pytest.mark.parametrize("suffix, load", [("joblib", _load_pickle), ("safetensors", sklat.load)])
def test_an_old_file_predicts_as_it_did(version, suffix, load):
    est = load(DATA / f"sklat-{version}.{suffix}")
    _check_predictions(est, version)
    assert "step_scale_" not in vars(est) and est.step_scale_ > 0
    assert est.position_scores_.shape[1] == 2
    # Trained as one net, which is what n_folds=None does.
    assert est.n_folds is None and est.nets_ == [est.net_]
    assert est.get_params()["n_folds"] is None


def _check_predictions(est, version):
    expected = np.asarray(json.loads((DATA / f"sklat-{version}-predictions.json").read_text()))
    X = make_positioned_latency(60, random_state=0, positioned_fraction=0.5).X.iloc[:4]
    n = [3, 9, 20, 40]
    got = np.concatenate(
        [
            est.predict(X, output_tokens=n).ravel(),
            est.predict_interval(X, output_tokens=n).ravel(),
            est.predict_positions(X, [1, 7]).ravel(),
        ]
    )
    # Not bit for bit: torch does not promise the same last bits across
    # thread counts and BLAS kernels (a busy machine gave 2e-9).
    np.testing.assert_allclose(got, expected, rtol=1e-7)
    assert (est.scale_slopes_ == 0).all() and est.scale_slopes_.shape == (2, 5)
    if version != "0.9.0":
        assert est.point == "center" and (est.point_factors_ == 1).all()


# Written by sklat 0.8.0 as above (its defaults cross-fitted the 60 requests:
# five nets); the model file only (format 6).
def test_a_0_8_model_file_predicts_as_it_did():
    est = sklat.load(DATA / "sklat-0.8.0.safetensors")
    _check_predictions(est, "0.8.0")
    assert est.n_folds == "auto" and len(est.nets_) == 5


# Written by sklat 0.9.0 as above, then recalibrated on the first 30 requests
# with latencies 1.3x (cost multipliers and point factors, no slopes); the
# model file only (format 7).
def test_a_recalibrated_0_9_model_file_predicts_as_it_did():
    est = sklat.load(DATA / "sklat-0.9.0.safetensors")
    _check_predictions(est, "0.9.0")
    assert est.point == "relative" and (est.point_factors_ != 1).all()
    assert (est.cost_scales_ != 1).all()
