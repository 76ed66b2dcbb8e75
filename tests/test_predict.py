"""Prediction methods: properties, shapes, dtypes, strategies."""

import numpy as np

import pytest

from sklat import PROBE_POSITIONS
from sklat.datasets import make_positioned_latency


@pytest.fixture(scope="module")
def X(small_data):
    return small_data.X.iloc[:25]


def test_total_is_sum_of_positions(fitted, X):
    n = np.arange(1, len(X) + 1) * 37
    total = fitted.predict_total(X, output_tokens=n)
    full = fitted.predict_positions(X, np.arange(1, n.max() + 1))
    mask = np.arange(1, n.max() + 1)[None, :] <= n[:, None]
    np.testing.assert_allclose(total, (full * mask).sum(axis=1), rtol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 300, 5000])
def test_total_scalar_output_tokens(fitted, X, n):
    total = fitted.predict_total(X, output_tokens=n)
    np.testing.assert_allclose(
        total, fitted.predict_positions(X, np.arange(1, n + 1)).sum(axis=1), rtol=1e-10
    )


def test_positions_positive_shapes_dtypes(fitted, X):
    out = fitted.predict_positions(X, [1, 5, 10, 20, 10_000])
    assert out.shape == (len(X), 5) and out.dtype == np.float64
    assert np.isfinite(out).all() and (out > 0).all()
    assert fitted.predict_total(X, 3).dtype == np.float64
    assert fitted.predict_prefill(X).shape == (len(X),)
    assert fitted.predict_prefill(X).dtype == np.float64
    assert (fitted.predict_prefill(X) > 0).all()


def test_predict_shape_follows_y(fitted, fitted_1d, X):
    two = fitted.predict(X, output_tokens=10)
    assert two.shape == (len(X), 2)
    np.testing.assert_allclose(two[:, 0], fitted.predict_prefill(X))
    np.testing.assert_allclose(two[:, 1], fitted.predict_total(X, 10))
    one = fitted_1d.predict(X, output_tokens=10)
    assert one.shape == (len(X),) and one.dtype == np.float64


def test_1d_model_has_no_prefill(fitted_1d, X):
    with pytest.raises(ValueError, match="has no prefill head"):
        fitted_1d.predict_prefill(X)


def test_output_tokens_column_used_in_predict(fitted, X):
    n = np.arange(1, len(X) + 1)
    with_col = fitted.predict(X.assign(output_tokens=n))
    np.testing.assert_allclose(with_col, fitted.predict(X, output_tokens=n))


def test_unknown_length_is_expectation_over_fitted_distribution(fitted, X):
    dist = fitted.output_tokens_distribution_
    per_length = np.column_stack([fitted.predict_total(X, int(v)) for v in dist["values"]])
    np.testing.assert_allclose(
        fitted.predict_total(X), per_length @ dist["probabilities"], rtol=1e-9
    )
    assert np.isclose(dist["probabilities"].sum(), 1.0)


def test_budget_strategies(fitted, X):
    curve = fitted.predict_positions(X, [1, 5, 10, 20])
    np.testing.assert_allclose(
        fitted.predict_budget(X, positions=PROBE_POSITIONS), curve.max(axis=1)
    )
    # By default, the maximum over positions 1..L, L the 95th percentile of N.
    dist = fitted.output_tokens_distribution_
    last = int(dist["values"][np.searchsorted(np.cumsum(dist["probabilities"]), 0.95)])
    full = fitted.predict_positions(X, np.arange(1, last + 1))
    np.testing.assert_allclose(fitted.predict_budget(X), full.max(axis=1))
    assert (fitted.predict_budget(X) >= curve.max(axis=1) - 1e-12).all()
    # Up to the 50th percentile: a maximum over fewer positions.
    assert (fitted.predict_budget(X, output_tokens_quantile=0.5) <= fitted.predict_budget(X)).all()
    np.testing.assert_allclose(fitted.predict_budget(X, "position", position=5), curve[:, 1])
    # Expectation over a fixed length N: the mean latency of its N tokens.
    exp = fitted.predict_budget(X, "expectation", output_tokens_distribution=[20])
    np.testing.assert_allclose(exp, fitted.predict_total(X, 20) / 20, rtol=1e-9)
    # A sample and the equivalent dict give the same answer.
    a = fitted.predict_budget(X, "expectation", output_tokens_distribution=[4, 4, 8, 8])
    b = fitted.predict_budget(
        X, "expectation", output_tokens_distribution={"values": [4, 8], "probabilities": [0.5, 0.5]}
    )
    np.testing.assert_allclose(a, b)
    # Default position: the expected position of a token, E[N(N+1)/2]/E[N].
    c = fitted.predict_budget(X, "position", output_tokens_distribution=[9])
    np.testing.assert_allclose(c, fitted.predict_positions(X, [5])[:, 0])


def test_budget_bad_strategy(fitted, X):
    with pytest.raises(ValueError, match="strategy must be one of"):
        fitted.predict_budget(X, "median")
    with pytest.raises(ValueError, match="must sum to 1"):
        fitted.predict_budget(
            X,
            "expectation",
            output_tokens_distribution={"values": [1, 2], "probabilities": [0.5, 0.6]},
        )
    with pytest.raises(ValueError, match="exactly the keys"):
        fitted.predict_budget(X, "expectation", output_tokens_distribution={"v": [1]})


def test_probabilities_within_rounding_of_one_are_divided_out(fitted, X):
    # Accepted as summing to 1, the weights must not carry their excess into
    # a probability: a sure attainment is 1, not 1 + 5e-7.
    rounded = {"values": [3, 5], "probabilities": [0.5, 0.5 + 5e-7]}
    exact = {"values": [3, 5], "probabilities": [0.5 / (1 + 5e-7), (0.5 + 5e-7) / (1 + 5e-7)]}
    got = fitted.predict_slo_attainment(X, tpot_ms=1e9, output_tokens_distribution=rounded)
    assert got.max() <= 1.0
    np.testing.assert_allclose(got, 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        fitted.predict_slo_attainment(X, tpot_ms=20.0, output_tokens_distribution=rounded),
        fitted.predict_slo_attainment(X, tpot_ms=20.0, output_tokens_distribution=exact),
        rtol=1e-12,
    )


def test_prediction_is_row_independent(fitted, X):
    full = fitted.predict_positions(X, [1, 7, 300])
    np.testing.assert_allclose(
        fitted.predict_positions(X.iloc[3:4], [1, 7, 300]), full[3:4], rtol=1e-6
    )  # float32 network


def test_long_outputs_and_many_configs_are_chunked(fitted):
    # More rows than a prediction chunk, N = 32768: results equal the
    # row-by-row computation.
    from sklat import _curve

    big = make_positioned_latency(_curve.ROW_CHUNK + 100, random_state=3).X
    n = np.full(len(big), 32768)
    total = fitted.predict_total(big, n)
    assert total.shape == (len(big),) and np.isfinite(total).all()
    idx = [0, _curve.ROW_CHUNK - 1, _curve.ROW_CHUNK, len(big) - 1]
    ref = fitted.predict_positions(big.iloc[idx], np.arange(1, 32769)).sum(axis=1)
    # The float32 config encoder may round differently on 4 rows than on a
    # full chunk (BLAS picks kernels by shape); anything beyond that is a bug.
    np.testing.assert_allclose(total[idx], ref, rtol=1e-6)


def test_chunking_does_not_change_results(fitted, monkeypatch):
    from sklat import _curve

    X = make_positioned_latency(50, random_state=4).X
    n = np.arange(1, 51) * 97
    positions = np.arange(1, 3001)
    ref_positions = fitted.predict_positions(X, positions)
    ref_total = fitted.predict_total(X, n)
    ref_budget = fitted.predict_budget(X, "expectation")
    monkeypatch.setattr(_curve, "ROW_CHUNK", 7)
    monkeypatch.setattr(_curve, "POSITION_CHUNK", 101)
    # Equal up to float32 rounding: the network runs in float32, and BLAS may
    # round differently for batches of another size.
    np.testing.assert_allclose(fitted.predict_positions(X, positions), ref_positions, rtol=1e-6)
    np.testing.assert_allclose(fitted.predict_total(X, n), ref_total, rtol=1e-6)
    np.testing.assert_allclose(fitted.predict_budget(X, "expectation"), ref_budget, rtol=1e-6)


def test_tabulated_basis_matches_the_network(fitted):
    # Positions inside the fit-time table are looked up, later ones computed:
    # both agree with running the position encoder directly.
    assert len(fitted.position_basis_) == fitted.max_output_tokens_
    positions = np.array([1, 2, fitted.max_output_tokens_, fitted.max_output_tokens_ + 1, 40_000])
    np.testing.assert_allclose(
        fitted._curve.basis(positions), fitted._curve._run_basis(positions), rtol=1e-6
    )
