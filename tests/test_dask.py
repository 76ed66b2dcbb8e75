"""GridSearchCV over LatencyEstimator on a dask.distributed cluster."""

import contextlib

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, KFold

from sklat import LatencyEstimator

distributed = pytest.importorskip("dask.distributed")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@contextlib.contextmanager
def one_torch_thread():
    """Dask workers run torch on one thread (OMP_NUM_THREADS=1). Running the
    local fits (and the refit, which happens in this process) the same way
    makes float reductions run in the same order, so results match bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _search(n_jobs):
    grid = {"prefill_weight": [1.0, 2.0], "positioned_weight": [0.0, 0.5]}
    return GridSearchCV(
        LatencyEstimator(max_epochs=4, random_state=0),
        grid,
        cv=KFold(3, shuffle=True, random_state=0),
        n_jobs=n_jobs,
        error_score="raise",
    )


def test_grid_search_on_dask_equals_local(client, small_data):
    d = small_data
    X = d.X.assign(output_tokens=d.output_tokens)
    steps = d.positioned_latencies
    with one_torch_thread():
        local = _search(n_jobs=1).fit(X, d.y, positioned_latencies=steps)
        with distributed.get_task_stream(client) as stream:
            with joblib.parallel_backend("dask"):
                remote = _search(n_jobs=-1).fit(X, d.y, positioned_latencies=steps)
    # The 4 candidates x 3 folds ran on the cluster, on both workers.
    assert len(stream.data) >= 12
    assert len({task["worker"] for task in stream.data}) == 2
    np.testing.assert_array_equal(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))
