"""The fitted curve and the calibration as objects, without an estimator:
a net built from parameters, a Curve around it, a Calibrator of known scores."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from sklat._calibrator import Calibrator, flat_trees
from sklat._conformal import (
    TREE_NODES,
    difficulty_inputs,
    fit_difficulty,
    relative_error_factor,
    tree_value,
)
from sklat._curve import Curve
from sklat._features import FeatureTransform
from sklat._requests import Requests, Segments
from sklat._training import make_net
from sklat.exceptions import ExtrapolationWarning

PARAMS = {
    "hidden_size": 8,
    "n_basis": 3,
    "n_cost_terms": 2,
    "loss": "log",
    "prefill_weight": 2.0,
    "decode_total_weight": 1.0,
    "positioned_weight": 0.5,
    "weight_decay": 1e-4,
    "config_mlp_weight_decay": 0.1,
    "lr": 1e-3,
    "max_epochs": 1,
    "batch_size": 8,
    "verbose": 0,
}
MAX_N = 40


def _net(seed):
    torch.manual_seed(seed)
    net = make_net(
        PARAMS,
        n_features=2,
        with_prefill=True,
        max_output_tokens=MAX_N,
        context_scale=100.0,
        context_features=[1],
        total_norm=10.0,
        device="cpu",
    ).initialize()
    net.module_.eval()
    return net


def _curve(nets):
    X = np.array([[1.0, 10.0], [8.0, 200.0]])
    return Curve(
        nets,
        transform=FeatureTransform.fit(X, "auto", str),
        feature_range=np.vstack([X.min(axis=0), X.max(axis=0)]),
        context_features=np.array([1]),
        context_scale=100.0,
        step_scale=2.0,
        prefill_scale=30.0,
        lengths={"values": np.array([5, 20, MAX_N]), "probabilities": np.array([0.5, 0.3, 0.2])},
        feature_names=np.array(["layers", "prompt"], dtype=object),
        hidden_size=PARAMS["hidden_size"],
    )


@pytest.fixture(scope="module")
def curve():
    """A curve of two features (the second a context length), random weights."""
    return _curve([_net(0)])


@pytest.fixture(scope="module")
def coef(curve):
    X = np.column_stack([np.linspace(1, 8, 6), np.linspace(10, 200, 6)])
    return curve.encode(X, warn=False)


def test_totals_are_sums_of_the_curve(curve, coef):
    n = np.array([1, 3, 17, MAX_N, MAX_N + 9, 2])
    per_position = curve.at(coef, np.arange(1, n.max() + 1))
    expected = [per_position[i, : n[i]].sum() for i in range(len(n))]
    np.testing.assert_allclose(curve.total(coef, n), expected, rtol=1e-12)


def test_totals_at_every_length_and_their_expectation(curve, coef):
    lengths = curve.lengths["values"]
    table = curve.totals_at(coef, lengths)
    for j, length in enumerate(lengths):
        np.testing.assert_allclose(
            table[:, j], curve.total(coef, np.full(len(coef), length)), rtol=1e-12
        )
    np.testing.assert_allclose(
        curve.expected_total(coef, curve.lengths),
        table @ curve.lengths["probabilities"],
        rtol=1e-12,
    )


def test_maximum_and_the_shape_held_past_the_longest_request(curve, coef):
    last = MAX_N + 25
    full = curve.at(coef, np.arange(1, last + 1))
    np.testing.assert_allclose(curve.max_over(coef, last), full.max(axis=1), rtol=1e-12)
    # Past the longest training request only the context term keeps growing.
    growth = np.diff(full[:, MAX_N - 1 :], axis=1)
    expected = np.broadcast_to(coef.slope[:, None] / curve.context_scale, growth.shape)
    np.testing.assert_allclose(growth, expected, rtol=1e-9)
    # The tabulated basis is the position encoder's.
    positions = np.array([1, 7, MAX_N, MAX_N + 1])
    np.testing.assert_allclose(curve.basis(positions), curve._run_basis(positions), rtol=1e-6)


def test_coefficients_are_immutable_rows(coef):
    part = coef.take(np.array([4, 1]))
    assert len(part) == 2
    np.testing.assert_array_equal(part.shape, coef.shape[[4, 1]])
    np.testing.assert_array_equal(part.z, coef.z[[4, 1]])
    with pytest.raises(dataclasses.FrozenInstanceError):
        coef.flat = None


def test_encode_holds_far_features_at_the_edge_of_the_extended_range(curve):
    edge = curve.extended_range[1]
    with pytest.warns(ExtrapolationWarning, match=r"X column 'layers' = 1e\+06 \(sample 0\)"):
        far = curve.encode(np.array([[1e6, 100.0]]))
    at_edge = curve.encode(np.array([[edge[0], 100.0]]), warn=False)
    np.testing.assert_allclose(far.flat, at_edge.flat, rtol=1e-12)
    assert curve.inside(np.array([[2.0, 50.0], [1e6, 100.0]])).tolist() == [True, False]


def test_encode_names_the_bad_value(curve):
    with pytest.raises(ValueError, match=r"X column 'prompt' was log-scaled .* sample 1 is -5.0"):
        curve.encode(np.array([[1.0, 10.0], [2.0, -5.0]]))


def test_interval_of_a_known_length_is_the_kth_score(curve, coef):
    scores = np.array([[-0.3, 0.1], [0.05, -0.2], [0.2, 0.0], [-0.1, 0.4]] * 5)  # n = 20
    calibrator = Calibrator(flat_trees(2), scores, np.zeros((0, 2)), curve=curve)
    n = np.full(len(coef), 12)
    bounds = calibrator.decode_interval(coef, n, None, 0.8, per_token=False)
    k = math.ceil(21 * 0.8)
    half = np.sort(np.abs(scores[:, 0]))[k - 1]
    total = curve.total(coef, n)
    np.testing.assert_allclose(
        bounds, np.column_stack([total * np.exp(-half), total * np.exp(half)])
    )
    prefill = calibrator.prefill_interval(coef, 0.8)
    half = np.sort(np.abs(scores[:, 1]))[k - 1]
    np.testing.assert_allclose(prefill[:, 1], coef.prefill * np.exp(half))
    with pytest.raises(ValueError, match="confidence=0.99 needs at least 99 calibration requests"):
        calibrator.decode_interval(coef, n, None, 0.99, per_token=False)


def test_attainment_counts_the_calibration_requests_that_meet_the_objective(curve, coef):
    e = np.linspace(-0.5, 0.5, 11)
    calibrator = Calibrator(flat_trees(1), e[:, None], np.zeros((0, 2)), curve=curve)
    n = np.full(len(coef), 10)
    per_token = curve.total(coef, n) / 10
    tpot = per_token * np.exp(0.05)
    p = calibrator.attainment(coef, n, None, ttft=None, tpot=tpot, e2e=None)
    expected = [(per_token[i] * np.exp(e) <= tpot[i]).mean() for i in range(len(coef))]
    np.testing.assert_allclose(p, expected)
    # With N unknown, the mixture over the lengths lies between its extremes.
    loose = calibrator.attainment(coef, None, curve.lengths, ttft=None, tpot=tpot, e2e=None)
    assert ((loose >= 0) & (loose <= 1)).all()
    empty = Calibrator(flat_trees(1), np.zeros((0, 1)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="holds no calibration requests"):
        empty.attainment(coef, n, None, ttft=None, tpot=tpot, e2e=None)


def test_position_bound_is_a_weighted_rank_of_requests():
    # Two requests of 2 and 4 steps: weights 1/2 and 1/4, so each weighs 1.
    scores = np.array([[0.1, 0.5], [0.3, 0.5], [0.05, 0.25], [0.2, 0.25], [0.4, 0.25], [0.5, 0.25]])
    calibrator = Calibrator(flat_trees(1), np.zeros((0, 1)), scores)
    with pytest.raises(ValueError, match="needs calibration requests with per-step data"):
        Calibrator(flat_trees(1), np.zeros((0, 1)), np.zeros((0, 2))).position_bound(0.5)
    # ceil(3 * 0.5) = 2 of 2 requests: the top of the weighted order.
    assert calibrator.position_bound(0.5) == 0.5


def test_calibrator_fit_on_requests(curve):
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.uniform(1, 8, 60), rng.uniform(10, 200, 60)])
    n = rng.randint(2, MAX_N, 60)
    coef = curve.encode(X, warn=False)
    decode = curve.total(coef, n) * np.exp(rng.normal(0, 0.1, 60))
    prefill = coef.prefill * np.exp(rng.normal(0, 0.1, 60))
    # Per-step lists for the first 3 requests, a two-token segment for the 4th.
    steps = [np.full(n[i], decode[i] / n[i]) for i in range(3)]
    values = np.concatenate(steps + [[decode[3] / 2, decode[3] / 2]])
    tokens = np.concatenate([np.ones(n[i], dtype=np.int64) for i in range(3)] + [[1, n[3] - 1]])
    lengths = np.array([n[0], n[1], n[2], 2] + [0] * 56)
    segments = Segments(values, tokens, np.concatenate(([0], np.cumsum(lengths))))
    requests = Requests(X, decode, prefill, n, segments)
    fit_part, cal_part = requests.take(np.arange(20, 60)), requests.take(np.arange(20))
    calibrator = Calibrator.fit(curve, fit_part, cal_part)
    assert calibrator.difficulty_trees.shape == (2, 3, TREE_NODES)
    assert calibrator.scores.shape == (20, 2)
    # Requests 0-2 have per-step data, and request 3 one single-token segment: 4 requests.
    np.testing.assert_allclose(calibrator.position_scores[:, 1].sum(), 4.0)
    sigma = calibrator.sigma_total(coef.z[:20], n[:20])
    expected = (np.log(decode[:20]) - np.log(curve.total(coef.take(slice(0, 20)), n[:20]))) / sigma
    np.testing.assert_allclose(calibrator.scores[:, 0], expected, rtol=1e-6)


@pytest.mark.parametrize("informative", [True, False])
def test_a_difficulty_tree_is_kept_only_where_it_narrows_held_out_intervals(curve, informative):
    # Noise that grows with the first feature: a tree of the errors narrows the
    # intervals of held-out requests; noise unrelated to the features: it does
    # not, and the difficulty is flat.
    rng = np.random.RandomState(3)
    X = np.column_stack([rng.uniform(1, 8, 400), rng.uniform(10, 200, 400)])
    n = rng.randint(2, MAX_N, 400)
    coef = curve.encode(X, warn=False)
    spread = np.where(X[:, 0] > 4, 0.4, 0.02) if informative else np.full(400, 0.2)
    decode = curve.total(coef, n) * np.exp(rng.normal(0, 1, 400) * spread)
    prefill = coef.prefill * np.exp(rng.normal(0, 0.1, 400))
    requests = Requests.totals(X, decode, prefill, n)
    calibrator = Calibrator.fit(
        curve,
        requests.take(np.arange(300)),
        requests.take(np.arange(300, 400)),
        held_out=np.arange(250, 300),
    )
    is_flat = (calibrator.difficulty_trees[0, 0] == -1).all()
    assert is_flat != informative


@pytest.mark.parametrize("held_out", [None, np.arange(281, 300)])
def test_a_difficulty_tree_is_flat_without_enough_held_out_requests(curve, held_out):
    # Noise that grows with the first feature, but fewer than 20 held-out
    # requests to check a tree of in-sample errors on: the difficulty is flat.
    rng = np.random.RandomState(3)
    X = np.column_stack([rng.uniform(1, 8, 400), rng.uniform(10, 200, 400)])
    n = rng.randint(2, MAX_N, 400)
    coef = curve.encode(X, warn=False)
    spread = np.where(X[:, 0] > 4, 0.4, 0.02)
    decode = curve.total(coef, n) * np.exp(rng.normal(0, 1, 400) * spread)
    requests = Requests.totals(X, decode, coef.prefill, n)
    calibrator = Calibrator.fit(
        curve, requests.take(np.arange(300)), requests.take(np.arange(300, 400)), held_out=held_out
    )
    assert (calibrator.difficulty_trees[:, 0] == -1).all()


@pytest.fixture(scope="module")
def ensemble():
    """The curve of two nets (the members of a cross-fitted model)."""
    return _curve([_net(0), _net(1)])


def test_an_ensemble_is_the_average_of_its_members(ensemble):
    # The ensemble's encoders run as batched products, the members' one by
    # one: float32 sums in another order.
    tol = {"rtol": 1e-6}
    X = np.column_stack([np.linspace(1, 8, 5), np.linspace(10, 200, 5)])
    n = np.array([1, 4, 17, 40, 90])  # 90: past the longest training request
    positions = np.arange(1, 100)
    members = [ensemble.member(k) for k in range(2)]
    coef = ensemble.encode(X, warn=False)
    member_coef = [m.encode(X, warn=False) for m in members]
    np.testing.assert_allclose(
        ensemble.at(coef, positions),
        np.mean([m.at(c, positions) for m, c in zip(members, member_coef)], axis=0),
        **tol,
    )
    np.testing.assert_allclose(
        ensemble.total(coef, n),
        np.mean([m.total(c, n) for m, c in zip(members, member_coef)], axis=0),
        **tol,
    )
    np.testing.assert_allclose(
        coef.prefill, np.mean([c.prefill for c in member_coef], axis=0), **tol
    )
    # The closed-form totals are the sums of the ensemble's own positions.
    curves = ensemble.at(coef, positions)
    np.testing.assert_allclose(
        ensemble.total(coef, n), [curves[i, : n[i]].sum() for i in range(5)], rtol=1e-10
    )
    # A member alone is the single-net curve of its net.
    single = _curve([ensemble.nets[1]])
    np.testing.assert_allclose(
        members[1].total(member_coef[1], n), single.total(single.encode(X, warn=False), n)
    )


def test_cross_fitted_calibration_scores_each_request_by_the_member_that_did_not_see_it(
    ensemble,
):
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.uniform(1, 8, 30), rng.uniform(10, 200, 30)])
    n = rng.randint(2, MAX_N, 30)
    decode = np.exp(rng.normal(3, 0.5, 30))
    prefill = np.exp(rng.normal(4, 0.5, 30))
    folds = np.arange(30) % 2
    steps = [np.full(n[i], decode[i] / n[i]) for i in (0, 1)]
    lengths = np.array([n[0], n[1]] + [0] * 28)
    segments = Segments(
        np.concatenate(steps),
        np.ones(lengths.sum(), dtype=np.int64),
        np.concatenate(([0], np.cumsum(lengths))),
    )
    requests = Requests(X, decode, prefill, n, segments)
    calibrator = Calibrator.fit_cross(ensemble, requests, folds)
    assert calibrator.scores.shape == (30, 2)
    for k in (0, 1):
        rows = folds == k
        member = ensemble.member(k)
        coef = member.encode(X[rows], warn=False)
        np.testing.assert_allclose(
            calibrator.scores[rows, 0], np.log(decode[rows] / member.total(coef, n[rows]))
        )
        np.testing.assert_allclose(calibrator.scores[rows, 1], np.log(prefill[rows] / coef.prefill))
    # Flat difficulty; both requests with per-step data weigh 1.
    np.testing.assert_allclose(calibrator.sigma_total(np.zeros((3, 2)), np.array([1, 5, 9])), 1.0)
    np.testing.assert_allclose(calibrator.position_scores[:, 1].sum(), 2.0)


def _spread_by_length(ensemble, n_requests, informative, seed):
    """Requests of ``ensemble``'s curve with log noise 0.3 below 20 output
    tokens and 0.02 from 20 on (``informative``), or 0.2 for every request."""
    rng = np.random.RandomState(seed)
    X = np.column_stack([rng.uniform(1, 8, n_requests), rng.uniform(10, 200, n_requests)])
    n = rng.randint(2, MAX_N, n_requests)
    coef = ensemble.encode(X, warn=False)
    spread = np.where(n < 20, 0.3, 0.02) if informative else np.full(n_requests, 0.2)
    decode = ensemble.total(coef, n) * np.exp(rng.normal(0, 1, n_requests) * spread)
    prefill = coef.prefill * np.exp(rng.normal(0, 0.1, n_requests))
    return Requests.totals(X, decode, prefill, n)


def _out_of_fold(ensemble, requests, folds):
    """Signed log errors of the decode totals under the member that did not
    see each request, and the difficulty inputs of the requests."""
    errors = np.empty(len(requests))
    for k in (0, 1):
        rows = folds == k
        member = ensemble.member(k)
        coef = member.encode(requests.X[rows], warn=False)
        errors[rows] = np.log(
            requests.decode[rows] / member.total(coef, requests.output_tokens[rows])
        )
    z = ensemble.encode(requests.X, warn=False).z
    return errors, difficulty_inputs(z, requests.output_tokens)


@pytest.mark.parametrize("informative", [True, False])
def test_cross_fitted_difficulty_is_kept_only_where_it_narrows_intervals_in_ms(
    ensemble, informative
):
    # Long requests (widest in ms) with little noise: trees narrow the
    # intervals, and are kept; noise unrelated to the inputs: flat.
    requests = _spread_by_length(ensemble, 400, informative, 0)
    calibrator = Calibrator.fit_cross(ensemble, requests, np.arange(400) % 2)
    is_flat = (calibrator.difficulty_trees[0, 0] == -1).all()
    assert is_flat != informative
    # The prefill's noise is flat in both: its tree is.
    assert (calibrator.difficulty_trees[1, 0] == -1).all()


def test_cross_fitted_difficulty_of_a_fold_comes_from_the_other_folds(ensemble):
    requests = _spread_by_length(ensemble, 400, True, 0)
    folds = np.arange(400) % 2
    calibrator = Calibrator.fit_cross(ensemble, requests, folds)
    errors, inputs = _out_of_fold(ensemble, requests, folds)
    for k in (0, 1):
        fold = folds == k
        tree = fit_difficulty(inputs[~fold], errors[~fold])
        sigma = np.exp(tree_value(tree, inputs[fold]))
        np.testing.assert_allclose(calibrator.scores[fold, 0], errors[fold] / sigma)
    # A new request's difficulty: the tree of every out-of-fold error.
    whole = np.exp(tree_value(fit_difficulty(inputs, errors), inputs))
    np.testing.assert_allclose(
        calibrator.sigma_total(inputs[:, :-1], requests.output_tokens), whole
    )
    # Fold 0's own errors never reach its difficulty: moving them moves its
    # scores by exactly as much.
    moved_decode = requests.decode * np.where(folds == 0, np.exp(0.01 * np.sin(np.arange(400))), 1)
    moved = Requests.totals(requests.X, moved_decode, requests.prefill, requests.output_tokens)
    again = Calibrator.fit_cross(ensemble, moved, folds)
    moved_errors, _ = _out_of_fold(ensemble, moved, folds)
    assert not np.allclose(moved_errors, errors)
    assert (again.difficulty_trees[0, 0] >= 0).any()  # kept again
    fold = folds == 0
    np.testing.assert_allclose(
        again.scores[fold, 0] / moved_errors[fold], calibrator.scores[fold, 0] / errors[fold]
    )
    # The point factors come from the plain errors, not the normalised scores.
    factor = calibrator.point_factors[0]
    assert factor == pytest.approx(relative_error_factor(errors), rel=1e-12)
    assert factor != pytest.approx(relative_error_factor(calibrator.scores[:, 0]), rel=1e-3)


def test_cross_fitted_difficulty_narrows_new_requests_intervals_at_their_coverage(ensemble):
    requests = _spread_by_length(ensemble, 400, True, 0)
    folds = np.arange(400) % 2
    trees = Calibrator.fit_cross(ensemble, requests, folds)
    errors, _ = _out_of_fold(ensemble, requests, folds)
    flat = Calibrator.flat(errors[:, None], np.zeros((0, 2)), ensemble)
    new = _spread_by_length(ensemble, 2000, True, 1)
    coef = ensemble.encode(new.X, warn=False)
    widths, covered = {}, {}
    for name, calibrator in (("trees", trees), ("flat", flat)):
        bounds = calibrator.decode_interval(coef, new.output_tokens, None, 0.9, per_token=False)
        covered[name] = np.mean((bounds[:, 0] <= new.decode) & (new.decode <= bounds[:, 1]))
        widths[name] = np.mean(bounds[:, 1] - bounds[:, 0])
    assert min(covered.values()) > 0.87
    assert widths["trees"] < 0.7 * widths["flat"]


def test_difficulty_over_lengths_runs_the_tree_once_per_run_of_lengths():
    # A tree that splits on log N at two thresholds (one of them exactly at a
    # length's float32 log, where the comparison decides) and on a feature:
    # sigma_over_lengths agrees with the tree at every (row, length).
    rng = np.random.default_rng(0)
    inputs = np.column_stack([rng.normal(size=400), np.log(rng.integers(1, 3000, 400))])
    errors = np.exp(inputs[:, 1] / 3 + (inputs[:, 0] > 0.5)) * rng.normal(size=400)
    tree = fit_difficulty(inputs, errors)
    assert (tree[0] == 1).sum() >= 2, "the tree splits on log N"
    at = np.flatnonzero(tree[0] == 1)[0]
    tree[1, at] = float(np.float32(np.log(100.0)))
    calibrator = Calibrator(np.stack([tree, flat_trees(1)[0]]), np.zeros((5, 2)), np.zeros((0, 2)))
    z = rng.normal(size=(7, 1))
    values = np.concatenate([np.arange(1, 5000), [99, 100, 101, 10**6]])
    J = len(values)
    direct = calibrator.sigma_total(np.repeat(z, J, axis=0), np.tile(values, len(z)))
    np.testing.assert_array_equal(
        calibrator.sigma_over_lengths(z, values), direct.reshape(len(z), J)
    )
