import numpy as np
import pytest

from sklat import LatencyEstimator, metrics
from sklat.datasets import make_positioned_latency


@pytest.fixture(scope="session")
def small_data():
    """300 requests, N <= 256, per-step data for a third of them."""
    return make_positioned_latency(
        300, noise=0.05, positioned_fraction=0.3, max_output_tokens=256, random_state=0
    )


@pytest.fixture(scope="session")
def fitted(small_data):
    """A quickly fitted estimator with a prefill head (2-column y)."""
    d = small_data
    return LatencyEstimator(max_epochs=30, random_state=0).fit(
        d.X, d.y, output_tokens=d.output_tokens, positioned_latencies=d.positioned_latencies
    )


@pytest.fixture(scope="session")
def fitted_1d(small_data):
    """A quickly fitted estimator without prefill head (1-D y)."""
    d = small_data
    return LatencyEstimator(max_epochs=10, random_state=0).fit(
        d.X, d.y["T_LLM_decode"], output_tokens=d.output_tokens
    )


def positioned_mape(est, data, max_position=None):
    """Mean relative error (a fraction) of the learnt curve against the true curve."""
    n = data.output_tokens if max_position is None else np.minimum(data.output_tokens, max_position)
    positions = np.arange(1, n.max() + 1)
    pred = est.predict_positions(data.X, positions)
    true = data.true_curve(data.X, positions)
    return metrics.positioned_mape(true, pred, output_tokens=n) / 100
