"""Bad input gets a clear error naming what is wrong; each message is pinned."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

from sklat import ExtrapolationWarning, LatencyEstimator, TrainingDivergedError
from sklat.datasets import make_positioned_latency, true_decode_curve


@pytest.fixture(scope="module")
def d():
    return make_positioned_latency(
        40, positioned_fraction=0.5, max_output_tokens=50, random_state=0
    )


def fit(d, est=None, X=None, y=None, **kw):
    kw.setdefault("output_tokens", d.output_tokens)
    est = est or LatencyEstimator(max_epochs=1, random_state=0)
    return est.fit(d.X if X is None else X, d.y if y is None else y, **kw)


def _with(arr, i, value):
    arr = np.array(arr, dtype=np.float64)
    arr[i] = value
    return arr


def test_nan_and_inf_in_X_name_column_and_sample(d):
    X = d.X.astype(float)
    X.iloc[3, 1] = np.nan
    with pytest.raises(
        ValueError,
        match=r"X column 'text_tokens' must be finite "
        r"\(no NaN or inf\); sample 3 is nan",
    ):
        fit(d, X=X)
    X.iloc[3, 1] = np.inf
    with pytest.raises(ValueError, match="sample 3 is inf"):
        fit(d, X=X)


def test_text_in_X_names_column_and_sample(d):
    # scikit-learn's own "could not convert string to float" names neither.
    X = d.X.astype(object)
    X.iloc[3, 1] = "long"
    message = r"X column 'text_tokens' must be numeric, not text; sample 3 is 'long'"
    with pytest.raises(ValueError, match=message):
        fit(d, X=X)
    est = fit(d)
    for call in (
        lambda: est.predict(X),
        lambda: est.predict_total(X, output_tokens=5),
        lambda: est.predict_slo_attainment(X, tpot_ms=10.0),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    # Without column names: the column's index.
    with pytest.raises(ValueError, match=r"X column 1 must be numeric, not text; sample 3"):
        fit(d, X=X.to_numpy())
    # Numbers written as text parse, as they do in scikit-learn.
    X.iloc[3, 1] = str(d.X.iloc[3, 1])
    assert np.isfinite(est.predict_total(X, output_tokens=5)).all()


@pytest.mark.parametrize("col, label", [(0, "T_prefill_total"), (1, "T_LLM_decode")])
@pytest.mark.parametrize(
    "value, message",
    [
        (np.nan, r"must be finite \(no NaN or inf\); sample 2"),
        (np.inf, r"must be finite \(no NaN or inf\); sample 2"),
        (0.0, r"must be positive latencies \(> 0\); sample 2 is 0.0"),
        (-1.0, r"must be positive latencies \(> 0\); sample 2 is -1.0"),
    ],
)
def test_bad_targets(d, col, label, value, message):
    y = d.y.to_numpy().copy()
    y[2, col] = value
    with pytest.raises(ValueError, match=rf"y column {col} \({label}\) {message}"):
        fit(d, y=y)


def test_bad_1d_target(d):
    with pytest.raises(ValueError, match=r"y \(T_LLM_decode\) must be positive"):
        fit(d, y=_with(d.y["T_LLM_decode"], 0, -5))


def test_y_wrong_number_of_columns(d):
    y3 = np.column_stack([d.y.to_numpy(), d.y.to_numpy()[:, :1]])
    with pytest.raises(ValueError, match=r"y must have 1 column .* got shape \(40, 3\)"):
        fit(d, y=y3)
    frame = pd.DataFrame(y3, columns=["a", "b", "c"])
    with pytest.raises(
        ValueError,
        match=r"a DataFrame y must have the columns "
        r"\['T_LLM_decode'\] or .* got \['a', 'b', 'c'\]",
    ):
        fit(d, y=frame)


def test_y_dataframe_columns_are_never_taken_by_position(d):
    # The decode total in a frame with another second column must not be
    # trained as the prefill.
    y = d.y[["T_LLM_decode"]].assign(prefill_ms=d.y["T_prefill_total"])
    with pytest.raises(
        ValueError,
        match=r"matched by name\); got \['T_LLM_decode', "
        r"'prefill_ms'\]",
    ):
        fit(d, y=y)
    with pytest.raises(ValueError, match=r"got \['decode'\]"):
        fit(d, y=d.y[["T_LLM_decode"]].rename(columns={"T_LLM_decode": "decode"}))


def test_y_dataframe_matched_by_name(d):
    swapped = d.y[["T_LLM_decode", "T_prefill_total"]]
    a = fit(d, y=swapped).predict(d.X, output_tokens=3)
    b = fit(d).predict(d.X, output_tokens=3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "value, message",
    [
        (0, r"output_tokens must be >= 1; sample 4 is 0"),
        (-3, r"output_tokens must be >= 1; sample 4 is -3"),
        (2.5, r"output_tokens must be integers; sample 4 is 2.5"),
        (np.nan, r"output_tokens must be finite \(no NaN or inf\); sample 4"),
    ],
)
def test_bad_output_tokens(d, value, message):
    with pytest.raises(ValueError, match=message):
        fit(d, output_tokens=_with(d.output_tokens, 4, value), positioned_latencies=None)


def test_output_tokens_shape_and_presence(d):
    with pytest.raises(ValueError, match="output_tokens has 39 entries but X has 40"):
        fit(d, output_tokens=d.output_tokens[:-1])
    with pytest.raises(ValueError, match="output_tokens must be 1-D"):
        fit(d, output_tokens=d.output_tokens[:, None])
    with pytest.raises(ValueError, match="output_tokens is required to fit"):
        LatencyEstimator().fit(d.X, d.y)
    with pytest.raises(ValueError, match="given both as an argument and as the column"):
        fit(d, X=d.X.assign(output_tokens=d.output_tokens))
    # At predict too: one of the two would be dropped silently.
    est = fit(d)
    with_column = d.X.iloc[:3].assign(output_tokens=[10, 20, 30])
    for call in (est.predict, est.predict_total, est.predict_interval, est.in_domain):
        with pytest.raises(ValueError, match="given both as an argument and as the column"):
            call(with_column, 5)
    np.testing.assert_array_equal(
        est.predict_total(with_column), est.predict_total(d.X.iloc[:3], [10, 20, 30])
    )
    with pytest.raises(TypeError, match="output_tokens must be numeric"):
        fit(d, output_tokens=["a"] * 40)


def test_bad_positioned_latencies(d):
    n = d.output_tokens
    good = [np.ones(k) for k in n]
    with pytest.raises(
        ValueError,
        match=r"positioned_latencies\[1\] has 1 steps but "
        rf"output_tokens is {n[1]}",
    ):
        fit(d, positioned_latencies=[good[0], np.ones(1)] + good[2:])
    bad = list(good)
    bad[5] = _with(bad[5], 0, -1.0)
    with pytest.raises(
        ValueError,
        match=r"positioned_latencies\[5\] must hold positive "
        r"finite latencies; step 1 is -1.0",
    ):
        fit(d, positioned_latencies=bad)
    bad[5] = np.ones((n[5], 1))
    with pytest.raises(ValueError, match=r"positioned_latencies\[5\] must be 1-D"):
        fit(d, positioned_latencies=bad)
    with pytest.raises(ValueError, match="positioned_latencies has 3 entries but X has 40"):
        fit(d, positioned_latencies=good[:3])
    with pytest.raises(TypeError, match="positioned_latencies must be a list"):
        fit(d, positioned_latencies=5)


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"prefill_weight": -1},
            r"'prefill_weight' parameter of LatencyEstimator must be a float in the "
            r"range \[0.0, inf\). Got -1 instead",
        ),
        ({"positioned_weight": np.nan}, r"'positioned_weight' .* range \[0.0, inf\). Got nan"),
        ({"lr": np.inf}, r"'lr' .* range \[0.0, inf\). Got inf"),
        ({"lr": True}, r"'lr' .* Got True"),
        ({"decode_total_weight": 0, "positioned_weight": 0}, "nothing would train"),
        (
            {"loss": "huber"},
            r"'loss' parameter of LatencyEstimator must be a str among \{.*'log'.*\}. Got 'huber'",
        ),
        ({"hidden_size": 0}, r"'hidden_size' .* an int in the range \[1, 4096\]. Got 0"),
        ({"hidden_size": True}, r"'hidden_size' .* Got True"),
        ({"n_cost_terms": 0}, r"'n_cost_terms' .* an int in the range \[1, 64\]. Got 0"),
        ({"max_epochs": 2.5}, r"'max_epochs' .* an int in the range \[1, inf\). Got 2.5"),
        ({"lr": -1.0}, r"'lr' .* a float in the range \[0.0, inf\). Got -1.0"),
        ({"validation_fraction": 1.0}, r"'validation_fraction' .* range \[0.0, 1.0\). Got 1.0"),
        ({"config_mlp_weight_decay": -0.1}, r"'config_mlp_weight_decay' .* Got -0.1"),
        ({"weight_averaging": 1.0}, r"'weight_averaging' .* range \[0.0, 1.0\). Got 1.0"),
        ({"weight_averaging": "0.9"}, r"'weight_averaging' .* Got '0.9'"),
        ({"log_features": "some"}, r"'log_features' .* a str among .*'none'.*. Got 'some'"),
        (
            {"default_output_tokens": 0},
            r"'default_output_tokens' .* None or an int in the range \[1, 1048576\]. Got 0",
        ),
        (
            {"n_threads": 0},
            r"'n_threads' .* a str among \{'auto'\} or an int in the range \[1, inf\). Got 0",
        ),
        ({"verbose": -1}, r"'verbose' .* Got -1"),
        ({"context_features": 3.5}, r"'context_features' .* Got 3.5"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda'"),
    ],
)
def test_bad_params(d, params, message):
    with pytest.raises(ValueError, match=message):
        fit(d, LatencyEstimator(**{"max_epochs": 1, **params}))


def test_device_errors(d, monkeypatch):
    with pytest.raises(
        TypeError, match=r"'device' parameter of LatencyEstimator must be an instance of 'str'"
    ):
        fit(d, LatencyEstimator(device=0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        fit(d, LatencyEstimator(device="cuda"))
    est = fit(d, LatencyEstimator(max_epochs=1, device="auto"))
    assert est.device_ == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ValueError,
        match=r"device='cuda:3' was requested but only 1 "
        r"CUDA device\(s\) are visible",
    ):
        fit(d, LatencyEstimator(device="cuda:3"))


def test_log_features(d):
    X = d.X.assign(neg=np.linspace(-1, 1, 40))
    with pytest.raises(
        ValueError,
        match=r"log_features='all' needs features >= 0; "
        r"X column 'neg'",
    ):
        fit(d, LatencyEstimator(max_epochs=1, log_features="all"), X=X)
    est = fit(d)
    # Every non-negative feature: log(x), or log1p(x) where it holds zeros.
    assert est.feature_log_mask_.tolist() == [True] * 5
    assert est.feature_log_shift_.tolist() == [float((d.X[c] == 0).any()) for c in d.X.columns]
    assert est.feature_log_shift_[1] == 0  # text_tokens >= 16
    X = d.X.copy()
    X.loc[7, "vision_tokens"] = -4
    with pytest.raises(
        ValueError,
        match=r"X column 'vision_tokens' was log-scaled at fit "
        r"time and needs values >= 0; sample 7 is -4",
    ):
        est.predict_total(X, 3)
    # A 0 where training saw only values > 0 lies outside the training range:
    # held at the range's edge with a warning (see test_domain.py).
    X = d.X.copy()
    X.loc[3, "num_active_blocks"] = 0
    with pytest.warns(ExtrapolationWarning, match="X column 'num_active_blocks' = 0"):
        assert np.isfinite(est.predict_total(X, 3)).all()
    # A negative feature stays linear under "auto".
    est = fit(d, LatencyEstimator(max_epochs=1), X=d.X.assign(neg=np.linspace(-1, 1, 40)))
    assert est.feature_log_mask_.tolist() == [True] * 5 + [False]


def test_predict_errors(d):
    with pytest.raises(NotFittedError):
        LatencyEstimator().predict(d.X)
    est = fit(d)
    with pytest.raises(
        ValueError,
        match=r"positions must be >= 1 \(position 1 is the "
        r"first decode step\); entry 1 is 0",
    ):
        est.predict_positions(d.X, [1, 0])
    with pytest.raises(ValueError, match="positions must be integers; entry 0 is 1.5"):
        est.predict_positions(d.X, [1.5])
    with pytest.raises(ValueError, match="positions must be a non-empty 1-D"):
        est.predict_positions(d.X, [])
    with pytest.raises(ValueError, match="output_tokens must be >= 1; sample 0 is 0"):
        est.predict_total(d.X, 0)
    with pytest.raises(
        ValueError, match="Feature names seen at fit time, yet now missing:\n- num_active_blocks"
    ):
        est.predict_total(d.X.iloc[:, :4], 3)
    with pytest.raises(
        ValueError, match="output_tokens_distribution must be a dict or a non-empty 1-D sample"
    ):
        est.predict_budget(d.X, "expectation", output_tokens_distribution=[[3]])
    with pytest.raises(ValueError, match="1-D sample of output lengths; got str of shape"):
        est.predict_budget(d.X, "expectation", output_tokens_distribution="12")
    with pytest.raises(ValueError, match="probabilities'\\] must have one entry per"):
        est.predict_budget(
            d.X,
            "expectation",
            output_tokens_distribution={"values": [1, 2], "probabilities": [1.0]},
        )
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        est.predict_budget(
            d.X,
            "expectation",
            output_tokens_distribution={"values": [1, 2], "probabilities": [1.5, -0.5]},
        )


def test_divergence_is_reported(d):
    with pytest.raises(TrainingDivergedError, match="training diverged at epoch 1"):
        fit(d, LatencyEstimator(lr=1e12, max_epochs=5, loss="mse", random_state=0))


def test_dataset_argument_errors():
    with pytest.raises(ValueError, match="curve must be one of"):
        make_positioned_latency(5, curve="cubic")
    with pytest.raises(ValueError, match=r"positioned_fraction must be in \[0, 1\]"):
        make_positioned_latency(5, positioned_fraction=2)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        make_positioned_latency(5, noise=-1)
    for bad in (np.nan, np.inf, "0.1"):
        with pytest.raises(ValueError, match=r"noise must be >= 0 and finite; got"):
            make_positioned_latency(5, noise=bad)
    for name in ("n_samples", "max_output_tokens"):
        for bad in (0, -1, 2.5, "10", True):
            with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1; got"):
                make_positioned_latency(**{"n_samples": 5, name: bad})
    for bad in (0, -3.0, np.nan):
        with pytest.raises(ValueError, match="median_output_tokens must be a finite number > 0"):
            make_positioned_latency(5, median_output_tokens=bad)
    assert make_positioned_latency(np.int64(3), max_output_tokens=np.int32(4)).X.shape == (3, 5)
    with pytest.raises(ValueError, match="curve must be one of"):
        true_decode_curve(make_positioned_latency(2).X, [1], curve="cubic")


def test_dataframe_without_feature_columns(d, fitted):
    # scikit-learn's validation of a DataFrame with no columns fails on
    # finding no dtype ("at least one array or dtype is required").
    only_n = pd.DataFrame({"output_tokens": d.output_tokens})
    with pytest.raises(ValueError, match=r"X has no feature columns besides 'output_tokens'; give"):
        LatencyEstimator(max_epochs=1).fit(only_n, d.y)
    no_columns = pd.DataFrame(index=range(len(d.y)))
    with pytest.raises(ValueError, match=r"X has no feature columns; give at least one"):
        fit(d, X=no_columns)
    with pytest.raises(ValueError, match=r"X has no feature columns besides 'output_tokens'"):
        fitted.predict(only_n.head(3))
    with pytest.raises(ValueError, match=r"X has no feature columns; give at least one"):
        fitted.predict_total(no_columns.head(3), output_tokens=[3, 4, 5])
