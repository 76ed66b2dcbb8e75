"""The model learns the per-position curve from totals."""

import numpy as np
import pytest

from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency

from .conftest import positioned_mape


@pytest.fixture(scope="module")
def train():
    return make_positioned_latency(1000, noise=0.05, positioned_fraction=1.0, random_state=1)


@pytest.fixture(scope="module")
def test():
    return make_positioned_latency(300, noise=0.0, random_state=2)


@pytest.fixture(scope="module")
def totals_only(train):
    return LatencyEstimator(random_state=0).fit(train.X, train.y, output_tokens=train.output_tokens)


def test_curve_recovered_from_totals_only(totals_only, test):
    # Within 5% of the noiseless truth at every position, averaged.
    assert positioned_mape(totals_only, test) < 0.05
    # ... and at the start of the curve, where totals say the least.
    assert positioned_mape(totals_only, test, max_position=20) < 0.08


def test_progressive_slowdown(totals_only, test):
    curve = totals_only.predict_positions(test.X, [1, 5, 10, 21, 100])
    assert (np.diff(curve, axis=1)[:, :3] > 0).all()
    # The truth goes from 25 to 45 ms (x1.8) between positions 1 and 21.
    ratio = curve[:, 3] / curve[:, 0]
    assert 1.5 < np.median(ratio) < 2.1


def test_totals_match(totals_only, test):
    pred = totals_only.predict_total(test.X, test.output_tokens)
    true = test.y["T_LLM_decode"].to_numpy()
    assert np.mean(np.abs(pred - true) / true) < 0.05


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_per_step_data_does_not_hurt(train, test, totals_only, fraction):
    rng = np.random.RandomState(0)
    steps = [s if rng.uniform() < fraction else None for s in train.positioned_latencies]
    hybrid = LatencyEstimator(random_state=0).fit(
        train.X, train.y, output_tokens=train.output_tokens, positioned_latencies=steps
    )
    assert positioned_mape(hybrid, test) <= positioned_mape(totals_only, test) + 0.005


def test_beats_flat_average(totals_only, train, test):
    # The status quo: the mean per-token latency of each config, flat in p.
    positions = np.arange(1, 65)
    true = test.true_curve(test.X, positions)
    flat = totals_only.predict_total(test.X, 64)[:, None] / 64
    flat_err = np.mean(np.abs(flat - true) / true)
    learnt_err = np.mean(np.abs(totals_only.predict_positions(test.X, positions) - true) / true)
    assert learnt_err < 0.5 * flat_err
