"""The context term: ``context_features`` and the curve past the trained lengths."""

import numpy as np
import pytest

import sklat
from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency


@pytest.fixture(scope="module")
def d():
    return make_positioned_latency(60, max_output_tokens=40, random_state=0)


def fit(d, X=None, **params):
    # calibration_fraction=0: the fitted scales are those of all the requests.
    params.setdefault("calibration_fraction", 0.0)
    est = LatencyEstimator(max_epochs=2, random_state=0, **params)
    return est.fit(d.X if X is None else X, d.y, output_tokens=d.output_tokens)


@pytest.mark.parametrize(
    "context_features, expected",
    [
        ("auto", [0, 1]),
        (None, []),
        (["text_tokens"], [1]),
        ([4, 0], [4, 0]),
        (("vision_tokens",), [0]),
    ],
)
def test_context_features_resolve(d, context_features, expected):
    est = fit(d, context_features=context_features)
    assert est.context_features_.tolist() == expected
    context = d.X.to_numpy()[:, expected].sum(axis=1)
    assert est.context_scale_ == pytest.approx(np.median(context + d.output_tokens))


def test_auto_without_column_names_has_no_context(d):
    est = fit(d, X=d.X.to_numpy())
    assert est.context_features_.tolist() == []


@pytest.mark.parametrize(
    "context_features, message",
    [
        (
            "prompt",
            r"'context_features' parameter of LatencyEstimator must be a str among "
            r"\{'auto'\}, None or an array-like. Got 'prompt'",
        ),
        (3.5, r"'context_features' parameter of LatencyEstimator must be a str among"),
        (
            ["prompt_tokens"],
            r"context_features names 'prompt_tokens', which is not a "
            r"feature of X \(features: \['vision_tokens'",
        ),
        ([7], "context_features index 7 is out of range for 5 features"),
        ([1, "text_tokens"], "context_features lists a feature twice"),
        (
            [1.0],
            r"context_features entries must be feature names or column indices; "
            r"got 1.0",
        ),
    ],
)
def test_bad_context_features(d, context_features, message):
    with pytest.raises(ValueError, match=message):
        fit(d, context_features=context_features)


def test_names_need_column_names(d):
    with pytest.raises(ValueError, match="X has no column names"):
        fit(d, X=d.X.to_numpy(), context_features=["text_tokens"])


def test_negative_context_is_refused(d):
    est = fit(d, log_features="none")
    X = d.X.copy()
    X.loc[2, "text_tokens"] = -3
    with pytest.raises(
        ValueError,
        match=r"X column 'text_tokens' is a context feature "
        r"\(a number of tokens\) and must be >= 0; "
        r"sample 2 is -3",
    ):
        est.predict_positions(X, [1])
    with pytest.raises(ValueError, match="is a context feature"):
        fit(d, X=X, log_features="none")


def test_curve_continues_linearly_past_the_longest_request(d):
    # Past max_output_tokens_ the learnt shape is constant: only the context
    # term changes the curve, by the same amount at every step.
    est = fit(d)
    start = est.max_output_tokens_
    curve = est.predict_positions(d.X.iloc[:5], np.arange(start, start + 50))
    steps = np.diff(curve, axis=1)
    np.testing.assert_allclose(
        steps, steps[:, :1].repeat(steps.shape[1], axis=1), rtol=1e-6, atol=1e-12
    )
    assert (steps >= 0).all()


def test_context_settings_survive_save_and_load(d, tmp_path):
    est = fit(d, context_features=["text_tokens"])
    sklat.save(est, tmp_path / "m.safetensors")
    loaded = sklat.load(tmp_path / "m.safetensors")
    assert loaded.context_features == ["text_tokens"]
    assert loaded.context_features_.tolist() == [1]
    assert loaded.context_scale_ == est.context_scale_
    np.testing.assert_array_equal(
        loaded.predict_positions(d.X, [1, 100, 4000]), est.predict_positions(d.X, [1, 100, 4000])
    )


def test_context_growth_continues_past_trained_lengths():
    # KV-cache growth linear in the running context (prompt + p): trained on
    # outputs up to 256 tokens, the curve keeps growing at 1,000-2,000 tokens,
    # closer to the truth than the curve held at its value at position 256.
    train = make_positioned_latency(
        600, noise=0.03, curve="linear", max_output_tokens=256, random_state=0
    )
    test = make_positioned_latency(100, noise=0.0, curve="linear", random_state=1)
    positions = np.arange(1000, 2001, 100)
    truth = test.true_curve(test.X, positions)
    est = LatencyEstimator(random_state=0).fit(train.X, train.y, output_tokens=train.output_tokens)
    assert est.max_output_tokens_ == 256
    pred = est.predict_positions(test.X, positions)
    held = est.predict_positions(test.X, [256])
    assert (np.diff(pred, axis=1) > 0).all()
    error = np.mean(np.abs(pred - truth) / truth)
    assert error < 0.8 * np.mean(np.abs(held - truth) / truth)
