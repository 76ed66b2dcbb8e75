"""LatencyEstimator.check_drift: recent requests against the calibration."""

from pathlib import Path

import numpy as np
import pytest

from sklat import LatencyEstimator
from sklat.control import check_drift
from sklat.datasets import make_positioned_latency
from sklat.io import load_results

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
FEATURES = ["text_tokens", "num_active_blocks"]


def test_no_false_alarms_beyond_the_stated_rate(fitted):
    # Fresh requests drawn as the fixture's: 200 draws of 30 at alpha=0.1.
    pool = make_positioned_latency(
        3000, noise=0.05, positioned_fraction=0.0, max_output_tokens=256, random_state=11
    )
    rng = np.random.RandomState(0)
    alarms = []
    for _ in range(200):
        rows = rng.choice(len(pool.X), 30, replace=False)
        report = check_drift(
            fitted, pool.X.iloc[rows], pool.y.iloc[rows], pool.output_tokens[rows], alpha=0.1
        )
        alarms.append(report.drift)
    # The calibration set is fixed across draws, so the rate is not exactly
    # alpha; it must stay near it.
    assert np.mean(alarms) <= 0.16


@pytest.mark.parametrize("target", ["llama_dense_eager", "llama_dense_sdpa_bf16"])
def test_a_real_move_is_flagged_and_not_its_own_setting(target):
    source = load_results(DATA, datasets=["llama_dense_sdpa"], features=FEATURES)
    moved = load_results(DATA, datasets=[target], features=FEATURES)
    est = LatencyEstimator(max_epochs=60, random_state=0).fit(
        source.X, source.y, output_tokens=source.output_tokens
    )
    rows = np.random.RandomState(0).choice(len(moved.X), 30, replace=False)
    report = check_drift(est, moved.X.iloc[rows], moved.y.iloc[rows], moved.output_tokens[rows])
    assert report.drift and report.p_value < 0.01
    assert report.outside["decode"] > 2 * report.nominal_outside
    assert sorted(report.features["feature"]) == sorted([*FEATURES, "output_tokens"])
    assert report.n_requests == 30


def test_the_drift_report_counts_misses(fitted, small_data):
    d = small_data
    y = d.y.copy()
    y["T_LLM_decode"] *= 2.0  # every decode 2x slower, the prefill unchanged
    report = check_drift(fitted, d.X.iloc[:40], y.iloc[:40], d.output_tokens[:40], alpha=0.01)
    assert report.drift and report.p_values["decode"] < 1e-6
    assert report.outside["decode"] > 0.9 and report.outside["prefill"] < 0.5
    assert 0 < report.nominal_outside <= 0.1
    np.testing.assert_allclose(report.p_value, min(1, 2 * min(report.p_values.values())))
    decode_only = check_drift(
        fitted, d.X.iloc[:40], y["T_LLM_decode"].iloc[:40], d.output_tokens[:40]
    )
    assert set(decode_only.p_values) == {"decode"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 1.0}, r"alpha must be a number in \(0, 1\), e.g. 0.01; got 1.0"),
        ({"output_tokens": None}, "check_drift needs output_tokens"),
        ({"rows": 1}, "at least 2 requests"),
    ],
)
def test_bad_drift_checks(fitted, small_data, kwargs, message):
    d = small_data
    rows = kwargs.pop("rows", 10)
    args = {"output_tokens": d.output_tokens[:rows], **kwargs}
    with pytest.raises(ValueError, match=message):
        check_drift(fitted, d.X.iloc[:rows], d.y.iloc[:rows], **args)


def test_a_prefill_column_needs_a_prefill_head(fitted_1d, small_data):
    d = small_data
    with pytest.raises(ValueError, match="y has a prefill column but this model has no prefill"):
        check_drift(fitted_1d, d.X.iloc[:10], d.y.iloc[:10], d.output_tokens[:10])
