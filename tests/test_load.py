"""Load features: the costs of a shared batch, smooth and non-decreasing in the
load, and the plain model where no column measures it."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import sklat
from sklat import LatencyEstimator
from sklat._module import CostTermsLatencyModule
from sklat.exceptions import ExtrapolationWarning


def _loaded_requests(n=240, levels=(1, 2, 4, 8), seed=0):
    """A batching engine's requests: time per token ``4 + 1.5 * concurrency``
    ms (weights read plus the batch's work) plus a KV term, a prefill of
    ``0.2 ms`` per prompt token plus a wait of ``6 ms`` per request in
    flight, 3% noise."""
    rng = np.random.default_rng(seed)
    prompt = rng.choice([64, 128, 256, 512], n)
    concurrency = rng.choice(levels, n).astype(float)
    tokens = rng.integers(8, 96, n)
    tpot = (4.0 + 1.5 * concurrency) * (1 + prompt / 4096)
    decode = tpot * tokens * rng.lognormal(0, 0.03, n)
    prefill = (0.2 * prompt + 6.0 * concurrency) * rng.lognormal(0, 0.03, n)
    X = pd.DataFrame({"text_tokens": prompt, "concurrency": concurrency})
    y = pd.DataFrame({"T_prefill_total": prefill, "T_LLM_decode": decode})
    return X, y, tokens


@pytest.fixture(scope="module")
def loaded():
    X, y, tokens = _loaded_requests()
    est = LatencyEstimator(max_epochs=60, random_state=0, n_folds=None, n_threads=1)
    return est.fit(X, y, output_tokens=tokens)


def test_concurrency_is_a_load_feature_by_default(loaded):
    assert loaded.load_features_.tolist() == [1]
    assert loaded.context_features_.tolist() == [0]


def test_predictions_do_not_fall_as_the_load_grows(loaded):
    # Every prompt, past the trained levels too (1..8 trained).
    grid = np.linspace(1, 64, 200)
    for prompt in (64, 300, 512):
        X = pd.DataFrame({"text_tokens": prompt, "concurrency": grid})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)
            total = loaded.predict_total(X, output_tokens=50)
            prefill = loaded.predict_prefill(X)
            positions = loaded.predict_positions(X, [1, 25, 50])
        for values in (total, prefill, *positions.T):
            assert (np.diff(values) >= -1e-9 * values[1:]).all()
        assert total[-1] > total[0] and prefill[-1] > prefill[0]


def test_the_trend_holds_one_doubling_past_the_trained_levels(loaded):
    # Trained on 1..8: at 16 the time per token is 4 + 1.5 * 16 = 28 ms
    # (times the KV factor); the prediction keeps growing towards it rather
    # than holding at the level of 8 (16 ms).
    X = pd.DataFrame({"text_tokens": [128], "concurrency": [16.0]})
    with pytest.warns(ExtrapolationWarning, match="concurrency"):
        tpot = loaded.predict_total(X, output_tokens=50)[0] / 50
    at_eight = loaded.predict_total(X.assign(concurrency=8.0), output_tokens=50)[0] / 50
    truth = (4.0 + 1.5 * 16) * (1 + 128 / 4096)
    assert tpot > 1.3 * at_eight
    assert abs(tpot / truth - 1) < 0.25


def test_load_reaches_only_the_power_laws():
    # Neither MLP nor the shape's mixture sees a load column, the weights on
    # it are used as their absolute values, and the first (idle) term of the
    # flat cost and of the prefill ignores it.
    torch.manual_seed(0)
    module = CostTermsLatencyModule(
        3, hidden_size=8, n_basis=3, context_features=[0], load_features=[2]
    ).double()
    with torch.no_grad():
        module.config_linear.weight.normal_(0.0, 1.0)
        module.decode_mlp[-1].weight.normal_(0.0, 1.0)
        module.prefill_mlp[-1].weight.normal_(0.0, 1.0)
    x = torch.randn(5, 3, dtype=torch.float64)
    more = x.clone()
    more[:, 2] += 1.0
    a, b = module.encode(x), module.encode(more)
    for key in ("flat", "slope", "prefill"):
        assert (b[key] >= a[key]).all()
    mixture = a["shape"] / a["shape"].sum(1, keepdim=True)
    assert torch.allclose(mixture, b["shape"] / b["shape"].sum(1, keepdim=True))
    weight = module.linear_weight()
    assert weight[module._slices["flat"].start, 2] == 0
    assert weight[module._slices["prefill"].start, 2] == 0
    assert (weight[module._slices["context"], 2] >= 0).all()


def test_a_model_without_a_load_column_is_unchanged():
    # Without load features the module is the one of 0.14: same masks, same
    # weights from the same seed, same outputs.
    kwargs = dict(hidden_size=8, n_basis=3, context_features=[0])
    torch.manual_seed(0)
    plain = CostTermsLatencyModule(3, **kwargs)
    torch.manual_seed(0)
    none = CostTermsLatencyModule(3, load_features=[], **kwargs)
    assert not plain.nonnegative_mask.any()
    x = torch.randn(4, 3)
    for key in ("flat", "slope", "shape", "prefill"):
        assert torch.equal(plain.encode(x)[key], none.encode(x)[key])
    assert set(plain.state_dict()) == {
        k for k in none.state_dict() if k not in ("prefill_input_mask", "nonnegative_mask")
    }


def test_a_load_feature_without_a_prefill_head():
    # Decode totals only (1-D y): the module has no prefill terms, whose idle
    # term the load must not reach; the decode still grows with the load.
    X, y, tokens = _loaded_requests(n=60)
    est = LatencyEstimator(max_epochs=3, random_state=0, n_threads=1)
    est.fit(X, y["T_LLM_decode"], output_tokens=tokens)
    assert est.load_features_.tolist() == [1] and est.n_outputs_ == 1
    grid = pd.DataFrame({"text_tokens": 256, "concurrency": [1.0, 2.0, 4.0, 8.0]})
    assert (np.diff(est.predict_total(grid, output_tokens=40)) >= 0).all()


def test_none_makes_concurrency_an_ordinary_feature():
    X, y, tokens = _loaded_requests(n=60)
    est = LatencyEstimator(max_epochs=2, random_state=0, load_features=None)
    est.fit(X, y, output_tokens=tokens)
    assert est.load_features_.tolist() == []


def test_named_load_features_and_persistence(tmp_path):
    X, y, tokens = _loaded_requests(n=60)
    X = X.rename(columns={"concurrency": "running"}).assign(kv_usage=X["concurrency"] / 10)
    est = LatencyEstimator(max_epochs=2, random_state=0, load_features=["running", 2])
    est.fit(X, y, output_tokens=tokens)
    assert est.load_features_.tolist() == [1, 2]
    path = tmp_path / "model.safetensors"
    sklat.save(est, path)
    loaded = sklat.load(path)
    assert loaded.load_features_.tolist() == [1, 2]
    np.testing.assert_allclose(
        loaded.predict_total(X, output_tokens=tokens), est.predict_total(X, output_tokens=tokens)
    )


@pytest.mark.parametrize(
    "param, value, message",
    [
        ("load_features", ["queue"], r"load_features names 'queue', which is not a feature of X"),
        ("load_features", [5], "load_features index 5 is out of range for 2 features"),
        ("load_features", ["concurrency", 1], "load_features lists a feature twice"),
        (
            "load_features",
            [0.5],
            "load_features entries must be feature names or column indices; got 0.5",
        ),
        (
            "load_features",
            ["text_tokens"],
            "feature 'text_tokens' is both a context feature and a load feature",
        ),
        (
            "load_features",
            "busy",
            r"'load_features' parameter of LatencyEstimator must be a str among",
        ),
        (
            "prefill_load_features",
            ["queue"],
            r"prefill_load_features names 'queue', which is not a feature of X",
        ),
        (
            "prefill_load_features",
            [7],
            "prefill_load_features index 7 is out of range for 2 features",
        ),
        (
            "prefill_load_features",
            ["text_tokens"],
            "feature 'text_tokens' is both a context feature and a load feature",
        ),
        (
            "prefill_load_features",
            "waiting",
            r"'prefill_load_features' parameter of LatencyEstimator must be a str",
        ),
    ],
)
def test_bad_load_features(param, value, message):
    X, y, tokens = _loaded_requests(n=30)
    est = LatencyEstimator(max_epochs=1, **{param: value})
    with pytest.raises(ValueError, match=message):
        est.fit(X, y, output_tokens=tokens)


def test_a_negative_load_is_refused_at_fit_and_predict(loaded):
    X, y, tokens = _loaded_requests(n=30)
    X.loc[4, "concurrency"] = -1.0
    message = (
        r"X column 'concurrency' is a load feature \(requests in flight or a usage\) "
        r"and must be >= 0; sample 4 is -1.0"
    )
    with pytest.raises(ValueError, match=message):
        LatencyEstimator(max_epochs=1, log_features="none").fit(X, y, output_tokens=tokens)
    with pytest.raises(ValueError, match=r"'concurrency' .* sample 4"):
        loaded.predict_total(X, output_tokens=10)


def test_one_load_for_every_candidate(loaded):
    X = pd.DataFrame({"text_tokens": [64, 256, 512]})
    with_column = X.assign(concurrency=6.0)
    expected = loaded.predict_slo_attainment(with_column, tpot_ms=15.0, output_tokens=40)
    np.testing.assert_array_equal(
        loaded.predict_slo_attainment(X, tpot_ms=15.0, output_tokens=40, load=6), expected
    )
    np.testing.assert_array_equal(
        loaded.predict_slo_attainment(X, tpot_ms=15.0, output_tokens=40, load={"concurrency": 6}),
        expected,
    )
    choice = sklat.control.choose(loaded, X, tpot_ms=15.0, output_tokens=40, load=6.0)
    same = sklat.control.choose(loaded, with_column, tpot_ms=15.0, output_tokens=40)
    assert choice.index == same.index
    np.testing.assert_array_equal(choice.attainment, same.attainment)
    # The load is what the attainment depends on.
    with pytest.warns(ExtrapolationWarning, match="concurrency"):
        busy = loaded.predict_slo_attainment(X, tpot_ms=15.0, output_tokens=40, load=16)
    assert (busy <= expected).all() and busy.sum() < expected.sum()


def test_every_prediction_takes_one_load(loaded):
    # load= is the load column set for every row, whatever the method.
    X = pd.DataFrame({"text_tokens": [64, 256, 512]})
    with_column = X.assign(concurrency=6.0)
    calls = {
        "predict": lambda est, X, **kw: est.predict(X, 40, **kw),
        "predict_total": lambda est, X, **kw: est.predict_total(X, 40, **kw),
        "predict_prefill": lambda est, X, **kw: est.predict_prefill(X, **kw),
        "predict_positions": lambda est, X, **kw: est.predict_positions(X, [1, 20], **kw),
        "predict_interval": lambda est, X, **kw: est.predict_interval(X, 40, **kw),
        "predict_interval N unknown": lambda est, X, **kw: est.predict_interval(X, **kw),
        "predict_interval prefill": lambda est, X, **kw: est.predict_interval(
            X, target="prefill", **kw
        ),
        "predict_budget": lambda est, X, **kw: est.predict_budget(X, confidence=0.9, **kw),
        "predict_quantiles": lambda est, X, **kw: est.predict_quantiles(X, output_tokens=40, **kw),
        "in_domain": lambda est, X, **kw: est.in_domain(X, 40, **kw),
    }
    for name, call in calls.items():
        expected = call(loaded, with_column)
        np.testing.assert_array_equal(call(loaded, X, load=6), expected, err_msg=name)
    assert not loaded.in_domain(X, 40, load=16).any()
    with pytest.raises(ValueError, match="X holds the load feature column"):
        loaded.predict_total(with_column, 40, load=6)


def test_one_load_where_the_load_is_not_the_last_column():
    # The load set by load= takes its place in the model's column order
    # (scikit-learn refuses columns in another order than in fit).
    X, y, tokens = _loaded_requests(n=60)
    X = X[["concurrency", "text_tokens"]]
    est = LatencyEstimator(max_epochs=2, random_state=0, n_folds=None).fit(
        X, y, output_tokens=tokens
    )
    prompts = X[["text_tokens"]].iloc[:3]
    expected = est.predict_quantiles(X.iloc[:3].assign(concurrency=3.0), output_tokens=10)
    np.testing.assert_array_equal(
        est.predict_quantiles(prompts, output_tokens=10, load=3), expected
    )
    np.testing.assert_array_equal(
        est.predict_total(prompts, 10, load=3),
        est.predict_total(X.iloc[:3].assign(concurrency=3.0), 10),
    )
    candidates = prompts.assign(quality=[0.1, 0.3, 0.2])
    choice = sklat.control.choose(
        est, candidates, tpot_ms=50.0, output_tokens=10, load=3, prefer="quality"
    )
    np.testing.assert_array_equal(
        choice.attainment,
        est.predict_slo_attainment(prompts, tpot_ms=50.0, output_tokens=10, load=3),
    )


def test_one_load_into_an_array():
    X, y, tokens = _loaded_requests(n=60)
    X = X[["concurrency", "text_tokens"]].to_numpy()
    est = LatencyEstimator(max_epochs=2, random_state=0, load_features=[0], context_features=[1])
    est.fit(X, y, output_tokens=tokens)
    prompts = np.array([[64.0], [256.0]])
    np.testing.assert_array_equal(
        est.predict_slo_attainment(prompts, tpot_ms=20.0, output_tokens=10, load=3),
        est.predict_slo_attainment(
            np.column_stack([[3.0, 3.0], prompts]), tpot_ms=20.0, output_tokens=10
        ),
    )
    with pytest.raises(ValueError, match=r"X must have 1 columns \(the other features\)"):
        est.predict_slo_attainment(X, tpot_ms=20.0, output_tokens=10, load=3)


@pytest.mark.parametrize(
    "load, message",
    [
        (-1, r"load of feature 'concurrency' must be a finite number >= 0; got -1"),
        (float("nan"), "load of feature 'concurrency' must be a finite number"),
        ("8", "load of feature 'concurrency' must be a finite number"),
        (True, "load of feature 'concurrency' must be a finite number"),
        ({"text_tokens": 3}, r"load= names 'text_tokens', which is not a load feature"),
        ({}, "load= is an empty dict"),
        ([1, 2], r"load of feature 'concurrency' is one number for every row; got \[1, 2\]\. "),
        (np.array([4.0]), r"is one number for every row; got array\(\[4\.\]\)\. A load per row"),
    ],
)
def test_bad_load(loaded, load, message):
    X = pd.DataFrame({"text_tokens": [64]})
    with pytest.raises(ValueError, match=message):
        loaded.predict_slo_attainment(X, tpot_ms=15.0, output_tokens=40, load=load)


def test_a_load_as_a_numpy_scalar_or_0d_array_is_one_number(loaded):
    X = pd.DataFrame({"text_tokens": [64, 256]})
    want = loaded.predict_total(X, output_tokens=40, load=4)
    for load in (np.int64(4), np.float32(4.0), np.asarray(4.0), {"concurrency": np.asarray(4)}):
        np.testing.assert_array_equal(loaded.predict_total(X, output_tokens=40, load=load), want)


def test_load_given_twice_or_to_a_model_without_one(loaded):
    X = pd.DataFrame({"text_tokens": [64], "concurrency": [2.0]})
    with pytest.raises(ValueError, match=r"X holds the load feature column\(s\) \['concurrency'\]"):
        sklat.control.choose(loaded, X, tpot_ms=15.0, load=4)
    Xp, y, tokens = _loaded_requests(n=60)
    plain = LatencyEstimator(max_epochs=2, random_state=0, load_features=None)
    plain.fit(Xp, y, output_tokens=tokens)
    with pytest.raises(ValueError, match="load= needs a model trained with a load feature"):
        plain.predict_slo_attainment(X[["text_tokens"]], tpot_ms=15.0, load=4)


def test_several_load_features_need_a_dict_and_capacity_a_name():
    X, y, tokens = _loaded_requests(n=60)
    X = X.assign(kv_usage=X["concurrency"] / 10)
    est = LatencyEstimator(max_epochs=2, random_state=0, load_features=["concurrency", "kv_usage"])
    est.fit(X, y, output_tokens=tokens)
    configs = pd.DataFrame({"text_tokens": [64]})
    with pytest.raises(ValueError, match=r"the model has 2 load features .* as a dict"):
        est.predict_slo_attainment(configs, tpot_ms=15.0, load=4)
    both = est.predict_slo_attainment(
        configs, tpot_ms=15.0, output_tokens=8, load={"concurrency": 4, "kv_usage": 0.4}
    )
    assert both.shape == (1,)
    with pytest.raises(ValueError, match=r"the model has 2 load features .* name the one"):
        sklat.control.capacity(est, configs.assign(kv_usage=0.4), tpot_ms=15.0)


def test_capacity_sweeps_the_named_load_feature():
    X, y, tokens = _loaded_requests(n=120)
    X = X.rename(columns={"concurrency": "running"})
    est = LatencyEstimator(max_epochs=20, random_state=0, load_features=["running"])
    est.fit(X, y, output_tokens=tokens)
    result = sklat.control.capacity(
        est, pd.DataFrame({"text_tokens": [64, 512]}), tpot_ms=12.0, levels=[1, 2, 4, 8]
    )
    assert result.attainment.shape == (2, 4)
    assert (np.diff(result.attainment, axis=1) <= 1e-12).all()


def test_capacity_of_a_fractional_load_sweeps_its_range():
    # A KV-cache usage in [0.1, 0.8]: the default levels of a count (1, 2, ...)
    # would all lie past it; 16 evenly spaced ones up to twice its largest do not.
    X, y, tokens = _loaded_requests(n=80)
    X = X.assign(kv_usage=X["concurrency"] / 10).drop(columns="concurrency")
    est = LatencyEstimator(max_epochs=2, random_state=0, load_features=["kv_usage"])
    est.fit(X, y, output_tokens=tokens)
    with pytest.warns(ExtrapolationWarning, match="levels 0.9, 1, .*, 1.6 of 'kv_usage'"):
        result = sklat.control.capacity(est, pd.DataFrame({"text_tokens": [64]}), tpot_ms=1e6)
    np.testing.assert_allclose(result.levels, np.arange(1, 17) / 10)
    assert result.capacity[0] == pytest.approx(1.6) and not result.bounded[0]


def test_capacity_of_a_load_that_never_varied_is_refused():
    # Trained at one load, a model cannot tell how the latency changes with
    # it: every level would be evaluated at that one value.
    X, y, tokens = _loaded_requests(n=60)
    configs = pd.DataFrame({"text_tokens": [64]})
    for value in (0.0, 4.0):
        est = LatencyEstimator(max_epochs=1, random_state=0, load_features=["queue"])
        est.fit(X.assign(queue=value).drop(columns="concurrency"), y, output_tokens=tokens)
        for levels in (None, [1, 2]):
            message = f"the load 'queue' was {value:g} in every training"
            with pytest.raises(ValueError, match=message):
                sklat.control.capacity(est, configs, tpot_ms=20.0, levels=levels)
