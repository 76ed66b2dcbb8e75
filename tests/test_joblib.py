"""joblib/pickle persistence (for trusted files) and determinism."""

import pickle
import warnings

import joblib
import numpy as np
import torch

from sklat import LatencyEstimator


def test_joblib_round_trip(fitted, small_data, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    X = small_data.X
    np.testing.assert_array_equal(
        loaded.predict(X, output_tokens=17), fitted.predict(X, output_tokens=17)
    )
    np.testing.assert_array_equal(
        loaded.predict_positions(X, [1, 9]), fitted.predict_positions(X, [1, 9])
    )


def test_cuda_trained_model_loads_on_cpu(fitted, small_data, monkeypatch):
    # A net trained on CUDA records device="cuda"; on a machine without CUDA,
    # unpickling maps its tensors to the CPU and predictions still work.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    blob = pickle.dumps(fitted)
    state = pickle.loads(blob)
    state.net_.device = "cuda"
    state.device_ = "cuda"
    blob = pickle.dumps(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = pickle.loads(blob)
    assert next(loaded.net_.module_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(
        loaded.predict(small_data.X, output_tokens=4), fitted.predict(small_data.X, output_tokens=4)
    )


def test_same_seed_same_predictions(small_data):
    d = small_data

    def fit():
        return LatencyEstimator(max_epochs=8, random_state=42).fit(
            d.X, d.y, output_tokens=d.output_tokens, positioned_latencies=d.positioned_latencies
        )

    a, b = fit(), fit()
    np.testing.assert_array_equal(
        a.predict_positions(d.X, [1, 5, 50]), b.predict_positions(d.X, [1, 5, 50])
    )
    np.testing.assert_array_equal(
        a.predict(d.X, output_tokens=d.output_tokens), b.predict(d.X, output_tokens=d.output_tokens)
    )
    c = LatencyEstimator(max_epochs=8, random_state=7).fit(d.X, d.y, output_tokens=d.output_tokens)
    assert not np.array_equal(a.predict_positions(d.X, [1]), c.predict_positions(d.X, [1]))


def test_fit_leaves_global_torch_rng_alone(small_data):
    d = small_data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LatencyEstimator(max_epochs=1, random_state=0).fit(d.X, d.y, output_tokens=d.output_tokens)
    assert torch.equal(torch.rand(3), expected)
