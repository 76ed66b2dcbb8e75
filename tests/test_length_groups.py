"""Output-length distributions over many lengths, read in groups
(``length_groups``): the groups' bounds, and the probabilities and quantiles
they give against reading every length."""

import copy
import warnings

import numpy as np
import pytest

from sklat import LatencyEstimator
from sklat._distribution import grouped
from sklat.control import choose
from sklat.exceptions import ExtrapolationWarning


def _random_distribution(rng, n_lengths, high):
    values = rng.choice(np.arange(1, high + 1), size=n_lengths, replace=False)
    return {"values": values, "probabilities": rng.dirichlet(np.full(n_lengths, 0.3))}


@pytest.mark.parametrize("groups", [1, 7, 128])
@pytest.mark.parametrize("seed", range(4))
def test_groups_are_few_and_light(groups, seed):
    rng = np.random.default_rng(seed)
    dist = _random_distribution(rng, 3000, 20000)
    out = grouped(dist, groups)
    values, probs = out["values"], out["probabilities"]
    assert len(values) <= 2 * groups
    assert np.all(np.diff(values) > 0)
    np.testing.assert_allclose(probs.sum(), 1.0)
    # Every group sits between its first and last length, and the lengths
    # of each group follow the previous group's: rebuild them from the
    # sorted lengths and the group masses.
    order = np.argsort(dist["values"])
    lengths, mass = dist["values"][order], dist["probabilities"][order]
    edges = np.searchsorted(np.cumsum(mass), np.cumsum(probs) - 1e-9, side="left") + 1
    starts = np.concatenate([[0], edges[:-1]])
    for value, p, start, stop in zip(values, probs, starts, edges):
        members = lengths[start:stop]
        assert members[0] <= value <= members[-1]
        np.testing.assert_allclose(mass[start:stop].sum(), p)
        if len(members) > 1:
            assert p < 2 / groups
        else:
            assert value == members[0]


def test_a_small_distribution_is_read_exactly():
    dist = {"values": np.array([40, 3, 40, 9]), "probabilities": np.array([0.1, 0.2, 0.3, 0.4])}
    out = grouped(dist, 3)
    np.testing.assert_array_equal(out["values"], [3, 9, 40])
    np.testing.assert_allclose(out["probabilities"], [0.2, 0.4, 0.4])
    wide = {"values": np.arange(1, 1001), "probabilities": np.full(1000, 1e-3)}
    assert len(grouped(wide, None)["values"]) == 1000


def test_a_heavy_length_stays_alone():
    values = np.arange(1, 1001)
    probs = np.full(1000, 0.5 / 999)
    probs[500] = 0.5
    out = grouped({"values": values, "probabilities": probs}, 10)
    assert 501 in out["values"]
    np.testing.assert_allclose(out["probabilities"][out["values"] == 501], 0.5)


@pytest.fixture(scope="module")
def exact_and_grouped(fitted):
    exact = copy.deepcopy(fitted).set_params(length_groups=None)
    return exact, fitted


@pytest.mark.parametrize(
    "objectives",
    [
        {"tpot_ms": 1.0},
        {"e2e_ms": 1.0},
        {"tpot_ms": 1.0, "e2e_ms": 1.0},
        {"tpot_ms": 1.0, "ttft_ms": 1.0},
    ],
)
@pytest.mark.parametrize("scale", [0.8, 1.0, 1.25])
def test_grouped_attainment_is_within_the_stated_bound(
    exact_and_grouped, small_data, objectives, scale
):
    exact, grouped_model = exact_and_grouped
    X = small_data.X.iloc[:40]
    rng = np.random.default_rng(3)
    dist = _random_distribution(rng, 2500, 4000)
    reference = {
        "tpot_ms": float(np.median(exact.predict_total(X, 64) / 64)),
        "e2e_ms": float(np.median(exact.predict(X).sum(axis=1))) * 4,
        "ttft_ms": float(np.median(exact.predict(X)[:, 0])),
    }
    kwargs = {k: v * scale * reference[k] for k, v in objectives.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        every = exact.predict_slo_attainment(X, output_tokens_distribution=dist, **kwargs)
        groups = grouped_model.predict_slo_attainment(X, output_tokens_distribution=dist, **kwargs)
    assert grouped_model.length_groups == 128
    # The model's curves rise with the position: meeting an objective
    # changes at most once over the lengths, so each request's share is off
    # by at most one group's probability.
    assert np.abs(groups - every).max() < 2 / 128
    assert 0 < every.mean() < 1


def test_grouped_quantiles_are_exact_quantiles_of_nearby_levels(exact_and_grouped, small_data):
    exact, grouped_model = exact_and_grouped
    X = small_data.X.iloc[:5]
    dist = {"values": np.arange(1, 3001), "probabilities": np.full(3000, 1 / 3000)}
    levels = np.array([0.1, 0.5, 0.9])
    bound = 2 / 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        got = grouped_model.predict_quantiles(X, levels, output_tokens_distribution=dist)
        low = exact.predict_quantiles(X, levels - bound, output_tokens_distribution=dist)
        high = exact.predict_quantiles(X, levels + bound, output_tokens_distribution=dist)
        inner = exact.predict_quantiles(X, levels, output_tokens_distribution=dist)
    assert np.all(low <= got) and np.all(got <= high)
    # Not the exact ones, which the bounds alone would allow.
    assert not np.array_equal(got, inner)


def test_choose_reads_the_groups_as_the_attainment_does(exact_and_grouped, small_data):
    _, model = exact_and_grouped
    X = small_data.X.iloc[:30]
    dist = {"values": np.arange(1, 1001), "probabilities": np.full(1000, 1e-3)}
    tpot = float(np.median(model.predict_total(X, 64) / 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        choice = choose(model, X, tpot_ms=tpot, output_tokens_distribution=dist)
        direct = model.predict_slo_attainment(X, tpot_ms=tpot, output_tokens_distribution=dist)
    np.testing.assert_array_equal(choice.attainment, direct)


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "128"])
def test_a_bad_length_groups_is_refused(fitted, small_data, value):
    model = copy.deepcopy(fitted).set_params(length_groups=value)
    with pytest.raises(ValueError, match="length_groups must be None or an integer >= 1"):
        model.predict_interval(small_data.X.iloc[:2])
    with pytest.raises(ValueError, match="'length_groups' parameter of LatencyEstimator must be"):
        LatencyEstimator(length_groups=value, max_epochs=1).fit(
            small_data.X, small_data.y, output_tokens=small_data.output_tokens
        )


def test_cli_length_groups_option():
    from sklat._cli._options import groups

    assert (groups("none"), groups("64")) == (None, 64)
    with pytest.raises(Exception, match="expected 'none' or an integer, got 'x'"):
        groups("x")
