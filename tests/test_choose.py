"""LatencyEstimator.choose: the best candidate that meets the objectives."""

import numpy as np
import pytest

from sklat.control import choose


@pytest.fixture(scope="module")
def candidates(small_data):
    X = small_data.X.iloc[:40].reset_index(drop=True)
    quality = np.random.RandomState(0).uniform(size=len(X))
    return X.assign(quality=quality)


def test_attainment_is_every_candidates_own(fitted, candidates):
    choice = choose(fitted, candidates, tpot_ms=8.0, e2e_ms=900.0, min_attainment=0.5)
    features = candidates.drop(columns="quality")
    expected = fitted.predict_slo_attainment(features, tpot_ms=8.0, e2e_ms=900.0)
    np.testing.assert_array_equal(choice.attainment, expected)
    one = fitted.predict_slo_attainment(features.iloc[[7]], tpot_ms=8.0, e2e_ms=900.0)
    np.testing.assert_allclose(choice.attainment[7], one[0])


@pytest.mark.parametrize("prefer", [None, "quality", "values"])
@pytest.mark.parametrize("tpot", [4.0, 8.0, 30.0])
def test_choice_is_the_best_qualified_candidate(fitted, candidates, prefer, tpot):
    values = candidates["quality"].to_numpy()
    given = values if prefer == "values" else prefer
    choice = choose(fitted, candidates, tpot_ms=tpot, min_attainment=0.8, prefer=given)
    p = choice.attainment
    qualified = np.flatnonzero(p >= 0.8)
    if len(qualified):
        assert choice.met and p[choice.index] >= 0.8
        if prefer is None:
            assert choice.index == qualified[0]
        else:
            assert values[choice.index] == values[qualified].max()
    else:
        assert not choice.met and p[choice.index] == p.max()


def test_nothing_qualifies_gives_the_most_likely(fitted, candidates):
    choice = choose(fitted, candidates, tpot_ms=1e-3, min_attainment=0.9, prefer="quality")
    assert not choice.met
    assert choice.attainment[choice.index] == choice.attainment.max()


@pytest.mark.parametrize("objective", ["tpot_ms", "ttft_ms", "e2e_ms"])
def test_out_of_reach_objectives_give_the_closest_candidate_whatever_prefer(
    fitted, candidates, objective
):
    # Every candidate at attainment 0: the fastest for that objective, not the
    # preferred (here the preference favours the slowest).
    features = candidates.drop(columns="quality")
    per_token = fitted.predict_total(features, output_tokens=64) / 64
    prefill = fitted.predict_prefill(features)
    speed = {"tpot_ms": per_token, "ttft_ms": prefill, "e2e_ms": prefill + 64 * per_token}
    slowest_first = candidates.assign(quality=speed[objective])
    choice = choose(
        fitted,
        slowest_first,
        output_tokens=64,
        min_attainment=0.9,
        prefer="quality",
        **{objective: 1e-3},
    )
    assert not choice.met and (choice.attainment == 0).all()
    assert choice.index == int(np.argmin(speed[objective]))


def test_candidates_with_output_lengths_and_unknown_lengths(fitted, candidates):
    known = candidates.assign(output_tokens=64)
    a = choose(fitted, known, tpot_ms=8.0)
    b = choose(fitted, candidates, tpot_ms=8.0, output_tokens=64)
    np.testing.assert_array_equal(a.attainment, b.attainment)
    unknown = choose(fitted, candidates, tpot_ms=8.0, output_tokens_distribution=[32, 64, 128])
    assert ((unknown.attainment >= 0) & (unknown.attainment <= 1)).all()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"prefer": "speed"}, ValueError, "prefer='speed' names no column of candidates"),
        ({"prefer": "top_k"}, ValueError, "prefer='top_k' is a feature of the model"),
        ({"prefer": [1.0, 2.0]}, ValueError, r"prefer must give one value per candidate \(40\)"),
        ({"min_attainment": 1.5}, ValueError, r"min_attainment must be a number in \[0, 1\]"),
        ({"min_attainment": True}, ValueError, r"min_attainment must be a number in \[0, 1\]"),
        ({"tpot_ms": None}, ValueError, "give at least one objective"),
    ],
)
def test_bad_choices_are_named(fitted, candidates, kwargs, error, message):
    args = {"tpot_ms": 8.0, **kwargs}
    with pytest.raises(error, match=message):
        choose(fitted, candidates, **args)


def test_missing_feature_and_nan_preference(fitted, candidates):
    with pytest.raises(ValueError, match=r"candidates lack the feature column\(s\) \['top_k'\]"):
        choose(fitted, candidates.drop(columns="top_k"), tpot_ms=8.0)
    bad = candidates.assign(quality=np.r_[np.nan, candidates["quality"].to_numpy()[1:]])
    with pytest.raises(ValueError, match=r"prefer must be finite .*sample 0"):
        choose(fitted, bad, tpot_ms=8.0, prefer="quality")


def test_arrays_without_names(fitted_1d, small_data):
    X = small_data.X.to_numpy()[:10]
    with pytest.warns(UserWarning, match="feature names"):
        choice = choose(fitted_1d, X, tpot_ms=8.0, min_attainment=0.0)
    assert choice.index == 0 and choice.met
