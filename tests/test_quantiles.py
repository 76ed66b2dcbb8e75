"""predict_quantiles: the predictive distribution's quantiles, consistent with
the attainment of the same distribution."""

import numpy as np
import pytest

LEVELS = [0.05, 0.5, 0.9, 0.99, 1.0]
OBJECTIVE = {"prefill": "ttft_ms", "per_token": "tpot_ms", "e2e": "e2e_ms"}


@pytest.mark.parametrize("target", ["prefill", "per_token", "e2e"])
@pytest.mark.parametrize("known_length", [True, False])
def test_a_quantile_is_the_smallest_value_attained_at_its_level(
    fitted, small_data, target, known_length
):
    # Attainment at the quantile (to rounding) reaches the level; a hair
    # below it, it does not (the quantile is a value of the support).
    X = small_data.X.iloc[:6]
    length = {"output_tokens": small_data.output_tokens[:6]} if known_length else {}
    if target == "prefill":
        length = {}
    q = fitted.predict_quantiles(X, LEVELS, target=target, **length)
    assert q.shape == (6, len(LEVELS)) and q.dtype == np.float64
    assert (np.diff(q, axis=1) >= 0).all()
    for j, level in enumerate(LEVELS):
        at = fitted.predict_slo_attainment(X, **{OBJECTIVE[target]: q[:, j] * (1 + 1e-9)}, **length)
        below = fitted.predict_slo_attainment(
            X, **{OBJECTIVE[target]: q[:, j] * (1 - 1e-9)}, **length
        )
        assert (at >= level - 1e-9).all()
        assert (below < level - 1e-12).all()


def test_total_and_per_token_agree_for_a_known_length(fitted, small_data):
    X, n = small_data.X.iloc[:5], small_data.output_tokens[:5]
    total = fitted.predict_quantiles(X, [0.5, 0.9], output_tokens=n)
    per_token = fitted.predict_quantiles(X, [0.5, 0.9], target="per_token", output_tokens=n)
    np.testing.assert_allclose(per_token * n[:, None], total, rtol=1e-12)


def test_the_upper_quantile_is_the_upper_budget(fitted, small_data):
    # predict_budget's upper bound at confidence c is the rank ceil((n + 1) c)
    # score; the quantile at level k / n is the rank k score.
    X = small_data.X.iloc[:4]
    n_cal = len(fitted.conformity_scores_)
    k = int(np.ceil((n_cal + 1) * 0.8))
    dist = {"values": [20, 100, 200], "probabilities": [0.5, 0.3, 0.2]}
    q = fitted.predict_quantiles(X, k / n_cal, target="per_token", output_tokens_distribution=dist)
    budget = fitted.predict_budget(
        X, "expectation", confidence=0.8, output_tokens_distribution=dist
    )
    np.testing.assert_allclose(q[:, 0], budget, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(quantiles=[0.5, 0.0]), ValueError, r"quantiles must be levels in \(0, 1\]; entry 1"),
        (dict(quantiles=1.5), ValueError, r"quantiles must be levels in \(0, 1\]"),
        (dict(quantiles=[]), ValueError, "quantiles must be a non-empty 1-D sequence"),
        (dict(quantiles=["a"]), TypeError, "quantiles must be numeric"),
        (dict(target="ttft"), ValueError, r"target must be one of \['total', 'per_token'"),
    ],
)
def test_bad_quantile_requests(fitted, small_data, kwargs, error, message):
    with pytest.raises(error, match=message):
        fitted.predict_quantiles(small_data.X.iloc[:2], **kwargs)


def test_prefill_quantiles_need_a_prefill_head(fitted_1d, small_data):
    with pytest.raises(ValueError, match="prefill"):
        fitted_1d.predict_quantiles(small_data.X.iloc[:2], target="e2e")
