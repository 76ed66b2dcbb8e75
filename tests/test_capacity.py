"""capacity: the largest load at which a configuration meets its objectives."""

import numpy as np
import pandas as pd
import pytest

from sklat import LatencyEstimator
from sklat.cli import main
from sklat.control import capacity
from sklat.datasets import make_positioned_latency
from sklat.exceptions import ExtrapolationWarning

LEVELS = [1, 2, 3, 4, 6, 8]


@pytest.fixture(scope="module")
def loaded():
    """A model of requests slowed by the load: every latency times 1 + 0.25 (c - 1)."""
    d = make_positioned_latency(400, noise=0.05, max_output_tokens=128, random_state=0)
    load = np.random.RandomState(1).randint(1, 9, len(d.X))
    X = d.X.assign(concurrency=load)
    y = d.y * (1 + 0.25 * (load[:, None] - 1))
    est = LatencyEstimator(max_epochs=40, random_state=0).fit(X, y, output_tokens=d.output_tokens)
    return est, d


def test_capacity_is_the_last_level_before_the_first_miss(loaded):
    est, d = loaded
    configs = d.X.iloc[:12]
    per_token = est.predict_total(configs.assign(concurrency=4), output_tokens=64) / 64
    result = capacity(est, configs, tpot_ms=per_token, output_tokens=64, levels=LEVELS)
    levels = np.asarray(LEVELS, dtype=float)
    assert result.attainment.shape == (12, len(LEVELS))
    for row, kept, bounded in zip(result.attainment, result.capacity, result.bounded):
        meets = row >= 0.9 - 1e-12
        first_miss = np.argmin(meets) if not meets.all() else len(LEVELS)
        assert bounded == (not meets.all())
        assert kept == (0.0 if first_miss == 0 else levels[first_miss - 1])
    # Each objective is that configuration's own median speed at 4 in flight:
    # it holds at 90% below 4 and fails by 6.
    assert (result.capacity >= 1).all() and (result.capacity < 6).all()
    # The same attainments as predict_slo_attainment at each level.
    at2 = est.predict_slo_attainment(
        configs.assign(concurrency=2), tpot_ms=per_token, output_tokens=64
    )
    np.testing.assert_allclose(result.attainment[:, LEVELS.index(2)], at2)


def test_a_looser_objective_never_lowers_the_capacity(loaded):
    est, d = loaded
    configs = d.X.iloc[:20]
    speed = {
        c: est.predict_total(configs.assign(concurrency=c), output_tokens=64) / 64 for c in (2, 6)
    }
    kw = dict(output_tokens=64, levels=LEVELS, min_attainment=0.5)
    tight = capacity(est, configs, tpot_ms=speed[2], **kw).capacity
    loose = capacity(est, configs, tpot_ms=speed[6], **kw).capacity
    assert (loose >= tight).all() and (loose > tight).any()


def test_default_levels_reach_twice_the_largest_load_trained(loaded):
    est, d = loaded
    with pytest.warns(ExtrapolationWarning, match="levels 9, 10, .*, 16 of 'concurrency'"):
        result = capacity(est, d.X.iloc[:2], tpot_ms=1e6)
    np.testing.assert_array_equal(result.levels, np.arange(1.0, 17.0))
    assert not result.bounded.any() and (result.capacity == 16).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"levels": [2, 1]}, "levels must be increasing"),
        ({"levels": [0, 1]}, "levels must be a non-empty list of finite loads > 0"),
        ({"levels": []}, "levels must be a non-empty list"),
        (
            {"levels": [0.5, 1]},
            r"levels of 'concurrency' count this client's requests including the request "
            r"itself, so they must be >= 1; got \[0.5, 1\]\.",
        ),
        (
            {"levels": [1, 2, 1e308]},
            r"levels go to 1e\+308, past 64, the largest load 'concurrency' the model "
            r"evaluates .* "
            r"give levels up to 64",
        ),
        ({"load_feature": "batch"}, "the model has no load feature 'batch'"),
        (
            {"load_feature": 5},
            r"load_feature must be a feature name or a non-empty list of them; got 5\.",
        ),
        (
            {"load_feature": "top_k"},
            r"'top_k' is not a load feature of the model \(its load features: "
            r"\['concurrency'\]\)",
        ),
        ({"min_attainment": 2}, "min_attainment must be a number in"),
        ({"output_tokens": [10, 20, 30]}, "output_tokens has 3 entries but X has 2 samples"),
        (
            {"tpot_ms": [5.0, 6.0, 7.0]},
            r"tpot_ms must be a number or have one entry per sample \(2\); got shape \(3,\)",
        ),
    ],
)
def test_bad_arguments(loaded, kwargs, message):
    est, d = loaded
    kwargs = {"tpot_ms": 5.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        capacity(est, d.X.iloc[:2], **kwargs)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.nan, "must be finite"),
        ("many", "must be numeric, not text"),
        (-4.0, "needs values >= 0"),
    ],
)
def test_a_bad_configuration_is_named_as_the_caller_numbers_it(loaded, value, message):
    # Every configuration is evaluated at every level; the error names the
    # configuration (2), not its row in that table (2 x 16 levels = 32).
    est, d = loaded
    X = d.X.iloc[:3].astype({"top_k": object})
    X.iloc[2, X.columns.get_loc("top_k")] = value
    with pytest.raises(ValueError, match=f"X column 'top_k' .*{message}.*; sample 2 is"):
        capacity(est, X, tpot_ms=5.0)


def test_levels_outside_the_training_range_warn_once(loaded):
    import warnings

    est, d = loaded
    X = d.X.iloc[:3].copy()
    X.iloc[1, X.columns.get_loc("top_k")] = 1000.0  # past its training range
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capacity(est, X, tpot_ms=5.0, levels=[1, 4, 12, 16])
    messages = [str(w.message) for w in caught if issubclass(w.category, ExtrapolationWarning)]
    assert len(messages) == 2, messages
    assert messages[0].startswith("X column 'top_k' = 1000 (sample 1) is outside")
    assert messages[1].startswith(
        "levels 12, 16 of 'concurrency' are outside its training range [1, 8]"
    )
    assert all(w.filename == __file__ for w in caught)
    # A count of requests that includes the request itself has no level below 1.
    with pytest.raises(
        ValueError, match=r"levels of 'concurrency' count this client's requests including"
    ):
        capacity(est, X, tpot_ms=5.0, levels=[0.5, 1, 4])


def test_the_load_column_is_for_capacity_to_set(loaded):
    est, d = loaded
    with pytest.raises(ValueError, match="X holds the load feature 'concurrency'"):
        capacity(est, d.X.iloc[:2].assign(concurrency=1), tpot_ms=5.0)
    with pytest.raises(ValueError, match=r"X lacks the feature column\(s\) \['top_k'\]"):
        capacity(est, d.X.iloc[:2].drop(columns="top_k"), tpot_ms=5.0)


def _saved(loaded, tmp_path):
    """The model file of ``loaded`` and a file of its first 8 configurations."""
    import sklat

    est, d = loaded
    model = tmp_path / "model.safetensors"
    sklat.save(est, model)
    configs = tmp_path / "configs.csv"
    d.X.iloc[:8].to_csv(configs, index=False)
    return model, configs


def test_sklat_capacity_prints_each_configuration(loaded, tmp_path, capsys):
    import sklat

    _, d = loaded
    model, configs = _saved(loaded, tmp_path)
    args = ["capacity", "--model", str(model), str(configs), "--tpot_ms", "80"]
    assert main([*args, "--levels", "1,2,4,8"]) == 0
    out = capsys.readouterr()
    table = pd.read_csv(pd.io.common.StringIO(out.out))
    expected = capacity(sklat.load(model), d.X.iloc[:8], tpot_ms=80.0, levels=[1, 2, 4, 8])
    assert len(set(expected.capacity)) > 1  # the objective splits the configurations
    np.testing.assert_array_equal(table["capacity"], expected.capacity)
    assert "loads evaluated 1, 2, 4, 8;" in out.err
    # The default sweep, evenly spaced to twice the largest trained load, is
    # said by its ends and step.
    assert main(args) == 0
    assert "loads evaluated 1, 2, ..., 16 (every 1);" in capsys.readouterr().err
    assert main([*args, "--levels", "4,2"]) == 2
    assert "levels must be increasing" in capsys.readouterr().err
    # An empty name in the list is refused as every list option's is.
    with pytest.raises(SystemExit):
        main([*args, "--load_feature", "concurrency,"])
    assert "expected comma-separated feature names, got 'concurrency,' (entry 2 is empty)" in (
        capsys.readouterr().err
    )


def test_sklat_choose_decides_at_the_load_given(loaded, tmp_path, capsys):
    import sklat
    from sklat.control import choose

    est, d = loaded
    model, candidates = _saved(loaded, tmp_path)
    tpot = float(np.median(est.predict_total(d.X.iloc[:8].assign(concurrency=4), 64) / 64))
    args = ["choose", str(candidates), "--model", str(model), "--tpot_ms", str(tpot)]
    args += ["--output_tokens", "64", "--output", str(tmp_path / "all.csv")]
    for load, value in (("2", 2.0), ("concurrency=6", 6.0)):
        code = main([*args, "--load", load, "--overwrite"])
        kw = dict(tpot_ms=tpot, output_tokens=64, load=value)
        expected = choose(sklat.load(model), d.X.iloc[:8], **kw)
        assert code == (0 if expected.met else 1)
        table = pd.read_csv(tmp_path / "all.csv")
        np.testing.assert_allclose(table["attainment"], expected.attainment, rtol=1e-6)
        assert table["chosen"].to_numpy().nonzero()[0].tolist() == [expected.index]
    capsys.readouterr()
    # The load is needed, as an option or a column; a bad one is named.
    assert main(args[:-2]) == 2
    err = capsys.readouterr().err
    assert "no load column 'concurrency'; give the load every candidate is decided at" in err
    assert main([*args[:-2], "--load", "kv=2"]) == 2
    assert "load= names 'kv', which is not a load feature (they are 'concurrency')" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main([*args[:-2], "--load", "fast"])
    assert "expected a number or name=value pairs" in capsys.readouterr().err


def test_sklat_predict_at_the_load_given(loaded, tmp_path, capsys):
    import sklat

    _, d = loaded
    model, configs = _saved(loaded, tmp_path)
    args = ["predict", "--model", str(model), str(configs), "--output_tokens", "32"]
    assert main([*args, "--load", "concurrency=3"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert (table["concurrency"] == 3).all()
    expected = sklat.load(model).predict_total(d.X.iloc[:8], 32, load=3)
    np.testing.assert_allclose(table["T_LLM_decode_ms"], expected, rtol=1e-4)
    assert main(args) == 2
    assert "no load column 'concurrency'; give the load every configuration is predicted at" in (
        capsys.readouterr().err
    )


def test_a_load_in_the_file_and_set_by_the_command_is_refused(loaded, tmp_path, capsys):
    # The estimator refuses a load given twice; the commands used to let
    # --load (or capacity's sweep) replace the file's column unseen.
    _, d = loaded
    model, _ = _saved(loaded, tmp_path)
    configs = tmp_path / "with_load.csv"
    d.X.iloc[:4].assign(concurrency=[1, 2, 4, 8]).to_csv(configs, index=False)
    given_twice = (
        "column 'concurrency' is a load that --load gives too; give each load once: leave "
        "the column out of the file, or --load out."
    )
    for command in (
        ["predict", "--model", str(model), str(configs), "--load", "concurrency=3"],
        ["choose", str(configs), "--model", str(model), "--tpot_ms", "80", "--load", "3"],
    ):
        assert main(command) == 2
        assert f"{configs}: {given_twice}" in capsys.readouterr().err
    assert main(["capacity", "--model", str(model), str(configs), "--tpot_ms", "80"]) == 2
    assert (
        f"{configs}: column 'concurrency' is the load that capacity sweeps (--levels); leave it "
        "out of the file." in capsys.readouterr().err
    )
    # Without --load, the file's loads are what predict and choose use.
    assert main(["predict", "--model", str(model), str(configs), "--output_tokens", "8"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["concurrency"].tolist() == [1, 2, 4, 8]
