"""The prefill's own loads: what a request met when it was sent (the requests in
flight, those still waiting for a first token) shapes its time to first token,
the load over its decode shapes its decode."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import sklat
from sklat import LatencyEstimator
from sklat._module import CostTermsLatencyModule
from sklat.exceptions import ExtrapolationWarning

AT_START = ["in_flight_at_start", "waiting_at_start"]


def _open_loop_requests(n=240, seed=0):
    """Requests whose time per token grows with the load over their decode
    (``concurrency``) and whose time to first token grows with the queue they
    joined (``waiting_at_start``), the two drawn independently, as an open
    loop's arrivals make them: a decode shared with requests sent later, a
    queue that only the instant of sending tells."""
    rng = np.random.default_rng(seed)
    prompt = rng.choice([64, 128, 256, 512], n)
    concurrency = rng.choice([1.0, 2.0, 4.0, 8.0], n)
    waiting = rng.choice([1, 2, 3, 4], n)
    in_flight = waiting + rng.integers(0, 4, n)
    tokens = rng.integers(8, 96, n)
    tpot = (4.0 + 1.5 * concurrency) * (1 + prompt / 4096)
    decode = tpot * tokens * rng.lognormal(0, 0.03, n)
    prefill = (0.2 * prompt + 15.0 * waiting**1.5) * rng.lognormal(0, 0.03, n)
    X = pd.DataFrame(
        {
            "text_tokens": prompt,
            "concurrency": concurrency,
            "in_flight_at_start": in_flight,
            "waiting_at_start": waiting,
        }
    )
    y = pd.DataFrame({"T_prefill_total": prefill, "T_LLM_decode": decode})
    return X, y, tokens


@pytest.fixture(scope="module")
def arrivals():
    X, y, tokens = _open_loop_requests()
    est = LatencyEstimator(max_epochs=80, random_state=0, n_folds=None, n_threads=1)
    return est.fit(X, y, output_tokens=tokens), X, y, tokens


def test_auto_gives_the_prefill_the_loads_of_the_sending(arrivals):
    est = arrivals[0]
    assert est.decode_load_features_.tolist() == [1]
    assert est.prefill_load_features_.tolist() == [2, 3]
    assert est.load_features_.tolist() == [1, 2, 3]


def test_each_head_sees_only_its_own_loads(arrivals):
    est, X = arrivals[0], arrivals[1].iloc[:20]
    queued = X.assign(in_flight_at_start=9, waiting_at_start=6)
    busy = X.assign(concurrency=8.0)
    np.testing.assert_array_equal(
        est.predict_total(queued, output_tokens=40), est.predict_total(X, output_tokens=40)
    )
    np.testing.assert_array_equal(est.predict_prefill(busy), est.predict_prefill(X))
    assert (est.predict_prefill(queued) > est.predict_prefill(X)).all()
    lighter = X["concurrency"].to_numpy() < 8
    more = est.predict_total(busy, output_tokens=40) > est.predict_total(X, output_tokens=40)
    assert lighter.any() and (more == lighter).all()


def test_the_time_to_first_token_follows_the_queue_it_joined(arrivals):
    # The generating prefill's wait grows as the queue to the power 1.5; a
    # prefill that read the decode's load would see none of it (the two are
    # drawn independently).
    est, X, y, _ = arrivals
    est = est.set_params(point="center")
    pred = est.predict_prefill(X)
    ratio = pred / y["T_prefill_total"].to_numpy()
    for waiting in (1, 2, 3, 4):
        rows = X["waiting_at_start"].to_numpy() == waiting
        assert abs(np.median(ratio[rows]) - 1) < 0.15


def test_the_prefill_does_not_fall_as_its_queue_grows(arrivals):
    est = arrivals[0]
    grid = np.arange(1, 33)
    X = pd.DataFrame(
        {
            "text_tokens": 256,
            "concurrency": 2.0,
            "in_flight_at_start": grid + 2,
            "waiting_at_start": grid,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        prefill = est.predict_prefill(X)
    assert (np.diff(prefill) >= -1e-9 * prefill[1:]).all() and prefill[-1] > prefill[0]


def test_without_the_columns_of_the_sending_the_prefill_sees_the_decodes_load():
    X, y, tokens = _open_loop_requests(n=60)
    est = LatencyEstimator(max_epochs=2, random_state=0)
    est.fit(X.drop(columns=AT_START), y, output_tokens=tokens)
    assert est.decode_load_features_.tolist() == [1]
    assert est.prefill_load_features_.tolist() == [1]


@pytest.mark.parametrize(
    "prefill_load_features, decode, prefill",
    [
        (None, [1], []),
        (["waiting_at_start"], [1], [3]),
        (["concurrency", "waiting_at_start"], [1], [1, 3]),
        ([2], [1], [2]),
    ],
)
def test_named_prefill_loads(prefill_load_features, decode, prefill):
    X, y, tokens = _open_loop_requests(n=60)
    est = LatencyEstimator(max_epochs=2, random_state=0)
    est.set_params(prefill_load_features=prefill_load_features).fit(X, y, output_tokens=tokens)
    assert est.decode_load_features_.tolist() == decode
    assert est.prefill_load_features_.tolist() == prefill
    assert est.load_features_.tolist() == sorted(set(decode) | set(prefill))


def test_a_negative_queue_is_refused(arrivals):
    est, X = arrivals[0], arrivals[1].iloc[:3]
    with pytest.raises(ValueError, match=r"X column 'waiting_at_start' .* sample 1 is -1"):
        est.predict_prefill(X.assign(waiting_at_start=[1, -1, 2]))


@pytest.mark.parametrize(
    "column, values, message",
    [
        (
            "waiting_at_start",
            [1, 0, 2],
            r"X column 'waiting_at_start' counts this client's requests including the "
            r"request itself, so it must be >= 1; sample 1 is 0.0",
        ),
        ("in_flight_at_start", [1, 2, 0.5], r"'in_flight_at_start' .* sample 2 is 0.5"),
        ("concurrency", [0, 2, 2], r"'concurrency' .* must be >= 1; sample 0 is 0.0"),
        (
            "in_flight_at_start",
            [4, 1, 9],  # the rows hold 1, 2 and 2 waiting
            r"X column 'waiting_at_start' counts those of 'in_flight_at_start' still waiting "
            r"for their first token, so it cannot exceed it; sample 1 has 2.0 waiting and 1.0 "
            r"in flight",
        ),
    ],
)
def test_loads_that_count_the_request_itself(arrivals, column, values, message):
    """The columns the profilers and importers write count the request itself
    (and those waiting are some of those in flight): a value that breaks this
    is a column of another meaning, refused at fit and at predict."""
    est, X, y, tokens = arrivals
    X3 = X.iloc[:3].assign(waiting_at_start=[1, 2, 2], in_flight_at_start=[3, 3, 3])
    bad = X3.assign(**{column: values})
    with pytest.raises(ValueError, match=message):
        est.predict_prefill(bad)
    with pytest.raises(ValueError, match=message):
        LatencyEstimator(max_epochs=1).fit(bad, y.iloc[:3], output_tokens=tokens[:3])
    # Within rounding of a time-weighted mean, a count of one is one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        est.predict_prefill(X3.assign(concurrency=1 - 1e-7))
    with pytest.raises(
        ValueError,
        match=r"load of feature 'waiting_at_start' counts this client's requests including "
        r"the request itself, so it must be >= 1; got 0",
    ):
        est.predict_prefill(X3.drop(columns="waiting_at_start"), load={"waiting_at_start": 0})
    # A load of another name (a KV-cache usage, the requests beside this one)
    # may be 0.
    other = X.rename(columns={"waiting_at_start": "waiting_others"}).iloc[:30]
    other["waiting_others"] -= 1
    LatencyEstimator(max_epochs=1, load_features=["concurrency", "waiting_others"]).fit(
        other, y.iloc[:30], output_tokens=tokens[:30]
    )


def test_persistence_keeps_each_heads_loads(arrivals, tmp_path):
    est, X = arrivals[0], arrivals[1]
    path = tmp_path / "model.safetensors"
    sklat.save(est, path)
    again = sklat.load(path)
    assert again.decode_load_features_.tolist() == [1]
    assert again.prefill_load_features_.tolist() == [2, 3]
    np.testing.assert_allclose(again.predict(X, output_tokens=30), est.predict(X, output_tokens=30))


def test_every_load_of_the_call_is_given_once(arrivals):
    est = arrivals[0]
    configs = pd.DataFrame({"text_tokens": [64, 512]})
    load = {"concurrency": 4.0, "in_flight_at_start": 5, "waiting_at_start": 2}
    got = est.predict_prefill(configs, load=load)
    want = est.predict_prefill(configs.assign(**load)[list(est.feature_names_in_)])
    np.testing.assert_array_equal(got, want)


def test_modules_whose_heads_see_every_load_are_those_of_before():
    # decode_load_features and prefill_load_features left out (a module of
    # 0.17 or of data without the columns of the sending) or naming every
    # load feature: the same masks, weights and outputs.
    kwargs = dict(hidden_size=8, n_basis=3, context_features=[0], load_features=[1, 2])
    torch.manual_seed(0)
    before = CostTermsLatencyModule(3, **kwargs)
    torch.manual_seed(0)
    both = CostTermsLatencyModule(
        3, decode_load_features=[1, 2], prefill_load_features=[1, 2], **kwargs
    )
    assert torch.equal(before.linear_mask, both.linear_mask)
    assert torch.equal(before.nonnegative_mask, both.nonnegative_mask)
    x = torch.randn(4, 3)
    for key in ("flat", "slope", "shape", "prefill"):
        assert torch.equal(before.encode(x)[key], both.encode(x)[key])


def test_a_prefill_load_reaches_only_the_prefills_power_laws():
    torch.manual_seed(0)
    module = CostTermsLatencyModule(
        3,
        hidden_size=8,
        n_basis=3,
        context_features=[0],
        load_features=[1, 2],
        decode_load_features=[1],
        prefill_load_features=[2],
    ).double()
    with torch.no_grad():
        module.config_linear.weight.normal_(0.0, 1.0)
    x = torch.randn(5, 3, dtype=torch.float64)
    decode, prefill = ("flat", "slope"), ("prefill",)
    for col, moved, still in ((1, decode, prefill), (2, prefill, decode)):
        more = x.clone()
        more[:, col] += 1.0
        a, b = module.encode(x), module.encode(more)
        for key in moved:
            assert (b[key] > a[key]).all()
        for key in still:
            assert torch.equal(a[key], b[key])


def test_capacity_sweeps_the_decodes_load_with_the_sending_given(arrivals):
    est = arrivals[0]
    configs = pd.DataFrame({"text_tokens": [64, 512], "in_flight_at_start": 2})
    with pytest.raises(ValueError, match=r"X lacks the feature column\(s\) \['waiting_at_start'\]"):
        sklat.control.capacity(est, configs, tpot_ms=12.0, levels=[1, 2, 4, 8])
    configs["waiting_at_start"] = 1
    result = sklat.control.capacity(est, configs, tpot_ms=12.0, levels=[1, 2, 4, 8])
    named = sklat.control.capacity(
        est, configs, tpot_ms=12.0, levels=[1, 2, 4, 8], load_feature="concurrency"
    )
    np.testing.assert_array_equal(result.attainment, named.attainment)
    assert (np.diff(result.attainment, axis=1) <= 1e-12).all()


def test_capacity_sweeps_several_loads_together(arrivals, tmp_path, capsys):
    """A closed loop of L requests has L in flight over a decode and when a
    request is sent: both loads take each level, the queue held as given."""
    from sklat.cli import main

    est = arrivals[0]
    configs = pd.DataFrame({"text_tokens": [64, 512], "waiting_at_start": 1})
    levels = [1, 2, 4, 7]
    swept = ["concurrency", "in_flight_at_start"]
    result = sklat.control.capacity(
        est, configs, ttft_ms=60.0, tpot_ms=12.0, levels=levels, load_feature=swept
    )
    # The same as each configuration given both loads at each level.
    grid = configs.loc[np.repeat([0, 1], 4)].assign(
        concurrency=np.tile(levels, 2), in_flight_at_start=np.tile(levels, 2)
    )
    want = est.predict_slo_attainment(
        grid[list(est.feature_names_in_)], ttft_ms=60.0, tpot_ms=12.0
    ).reshape(2, 4)
    np.testing.assert_allclose(result.attainment, want, rtol=1e-12)
    # Default levels: those of the load that reaches least (in flight at the
    # sending stays below 8 in training, concurrency reaches 8).
    with pytest.warns(ExtrapolationWarning, match=r"of 'in_flight_at_start' are outside"):
        default = sklat.control.capacity(est, configs, tpot_ms=12.0, load_feature=swept)
    assert default.levels[-1] == 14.0
    with pytest.raises(ValueError, match=r"load_feature lists a feature twice"):
        sklat.control.capacity(est, configs, tpot_ms=12.0, load_feature=["concurrency"] * 2)
    with pytest.raises(ValueError, match=r"load_feature must be a feature name or a non-empty"):
        sklat.control.capacity(est, configs, tpot_ms=12.0, load_feature=[])
    with pytest.raises(ValueError, match=r"X holds the load feature 'in_flight_at_start'"):
        sklat.control.capacity(
            est, configs.assign(in_flight_at_start=2), tpot_ms=12.0, load_feature=swept
        )
    # From the command line, comma-separated.
    model, table = tmp_path / "model.safetensors", tmp_path / "configs.csv"
    sklat.save(est, model)
    configs.to_csv(table, index=False)
    args = ["capacity", "--model", str(model), str(table), "--ttft_ms", "60", "--tpot_ms", "12"]
    args += ["--levels", "1,2,4,7", "--load_feature", "concurrency,in_flight_at_start"]
    assert main(args) == 0
    printed = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    np.testing.assert_array_equal(printed["capacity"], result.capacity)
