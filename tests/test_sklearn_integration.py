"""clone, Pipeline, GridSearchCV (column form and metadata routing)."""

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklat import LatencyEstimator

GRID = {"prefill_weight": [1.0, 2.0], "decode_total_weight": [1.0], "positioned_weight": [0.0, 0.5]}


def quick(**kw):
    return LatencyEstimator(max_epochs=3, random_state=0, **kw)


def test_clone_keeps_params_and_drops_state(fitted):
    c = clone(fitted)
    assert c.get_params() == fitted.get_params()
    assert not hasattr(c, "net_")


def test_pipeline_with_preprocessing(small_data):
    d = small_data
    pipe = Pipeline([("scale", StandardScaler()), ("latency", quick())])
    pipe.fit(
        d.X,
        d.y,
        latency__output_tokens=d.output_tokens,
        latency__positioned_latencies=d.positioned_latencies,
    )
    assert pipe.predict(d.X).shape == (len(d.X), 2)
    assert pipe.score(d.X, d.y) == pytest.approx(pipe[-1].score(pipe[0].transform(d.X), d.y))


def test_pipeline_with_metadata_routing(small_data):
    d = small_data
    with sklearn.config_context(enable_metadata_routing=True):
        est = quick().set_fit_request(output_tokens=True, positioned_latencies=True)
        est.set_predict_request(output_tokens=True)
        pipe = Pipeline([("scale", StandardScaler()), ("latency", est)])
        pipe.fit(
            d.X, d.y, output_tokens=d.output_tokens, positioned_latencies=d.positioned_latencies
        )
        pred = pipe.predict(d.X, output_tokens=d.output_tokens)
    np.testing.assert_allclose(
        pred[:, 1], pipe[-1].predict_total(pipe[0].transform(d.X), d.output_tokens)
    )


def _ragged_folds_ok(search, n_splits):
    # Every candidate was fitted and scored on every fold: a mis-sliced ragged
    # per-step list would have made fit raise (length != output_tokens).
    res = search.cv_results_
    assert len(res["params"]) == 4
    for k in range(n_splits):
        assert np.isfinite(res[f"split{k}_test_score"]).all()


def test_grid_search_output_tokens_column(small_data):
    d = small_data
    frame = d.X.assign(output_tokens=d.output_tokens)
    search = GridSearchCV(
        quick(), GRID, cv=KFold(3, shuffle=True, random_state=0), error_score="raise"
    )
    search.fit(frame, d.y, positioned_latencies=d.positioned_latencies)
    _ragged_folds_ok(search, 3)
    assert search.best_estimator_.n_features_in_ == d.X.shape[1]
    assert "output_tokens" not in search.best_estimator_.feature_names_in_


def test_grid_search_metadata_routing(small_data):
    d = small_data
    with sklearn.config_context(enable_metadata_routing=True):
        est = quick().set_fit_request(output_tokens=True, positioned_latencies=True)
        est.set_score_request(output_tokens=True)
        search = GridSearchCV(
            est, GRID, cv=KFold(3, shuffle=True, random_state=0), error_score="raise"
        )
        search.fit(
            d.X, d.y, output_tokens=d.output_tokens, positioned_latencies=d.positioned_latencies
        )
    _ragged_folds_ok(search, 3)
    # The routed fold scores equal a manual fit/score on the same folds.
    params = search.cv_results_["params"][0]
    train, test = next(KFold(3, shuffle=True, random_state=0).split(d.X))
    manual = quick(**params).fit(
        d.X.iloc[train],
        d.y.iloc[train],
        output_tokens=d.output_tokens[train],
        positioned_latencies=[d.positioned_latencies[i] for i in train],
    )
    expected = manual.score(d.X.iloc[test], d.y.iloc[test], output_tokens=d.output_tokens[test])
    assert search.cv_results_["split0_test_score"][0] == pytest.approx(expected)


def test_grid_search_routing_mismatch_raises(small_data):
    d = small_data
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(quick(), GRID, cv=2)
        with pytest.raises(UnsetMetadataPassedError, match="output_tokens"):
            search.fit(d.X, d.y, output_tokens=d.output_tokens)
