"""Interrupted and failed fits, numbers out of range, weak inputs, and the
ecosystem habits a scikit-learn user relies on."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklat
from sklat import LatencyEstimator, TrainingDivergedError
from sklat._net import LatencyNet, WeightedLatencyLoss
from sklat.datasets import make_positioned_latency


@pytest.fixture(scope="module")
def d():
    return make_positioned_latency(120, max_output_tokens=64, random_state=0)


def _fit(d, **params):
    params = {"max_epochs": 3, "random_state": 0, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LatencyEstimator(**params).fit(d.X, d.y, output_tokens=d.output_tokens)


def _interrupt_on_step(monkeypatch, step):
    real, calls = LatencyNet.train_step, {"n": 0}

    def train_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LatencyNet, "train_step", train_step)


def test_ctrl_c_during_fit_is_reraised_and_leaves_no_fitted_state(d, monkeypatch):
    _interrupt_on_step(monkeypatch, 3)
    est = LatencyEstimator(max_epochs=2000, random_state=0)
    with pytest.raises(KeyboardInterrupt):
        est.fit(d.X, d.y, output_tokens=d.output_tokens)
    assert not [k for k in vars(est) if k.endswith("_")]
    with pytest.raises(sklearn.exceptions.NotFittedError):
        est.predict_total(d.X, 3)


def test_early_stopping_is_not_taken_for_ctrl_c(d):
    est = _fit(d, max_epochs=500, n_iter_no_change=2)
    assert len(est.history_) < 500


def _diverge(monkeypatch):
    def nan_loss(self, pred, target):
        return pred["total"].sum() * float("nan")

    monkeypatch.setattr(WeightedLatencyLoss, "forward", nan_loss)


def test_failed_refit_keeps_the_previous_fitted_state(d, monkeypatch):
    est = _fit(d)
    before = est.predict_total(d.X, 9)
    state = dict(vars(est))
    scale = est.step_scale_
    scaled = d.y * 1000
    with monkeypatch.context() as m:
        _diverge(m)
        with pytest.raises(TrainingDivergedError):
            est.set_params(lr=10).fit(d.X, scaled, output_tokens=d.output_tokens)
    assert vars(est).keys() == state.keys()
    assert all(vars(est)[k] is v for k, v in state.items() if k.endswith("_") or k[0] == "_")
    assert est.step_scale_ == scale and est.net_ is state["net_"]
    np.testing.assert_array_equal(est.predict_total(d.X, 9), before)
    # A refit that fails input validation leaves the fitted shape as it was.
    bad = d.X.iloc[:, :3].copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        est.fit(bad, d.y, output_tokens=d.output_tokens)
    assert est.n_features_in_ == 5 and list(est.feature_names_in_) == list(d.X.columns)
    np.testing.assert_array_equal(est.predict_total(d.X, 9), before)


def test_divergence_message_names_only_relevant_fixes(d, monkeypatch):
    _diverge(monkeypatch)
    with pytest.raises(TrainingDivergedError, match=r"too high for this data \(lower `lr`\)\.$"):
        _fit(d, loss="log")
    with pytest.raises(TrainingDivergedError, match=r"for loss='mse' \(use loss='log'\)"):
        _fit(d, loss="mse")


@pytest.mark.parametrize(
    "call",
    [
        lambda est, X: est.predict_positions(X, [1e19]),
        lambda est, X: est.predict_total(X, 1e19),
        lambda est, X: est.predict_total(X, 10**9),
        lambda est, X: est.predict_positions(X, [2**20 + 1]),
        lambda est, X: est.predict_budget(X, output_tokens_distribution=[10**9]),
    ],
)
def test_huge_lengths_are_refused_at_predict(d, call):
    est = _fit(d)
    with pytest.raises(ValueError, match=r"must be <= 1048576 \(sklat.MAX_OUTPUT_TOKENS\)"):
        call(est, d.X.iloc[:2])


def test_huge_lengths_are_refused_at_fit_and_long_ones_work(d):
    n = d.output_tokens.astype(np.float64).copy()
    for huge in (1e19, 10**9):
        n[1] = huge
        with pytest.raises(
            ValueError,
            match=r"output_tokens must be <= 1048576 .*; "
            r"sample 1 is 1",
        ):
            LatencyEstimator(max_epochs=1).fit(d.X, d.y, output_tokens=n)
    est = _fit(d)
    assert np.isfinite(est.predict_total(d.X.iloc[:2], 32768)).all()
    assert est.predict_positions(d.X.iloc[:1], np.arange(1, 32769)).shape == (1, 32768)
    assert sklat.MAX_OUTPUT_TOKENS == 2**20


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"output_tokens": lambda d: d.output_tokens + 1j},
            TypeError,
            "output_tokens must be real numbers; got complex values",
        ),
        (
            {"output_tokens": lambda d: np.ones(len(d.output_tokens), dtype=bool)},
            TypeError,
            "output_tokens must be numbers, not booleans",
        ),
        (
            {"y": lambda d: np.ones(len(d.output_tokens), dtype=bool)},
            TypeError,
            "y must be numbers, not booleans",
        ),
        (
            {"output_tokens": lambda d: d.output_tokens.astype(str)},
            TypeError,
            r"output_tokens must be numeric, not text \(strings\); got '\d+'",
        ),
        (
            {"output_tokens": lambda d: np.array([str(n) for n in d.output_tokens], dtype=object)},
            TypeError,
            r"output_tokens must be numeric, not text \(strings\); got '\d+'",
        ),
    ],
)
def test_complex_boolean_and_text_inputs_are_refused(d, kwargs, error, message):
    args = {"y": d.y.to_numpy(), "output_tokens": d.output_tokens}
    args.update({k: make(d) for k, make in kwargs.items()})
    with pytest.raises(error, match=message):
        LatencyEstimator(max_epochs=1).fit(d.X, args["y"], output_tokens=args["output_tokens"])


@pytest.mark.parametrize("levels", ["0.5", ["0.1", "0.9"], np.array([b"0.5"])])
def test_quantile_levels_given_as_text_are_refused(d, levels):
    est = _fit(d)
    message = r"quantiles must be numeric, not text \(strings\); got b?'0"
    with pytest.raises(TypeError, match=message):
        est.predict_quantiles(d.X.iloc[:2], levels, output_tokens=[8, 8])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"hidden_size": 10**6}, r"'hidden_size' .* an int in the range \[1, 4096\]. Got 1000000"),
        ({"n_basis": 10**4}, r"'n_basis' .* an int in the range \[1, 256\]. Got 10000"),
        ({"verbose": "x"}, r"'verbose' .* Got 'x'"),
        ({"default_output_tokens": 2.5}, r"'default_output_tokens' .* None or an int .* Got 2.5"),
        ({"output_tokens_col": 3}, r"'output_tokens_col' .* an instance of 'str'. Got 3"),
        ({"random_state": "seed"}, r"'random_state' .* Got 'seed'"),
    ],
)
def test_parameters_of_the_wrong_kind_are_named(d, params, message):
    with pytest.raises(ValueError, match=message):
        LatencyEstimator(**params).fit(d.X, d.y, output_tokens=d.output_tokens)


def test_declared_constraints_cover_every_parameter():
    # scikit-learn's own check: a constraint per parameter, and an
    # InvalidParameterError naming each one for a value of no allowed kind.
    from sklearn.utils.estimator_checks import check_param_validation

    check_param_validation(
        "LatencyEstimator", LatencyEstimator(default_output_tokens=1, max_epochs=1)
    )


def test_loss_that_rose_warns():
    from sklat._training import warn_unconverged

    class Net:
        history = None

    from skorch.history import History

    net = Net()
    net.history = History([{"train_loss": 1.0}, {"train_loss": 1e6}])
    with pytest.warns(
        ConvergenceWarning,
        match=r"made the loss worse .* lr=3 is probably "
        r"too high",
    ):
        warn_unconverged(LatencyEstimator(lr=3).get_params(), [net])


def test_convergence_warning_when_max_epochs_cuts_an_improving_fit(d):
    with pytest.warns(
        ConvergenceWarning,
        match=r"stopped at max_epochs=3 while the "
        r"held-out loss was still improving",
    ):
        LatencyEstimator(max_epochs=3, random_state=0).fit(d.X, d.y, output_tokens=d.output_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        LatencyEstimator(max_epochs=500, n_iter_no_change=2, random_state=0).fit(
            d.X, d.y, output_tokens=d.output_tokens
        )


def test_one_convergence_warning_for_the_nets_of_a_cross_fitted_model(d):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LatencyEstimator(max_epochs=3, n_folds=5, random_state=0).fit(
            d.X, d.y, output_tokens=d.output_tokens
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1
    assert re.match(
        r"[1-5] of the 5 cross-fitted nets: training stopped at max_epochs=3 while the "
        r"held-out loss was still improving",
        messages[0],
    )


def test_pipeline_score_routes_sample_weight(d):
    w = np.linspace(0.1, 1.0, len(d.X))
    with sklearn.config_context(enable_metadata_routing=True):
        est = (
            LatencyEstimator(max_epochs=3, random_state=0)
            .set_fit_request(output_tokens=True)
            .set_score_request(output_tokens=True, sample_weight=True)
        )
        pipe = make_pipeline(est)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(d.X, d.y, output_tokens=d.output_tokens)
        weighted = pipe.score(d.X, d.y, output_tokens=d.output_tokens, sample_weight=w)
        plain = pipe.score(d.X, d.y, output_tokens=d.output_tokens)
    assert weighted == pytest.approx(est.score(d.X, d.y, d.output_tokens, sample_weight=w))
    assert weighted != plain


def test_standardised_features_warn(d):
    pipe = make_pipeline(StandardScaler(), LatencyEstimator(max_epochs=2, random_state=0))
    with pytest.warns(UserWarning, match=r"look standardised .* drop the StandardScaler"):
        pipe.fit(d.X, d.y, latencyestimator__output_tokens=d.output_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _fit(d)


def test_threads_are_chosen_and_restored(d, monkeypatch):
    seen = []
    real = LatencyNet.train_step

    def record(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LatencyNet, "train_step", record)
    before = torch.get_num_threads()
    _fit(d, max_epochs=1)
    assert set(seen) == {1} and torch.get_num_threads() == before
    seen.clear()
    _fit(d, max_epochs=1, n_threads=2)
    assert set(seen) == {2} and torch.get_num_threads() == before


def test_predict_with_two_outputs_encodes_once(d, monkeypatch):
    from sklat._curve import Curve

    est = _fit(d)
    calls = []
    real = Curve._run_encoder
    monkeypatch.setattr(Curve, "_run_encoder", lambda *a: calls.append(1) or real(*a))
    est.predict(d.X, 5)
    assert len(calls) == 1


def test_every_fitted_attribute_has_a_place_in_model_files(d, tmp_path):
    from sklat import _state

    est = _fit(d)
    attrs, _, _ = _state.export_state(est)
    stored_or_rebuilt = set(attrs) | set(_state.REBUILT)
    assert set(_state.fitted_attributes(est)) <= stored_or_rebuilt
    est.new_thing_ = 1
    with pytest.raises(RuntimeError, match=r"\['new_thing_'\] have no place in the model"):
        sklat.save(est, tmp_path / "m.safetensors")
    del est.new_thing_
    sklat.save(est, tmp_path / "m.safetensors")
    loaded = sklat.load(tmp_path / "m.safetensors")
    assert loaded.total_norm_ == est.total_norm_
    assert set(_state.fitted_attributes(loaded)) == set(_state.fitted_attributes(est))


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert sklat.__version__ == version("sklat")


def test_y_frame_with_extra_column_is_refused_at_score(d):
    est = _fit(d)
    with pytest.raises(ValueError, match="matched by name"):
        est.score(d.X, pd.DataFrame({"a": d.y["T_LLM_decode"]}), d.output_tokens)


@pytest.mark.parametrize("as_frame", [True, False])
def test_empty_input_is_refused_on_the_fast_path_too(d, as_frame):
    est = _fit(d)
    X = d.X.iloc[:0] if as_frame else d.X.to_numpy()[:0]
    for call in (lambda: est.predict_positions(X, [1]), lambda: est.predict_total(X, 3)):
        with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
            call()
