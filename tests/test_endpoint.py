"""sklat profile --endpoint against a local fault-injecting server."""

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

from sklat.cli import main
from sklat.io import load_results
from sklat.profile import profile_endpoint

from ._sse_server import Server

GRID = dict(prompt_tokens=[8, 24], output_tokens=[4, 9], repeats=1, warmup=0, progress=False)


@pytest.fixture(scope="module")
def server():
    with Server() as s:
        yield s


def _profile(server, mode, tmp_path, **kwargs):
    return profile_endpoint(
        server.url(mode), tmp_path, model="m", dataset="d", **{**GRID, **kwargs}
    )


def _failures(path):
    log = path.parent / "failed_requests.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_one_token_per_event_gives_per_step_segments(server, tmp_path):
    path = _profile(server, "ok", tmp_path, set_columns={"top_k": 2, "gpu": "test"})
    frame = pd.read_csv(path)
    assert len(frame) == 4 and not _failures(path)
    assert set(frame["segments"]) == {"one token per event"}
    assert sorted(frame["output_tokens"]) == [4, 4, 9, 9]
    assert (frame["text_tokens"] == frame["text_tokens_asked"]).all()
    assert set(frame["top_k"]) == {2} and set(frame["gpu"]) == {"test"}
    assert set(frame["server_version"]) == {"0.0.test"}
    res = load_results(tmp_path, features=["text_tokens", "top_k"])
    for (tokens, ms), n, total in zip(
        res.decode_segments, res.output_tokens, res.y["T_LLM_decode"]
    ):
        # One event per token; events that a busy client reads together merge.
        assert tokens.sum() == n and (tokens >= 1).all()
        assert ms.sum() == pytest.approx(total, rel=1e-6)
    assert (frame["e2e_ms"] >= frame["T_prefill_total"] + frame["T_LLM_decode"]).all()


def test_a_rerun_resumes_and_a_changed_setup_is_refused(server, tmp_path):
    path = _profile(server, "ok", tmp_path)
    before = path.read_text()
    _profile(server, "ok", tmp_path)
    assert path.read_text() == before
    more = _profile(server, "ok", tmp_path, **{**GRID, "output_tokens": [4, 9, 12]})
    assert len(pd.read_csv(more)) == 6
    with pytest.raises(ValueError, match=r"measured with engine=\['openai'\], not 'vllm'"):
        _profile(server, "ok", tmp_path, engine="vllm")


def test_events_in_one_read_form_one_segment(server, tmp_path):
    frame = pd.read_csv(_profile(server, "pairs", tmp_path, output_tokens=[9]))
    for tokens in frame["T_decode_segment_tokens"]:
        # 9 decode tokens: the first alone, then pairs, the last alone. A pair is
        # one network write: never split (a busy client may join reads, though).
        ends = np.cumsum(json.loads(tokens))
        assert ends[-1] == 9 and all(e % 2 == 0 for e in ends[:-1])


def test_engine_token_counts_make_segments_of_several_tokens(server, tmp_path):
    frame = pd.read_csv(_profile(server, "usage3", tmp_path, output_tokens=[9], engine="vllm"))
    assert set(frame["segments"]) == {"counted by the engine"}
    for tokens in frame["T_decode_segment_tokens"]:
        # Events at tokens 1, 4, 7 and 10 (running counts 1, 4, 7, 10): segments
        # of 3, joined where a busy client reads two events at once.
        ends = np.cumsum(json.loads(tokens))
        assert set(ends) <= {3, 6, 9} and ends[-1] == 9


def test_a_short_response_is_recorded_as_such(server, tmp_path):
    frame = pd.read_csv(_profile(server, "short", tmp_path, output_tokens=[9]))
    assert (frame["output_tokens_asked"] == 9).all()
    assert (frame["output_tokens"] == 4).all() and set(frame["finish_reason"]) == {"stop"}


@pytest.mark.parametrize(
    "mode, error",
    [
        ("error500", r"HTTP 500: \{\"error\": \"out of memory\"\}"),
        ("notsse", r"application/json, not an event stream"),
        ("malformed", r"malformed event '\{not json'"),
        ("drop", r"connection dropped mid-stream"),
        ("stall", r"no data for 0.5 s: the request stalled"),
        ("nousage", r"reported no output token count"),
    ],
)
def test_faults_are_logged_not_kept(server, tmp_path, mode, error):
    path = _profile(server, mode, tmp_path, output_tokens=[6], timeout=0.5)
    failures = _failures(path)
    assert len(failures) == 2 and not path.exists()
    assert all(re.search(error, f["error"]) for f in failures), failures
    assert {(f["text_tokens_asked"], f["output_tokens_asked"]) for f in failures} == {
        (8, 6),
        (24, 6),
    }


def test_completed_rows_survive_an_interruption(server, tmp_path, monkeypatch):
    import sklat.acquire._endpoint as endpoint

    real, calls = endpoint._measure, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(endpoint, "_measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _profile(server, "ok", tmp_path)
    # The two completed rows are kept (a request already in flight may finish too).
    assert len(pd.read_csv(tmp_path / "d" / "requests.csv")) in (2, 3)
    monkeypatch.setattr(endpoint, "_measure", real)
    assert len(pd.read_csv(_profile(server, "ok", tmp_path))) == 4


def test_prompt_counted_differently_is_recorded_or_refused(server, tmp_path):
    frame = pd.read_csv(_profile(server, "bos", tmp_path))
    assert (frame["text_tokens"] == frame["text_tokens_asked"] + 1).all()
    with pytest.raises(ValueError, match=r"counted 9 prompt tokens where 8 were asked"):
        _profile(server, "bos", tmp_path / "other", prompt_tokens=[8], prompt_mismatch="refuse")


def test_bad_arguments_are_refused_before_any_request(tmp_path):
    with pytest.raises(ValueError, match=r"endpoint must be an http:// or https:// URL"):
        profile_endpoint("localhost:8000", tmp_path, model="m")
    with pytest.raises(ValueError, match=r"engine must be one of"):
        profile_endpoint("http://127.0.0.1:9", tmp_path, model="m", engine="tgi")
    for bad, message in [
        (dict(concurrency=0), r"concurrency must be integers >= 1; got 0"),
        (dict(concurrency=-2), r"concurrency must be integers >= 1; got -2"),
        (dict(concurrency=[1, "x"]), r"concurrency must be integers >= 1; got 'x'"),
        (dict(concurrency=float("nan")), r"concurrency must be integers >= 1; got nan"),
        (dict(concurrency=[]), r"concurrency must not be an empty list"),
        (dict(concurrency=[2, 2]), r"a load level is listed twice: concurrency 2\."),
        (dict(request_rate=[1, 4, 1.0]), r"a load level is listed twice: request rate 1/s\."),
        (dict(prompt_tokens=[8, 8]), r"prompt_tokens lists 8 twice"),
        (dict(request_rate=0), r"request_rate must be finite numbers .* > 0; got 0"),
        (dict(request_rate=[1, float("inf")]), r"request_rate must be finite .*; got inf"),
        (dict(request_rate="fast"), r"request_rate must be a number or a list"),
        (dict(retries=-1), r"retries must be an integer >= 0"),
        (dict(concurrency=None), r"give at least one load level"),
    ]:
        with pytest.raises(ValueError, match=message):
            profile_endpoint("http://127.0.0.1:9", tmp_path, model="m", **bad)
    with pytest.raises(ValueError, match=r"output_tokens must be a non-empty list"):
        profile_endpoint("http://127.0.0.1:9", tmp_path, model="m", output_tokens=[0])
    # Nothing listening: one clear error, nothing written.
    with pytest.raises(ValueError, match=r"cannot connect to http://127.0.0.1:9/v1/completions"):
        profile_endpoint("http://127.0.0.1:9", tmp_path, model="m", progress=False)
    assert not any(tmp_path.rglob("requests.csv"))


def test_concurrent_requests_all_land(server, tmp_path):
    path = _profile(server, "ok", tmp_path, concurrency=3, repeats=2)
    frame = pd.read_csv(path)
    assert len(frame) == 8 and set(frame["max_concurrency"]) == {3}
    assert frame["concurrency"].between(1.0, 3.0 + 1e-9).all()
    keys = set(zip(frame["text_tokens_asked"], frame["output_tokens_asked"], frame["repeat"]))
    assert len(keys) == 8


def test_command_line_endpoint_profile_then_train(server, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["profile", "--endpoint", server.url("ok"), "--model", "m", "--output_dir", str(out)]
    args += ["--prompt_tokens", "8,16,32", "--output_tokens", "4,8,16", "--repeats", "2"]
    assert main(args + ["--set", "top_k=2", "--warmup", "0", "-q"]) == 0
    assert "18 requests in" in capsys.readouterr().out
    model = tmp_path / "model"
    train = ["train", "--results_dir", str(out), "--use_all_datasets", "--output_dir", str(model)]
    train += ["--features", "text_tokens", "--num_epochs", "5", "--quiet"]
    assert main(train) == 0
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["train"]["n_requests_with_segments"] > 0
    assert np.isfinite(metrics["train"]["segment_mape_pct"])


def test_command_line_refuses_options_of_the_other_mode(tmp_path, capsys):
    base = ["profile", "--model", "m", "--output_dir", str(tmp_path)]
    assert main(base + ["--endpoint", "http://127.0.0.1:9", "--top_k", "2"]) == 2
    assert "--top_k applies to a model profiled in this process" in capsys.readouterr().err
    assert main(base + ["--engine", "vllm"]) == 2
    assert "--engine applies to --endpoint profiling only" in capsys.readouterr().err


def test_missing_http_client_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx_sse", None)
    with pytest.raises(ImportError, match=r"pip install 'sklat\[endpoint\]'"):
        profile_endpoint("http://127.0.0.1:9", tmp_path, model="m")


def test_a_failing_warm_up_stops_before_the_grid(server, tmp_path):
    # A misconfigured setup (here: every request is refused) fails its warm-up.
    with pytest.raises(ValueError, match=r"the warm-up request to .* failed: HTTP 500"):
        _profile(server, "error500", tmp_path, warmup=1)
    assert not (tmp_path / "d" / "failed_requests.log").exists()


def test_command_line_interruption_keeps_rows_and_exits_130(server, tmp_path, monkeypatch, capsys):
    import sklat.acquire._endpoint as endpoint

    real, calls = endpoint._measure, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(endpoint, "_measure", interrupted)
    args = ["profile", "--endpoint", server.url("ok"), "--model", "m", "--output_dir"]
    args += [str(tmp_path), "--dataset", "d", "--prompt_tokens", "8", "--output_tokens", "4,6"]
    assert main(args + ["--repeats", "1", "--warmup", "0", "-q"]) == 130
    assert "interrupted; the completed requests are kept" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "d" / "requests.csv")) >= 1


@pytest.mark.parametrize("engine", ["openai", "vllm", "sglang", "llama.cpp", "transformers"])
def test_every_engine_asks_for_the_usage(engine):
    # An OpenAI-style server (transformers serve among them) reports the token
    # counts in a last event only when the request asks for it.
    from sklat.acquire._endpoint import _body

    body = _body("completions", engine, "m", "w1 w2", 8, None)
    assert body["stream_options"]["include_usage"] is True


@pytest.mark.parametrize("suffix", ["/", "/v1", "/v1/"])
def test_a_base_url_with_or_without_v1_is_the_same_server(server, tmp_path, suffix):
    path = profile_endpoint(server.url("ok") + suffix, tmp_path, model="m", dataset="d", **GRID)
    assert len(pd.read_csv(path)) == 4


def test_a_wrong_base_url_names_the_url_and_the_answer(server, tmp_path):
    url = server.url("ok") + "/api"
    with pytest.raises(ValueError) as info:
        profile_endpoint(url, tmp_path, model="m", dataset="d", **{**GRID, "warmup": 1})
    message = str(info.value)
    assert f"{url}/v1/completions failed: HTTP 404" in message
    assert '"detail": "Not Found"' in message and "appends /v1/completions" in message


def test_command_line_says_when_nothing_was_measured(server, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["profile", "--endpoint", server.url("error500"), "--model", "m"]
    args += ["--output_dir", str(out), "--prompt_tokens", "8", "--output_tokens", "4"]
    assert main([*args, "--warmup", "0", "-q"]) == 2
    captured = capsys.readouterr()
    assert "no request measured;" in captured.err and "was not written" in captured.err
    assert "requests in" not in captured.out
    assert re.search(r"\d+ request\(s\) failed this run", captured.err)


@pytest.mark.parametrize(
    "mode, error",
    [
        ("keepalive", r"no token for 0.5 s \(only keep-alive data\): the request stalled"),
        ("badgzip", r"the response body could not be decoded"),
        ("badusage", r"usage.completion_tokens = 'abc'; expected an integer"),
        ("hugeusage", r"usage.completion_tokens = 1000000000; expected an integer in 0..1048577"),
        ("manyevents", r"the stream carried \d+ token events but the server counted \d+"),
    ],
)
def test_hostile_servers_give_logged_failures_not_a_hang_or_a_crash(server, tmp_path, mode, error):
    import time

    start = time.monotonic()
    path = _profile(server, mode, tmp_path, timeout=0.5)
    assert time.monotonic() - start < 30
    failures = _failures(path)
    assert len(failures) == 4 and not path.exists()
    assert all(re.search(error, f["error"]) for f in failures), failures[0]


def test_a_closed_loop_sweep_records_each_requests_measured_load(server, tmp_path):
    grid = {**GRID, "prompt_tokens": [8, 16], "output_tokens": [6, 12], "repeats": 2}
    path = profile_endpoint(
        server.url("ok"), tmp_path, model="m", dataset="d", concurrency=[1, 4], **grid
    )
    frame = pd.read_csv(path)
    assert sorted(frame["max_concurrency"].value_counts().items()) == [(1, 8), (4, 8)]
    assert frame["request_rate"].isna().all()
    alone = frame[frame["max_concurrency"] == 1]["concurrency"]
    shared = frame[frame["max_concurrency"] == 4]["concurrency"]
    # One at a time: each request alone with itself; four at a time: never more
    # than four, and more than one on average.
    np.testing.assert_allclose(alone, 1.0)
    assert (shared >= 1.0).all() and (shared <= 4.0 + 1e-9).all() and shared.max() > 1.5
    # At its sending: itself and at most three others in flight, of which
    # those still waiting for a first token are a part; alone, itself only.
    at_start = frame[["in_flight_at_start", "waiting_at_start"]]
    one = frame["max_concurrency"] == 1
    assert (at_start[one] == 1).all().all()
    assert at_start[~one]["in_flight_at_start"].between(1, 4).all()
    assert at_start[~one]["in_flight_at_start"].max() > 1
    assert (at_start["waiting_at_start"] >= 1).all()
    assert (at_start["waiting_at_start"] <= at_start["in_flight_at_start"]).all()
    # A rerun measures nothing; a new level only that level.
    assert (
        len(
            pd.read_csv(
                profile_endpoint(
                    server.url("ok"), tmp_path, model="m", dataset="d", concurrency=[1, 4], **grid
                )
            )
        )
        == 16
    )
    again = pd.read_csv(
        profile_endpoint(
            server.url("ok"), tmp_path, model="m", dataset="d", concurrency=[1, 2, 4], **grid
        )
    )
    assert sorted(again["max_concurrency"].value_counts().items()) == [(1, 8), (2, 8), (4, 8)]


def test_an_open_loop_rate_sends_at_seeded_arrivals(server, tmp_path):
    grid = {**GRID, "prompt_tokens": [8], "output_tokens": [6, 12], "repeats": 3}
    path = profile_endpoint(
        server.url("ok"),
        tmp_path,
        model="m",
        dataset="d",
        concurrency=None,
        request_rate=[50.0, 2.5],
        **grid,
    )
    frame = pd.read_csv(path)
    assert frame["max_concurrency"].isna().all()
    assert sorted(frame["request_rate"].value_counts().items()) == [(2.5, 6), (50.0, 6)]
    assert (frame["concurrency"] >= 1.0).all()
    # Resumed by rate: nothing new.
    assert (
        len(
            pd.read_csv(
                profile_endpoint(
                    server.url("ok"),
                    tmp_path,
                    model="m",
                    dataset="d",
                    concurrency=None,
                    request_rate=[50.0, 2.5],
                    **grid,
                )
            )
        )
        == 12
    )


def test_requests_refused_for_now_are_sent_again_and_none_is_lost(server, tmp_path):
    grid = {**GRID, "prompt_tokens": [8, 16], "output_tokens": [6], "repeats": 3}
    path = profile_endpoint(
        server.url("busy"), tmp_path, model="m", dataset="d", concurrency=3, **grid
    )
    assert len(pd.read_csv(path)) == 6 and not _failures(path)
    # Out of retries: each is a logged failure that names the answer, and a
    # rerun measures them.
    path = profile_endpoint(
        server.url("busy0"),
        tmp_path / "b",
        model="m",
        dataset="d",
        concurrency=3,
        retries=0,
        **grid,
    )
    failures = _failures(path)
    assert len(failures) == 6 and not path.exists()
    assert all(re.search(r"HTTP (429|503): ", f["error"]) for f in failures)
    assert {f["max_concurrency"] for f in failures} == {3}
    path = profile_endpoint(
        server.url("busy0"),
        tmp_path / "b",
        model="m",
        dataset="d",
        concurrency=3,
        retries=0,
        **grid,
    )
    assert len(pd.read_csv(path)) == 6


def test_the_mean_in_flight_count_is_time_weighted():
    from sklat.acquire._load import mean_in_flight

    def one(starts, ends, lo, hi):
        (mean,) = mean_in_flight(starts, ends, [lo], [hi])
        return mean

    starts, ends = np.array([0.0, 2.0, 3.0]), np.array([10.0, 4.0, 8.0])
    # Over [2, 6]: the first all along (4), the second 2..4 (2), the third 3..6 (3).
    assert one(starts, ends, 2.0, 6.0) == pytest.approx((4 + 2 + 3) / 4)
    assert one(starts, ends, 3.0, 3.0) == 3.0
    assert one(starts, ends, 20.0, 30.0) == 0.0
    assert one(starts, ends, -5.0, -1.0) == 0.0
    # An empty window at the instant a request ends (a one-token decode)
    # counts that request: it is in flight over its own window.
    assert one(starts, ends, 4.0, 4.0) == 3.0
    assert one(np.array([5.0]), np.array([7.0]), 7.0, 7.0) == 1.0


@pytest.mark.parametrize("epoch", [0.0, 1.8e9, 4e15])
def test_the_mean_in_flight_count_of_every_window_is_the_sum_of_overlaps(epoch):
    """Every window at once equals the interval-by-interval overlap, also on a
    clock far from zero (Unix seconds; nanoseconds of a long uptime), with
    ties, empty windows and windows outside every interval."""
    from sklat.acquire._load import mean_in_flight

    rng = np.random.default_rng(1)
    scale = 1e9 if epoch > 1e12 else 1.0  # nanoseconds on the large clock
    starts = np.round(rng.uniform(0, 100, 400), 3)
    ends = starts + np.round(rng.uniform(0, 8, 400), 3)
    # Windows: each interval's own, random ones, empty ones at interval ends
    # and at random instants.
    instants = rng.uniform(-10, 120, 20)
    random_lo = rng.uniform(-10, 120, 80)
    lo = np.concatenate([starts, random_lo, ends[:20], instants])
    hi = np.concatenate([ends, random_lo + rng.uniform(0, 30, 80), ends[:20], instants])
    starts, ends, lo, hi = (epoch + scale * t for t in (starts, ends, lo, hi))
    overlap = np.minimum(ends[None], hi[:, None]) - np.maximum(starts[None], lo[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.clip(overlap, 0.0, None).sum(axis=1) / (hi - lo)
    holds = (starts[None] <= lo[:, None]) & (lo[:, None] <= ends[None])
    expected = np.where(hi <= lo, holds.sum(axis=1), expected)
    got = mean_in_flight(starts, ends, lo, hi)
    assert got.shape == lo.shape and got.dtype == np.float64
    # Rounded to 6 decimals, as the results files write it.
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-7)
    assert (got[-40:-20] >= 1).all()  # an interval holds its own end


def test_the_requests_in_flight_and_waiting_at_a_requests_sending():
    from sklat.acquire._load import at_start

    starts, ends = np.array([0.0, 2.0, 3.0]), np.array([10.0, 4.0, 8.0])
    firsts = np.array([1.0, 4.0, 5.0])  # the second never had a first token
    # Sent at 3 (the third): all three in flight; the first had its first
    # token at 1, the second waits to its end, the third is just sent.
    assert at_start(starts, ends, firsts, 3.0) == (3, 2)
    # At 5 the second has ended and the third has its first token.
    assert at_start(starts, ends, firsts, 5.0) == (2, 0)
    # At its own sending a request counts itself, in flight and waiting.
    assert at_start(starts, ends, firsts, 0.0) == (1, 1)
    assert at_start(starts, ends, firsts, 10.0) == (0, 0)
    # Every instant at once, as a brute-force count over random intervals
    # (a first token anywhere, even outside its interval, or none).
    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 10, 200)
    ends = starts + rng.uniform(0, 3, 200)
    firsts = np.where(rng.random(200) < 0.2, ends, starts + rng.uniform(-1, 4, 200))
    sent = np.concatenate([starts, rng.uniform(-1, 14, 50)])
    in_flight, waiting = at_start(starts, ends, firsts, sent)
    holds = (starts[None] <= sent[:, None]) & (sent[:, None] < ends[None])
    np.testing.assert_array_equal(in_flight, holds.sum(axis=1))
    np.testing.assert_array_equal(waiting, (holds & (sent[:, None] < firsts[None])).sum(axis=1))


def test_command_line_sweeps_levels_and_refuses_a_bad_list(server, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["profile", "--endpoint", server.url("ok"), "--model", "m", "--output_dir", str(out)]
    args += ["--prompt_tokens", "8", "--output_tokens", "4", "--repeats", "2", "--warmup", "0"]
    assert main([*args, "--request_rate", "40", "-q"]) == 0
    frame = pd.read_csv(out / "m" / "requests.csv")
    # Only the rate asked for: no closed-loop level unless named.
    assert frame["max_concurrency"].isna().all() and set(frame["request_rate"]) == {40.0}
    assert main([*args, "--concurrency", "1,2", "-q"]) == 0
    frame = pd.read_csv(out / "m" / "requests.csv")
    assert len(frame) == 6 and set(frame["max_concurrency"].dropna()) == {1, 2}
    with pytest.raises(SystemExit):
        main([*args, "--concurrency", "1,two"])
    assert "expected comma-separated integers" in capsys.readouterr().err
    assert main([*args, "--request_rate", "0"]) == 2
    assert "request_rate must be finite numbers of requests per second > 0" in (
        capsys.readouterr().err
    )
