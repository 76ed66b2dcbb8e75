"""A joblib pickle of a 0.6 estimator, which stored its fitted attributes
itself, loads into the fitted objects and predicts as it did."""

import json
import warnings
from pathlib import Path

import joblib
import numpy as np

from sklat.datasets import make_positioned_latency

DATA = Path(__file__).parent / "data"


def test_a_060_pickle_predicts_as_it_did():
    # Written by sklat 0.6.0: LatencyEstimator(hidden_size=4, n_basis=2,
    # max_epochs=2, random_state=0) fitted on make_positioned_latency(60,
    # random_state=0, positioned_fraction=0.5) with its per-step lists.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's version warning, if any
        est = joblib.load(DATA / "sklat-0.6.0.joblib")
    expected = np.asarray(json.loads((DATA / "sklat-0.6.0-predictions.json").read_text()))
    X = make_positioned_latency(60, random_state=0, positioned_fraction=0.5).X.iloc[:4]
    n = [3, 9, 20, 40]
    got = np.concatenate(
        [
            est.predict(X, output_tokens=n).ravel(),
            est.predict_interval(X, output_tokens=n).ravel(),
            est.predict_positions(X, [1, 7]).ravel(),
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert "step_scale_" not in vars(est) and est.step_scale_ > 0
    assert est.position_scores_.shape[1] == 2
