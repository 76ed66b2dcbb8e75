"""Importers of serving-benchmark files (sklat.io.read_benchmark, sklat import)."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from sklat.exceptions import BenchmarkFormatError
from sklat.io import read_benchmark

from ._benchmark_files import (
    REQUESTS,
    timed,
    guidellm_report,
    guidellm_report_v03,
    llamacpp_lines,
    prefill_ms,
    sglang_run,
    step_ms,
    vllm_run,
    write_aiperf,
    write_llmperf,
    write_sglang,
    write_vllm,
)

SEG_T, SEG_MS = "T_decode_segment_tokens", "T_decode_segment_ms"


def _check_convention(frame):
    """What every import guarantees, whatever the tool."""
    for _, row in frame.iterrows():
        # Prompt lengths are unique in REQUESTS: they name the request.
        prompt, completion, chunks, failed = next(r for r in REQUESTS if r[0] == row["text_tokens"])
        assert not failed and completion >= 2
        n = completion - 1
        assert row["output_tokens"] == n
        assert row["T_prefill_total"] == pytest.approx(prefill_ms(prompt))
        truth = sum(step_ms(prompt, p) for p in range(1, n + 1))
        assert row["T_LLM_decode"] == pytest.approx(truth)
        if row[SEG_T] is not None:
            assert sum(row[SEG_T]) == n
            assert sum(row[SEG_MS]) == pytest.approx(row["T_LLM_decode"])


def _accounted(frame):
    s = frame.attrs["import_summary"]
    assert s["read"] == s["imported"] + sum(s["kept_out"].values())
    assert s["imported"] == len(frame) == s["with_segments"] + sum(s["totals_only"].values())
    return s


def test_vllm_appended_runs(tmp_path):
    path = write_vllm(tmp_path / "vllm.json", [vllm_run(), vllm_run(max_concurrency=4)])
    frame = read_benchmark(path)
    s = _accounted(frame)
    _check_convention(frame)
    assert s["read"] == 10 and s["imported"] == 6
    assert s["kept_out"] == {"errored": 2, "one output token: no decode step": 2}
    # One gap per token: per-step segments. Chunked events (len(itls) != N,
    # vLLM records no counts): totals only.
    assert s["with_segments"] == 2
    assert s["totals_only"] == {"token counts per event not recorded": 4}
    first = frame.iloc[0]
    assert first[SEG_T] == [1] * 8
    np.testing.assert_allclose(first[SEG_MS], [step_ms(128, p) for p in range(1, 9)])
    assert list(frame["run"]) == [0, 0, 0, 1, 1, 1]
    assert list(frame["max_concurrency"]) == [1, 1, 1, 4, 4, 4]
    assert set(frame["tool"]) == {"vllm"} and list(frame["text_tokens"][:3]) == [128, 512, 1024]


def test_vllm_failed_request_with_empty_error_text_is_kept_out(tmp_path):
    run = vllm_run()
    run["errors"][0] = ""  # a non-200 reply with no reason: output_lens 0
    run["output_lens"][0] = 0
    frame = read_benchmark(write_vllm(tmp_path / "v.json", [run]))
    assert frame.attrs["import_summary"]["kept_out"]["errored"] == 2


def test_vllm_without_save_detailed_is_refused(tmp_path):
    run = {
        k: v for k, v in vllm_run().items() if k not in ("ttfts", "itls", "output_lens", "errors")
    }
    run["ttfts"] = None
    with pytest.raises(BenchmarkFormatError, match=r"run 0 .*--save-detailed"):
        read_benchmark(write_vllm(tmp_path / "v.json", [run]), format="vllm")


def test_sglang_native_chunks_become_segments_with_their_token_counts(tmp_path):
    path = write_sglang(tmp_path / "sglang.jsonl", [sglang_run()])
    assert "Infinity" in path.read_text()
    frame = read_benchmark(path)
    s = _accounted(frame)
    _check_convention(frame)
    assert s["with_segments"] == 3 and not s["totals_only"]
    chunked = frame[frame["text_tokens"] == 512].iloc[0]
    assert chunked[SEG_T] == [1, 2, 1, 4, 3, 2, 3]
    ends = np.cumsum(chunked[SEG_T])
    truth = [
        sum(step_ms(512, p) for p in range(e - k + 1, e + 1)) for k, e in zip(chunked[SEG_T], ends)
    ]
    np.testing.assert_allclose(chunked[SEG_MS], truth)
    assert frame["request_rate"].iloc[0] == float("inf")


def test_sglang_nested_details_layout_reads_like_the_flat_one(tmp_path):
    flat = read_benchmark(write_sglang(tmp_path / "a.jsonl", [sglang_run()]))
    nested = read_benchmark(write_sglang(tmp_path / "b.jsonl", [sglang_run(nested=True)]))
    cols = ["output_tokens", "T_prefill_total", "T_LLM_decode", SEG_T, SEG_MS]
    pd.testing.assert_frame_equal(flat[cols], nested[cols])


def test_sglang_openai_backend_chunks_are_totals_only(tmp_path):
    frame = read_benchmark(write_sglang(tmp_path / "s.jsonl", [sglang_run(backend="sglang-oai")]))
    s = _accounted(frame)
    _check_convention(frame)
    assert s["with_segments"] == 1 and s["totals_only"] == {
        "token counts per event not recorded": 2
    }


@pytest.mark.parametrize("unit", ["ms", "ns", "sec", "us"])
def test_aiperf_honours_each_metric_unit(tmp_path, unit):
    frame = read_benchmark(write_aiperf(tmp_path / "profile_export.jsonl", unit=unit))
    s = _accounted(frame)
    _check_convention(frame)
    assert s["kept_out"] == {"errored": 1, "one output token: no decode step": 1}
    assert s["with_segments"] == 1 and s["totals_only"] == {
        "token counts per event not recorded": 2
    }


def test_aiperf_unknown_unit_is_refused(tmp_path):
    path = write_aiperf(tmp_path / "p.jsonl")
    path.write_text(path.read_text().replace('"unit":"ms"', '"unit":"fortnights"', 1))
    with pytest.raises(BenchmarkFormatError, match=r"request 0.*unknown time unit 'fortnights'"):
        read_benchmark(path)


def test_llmperf_totals_only_and_stray_entries_skipped(tmp_path):
    frame = read_benchmark(write_llmperf(tmp_path / "m_individual_responses.json"))
    s = _accounted(frame)
    _check_convention(frame)
    assert s["totals_only"] == {"the tool records per-request totals only": 3}
    assert s["notes"] == [
        "3 list entries that are not request objects skipped",
        "concurrency not reconstructed (the tool records no request times)",
    ]
    assert frame[SEG_T].isna().all()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_guidellm_report_json_and_yaml(tmp_path, suffix):
    import yaml

    report = guidellm_report(sampled_total=40)
    path = tmp_path / f"benchmarks{suffix}"
    path.write_text(json.dumps(report) if suffix == ".json" else yaml.dump(report))
    frame = read_benchmark(path)
    s = _accounted(frame)
    _check_convention(frame)
    assert s["imported"] == 3 and s["kept_out"]["errored"] == 1
    assert s["notes"] == [
        "benchmark 0 holds a sample: 4 of 40 successful requests",
        "concurrency not reconstructed (benchmark 0 holds a sample of its requests)",
    ]
    assert "concurrency" not in frame.columns


def test_llamacpp_final_responses_and_per_token_timings(tmp_path):
    final = tmp_path / "final.jsonl"
    final.write_text(llamacpp_lines())
    frame = read_benchmark(final)
    s = _accounted(frame)
    _check_convention(frame)
    assert s["with_segments"] == 0 and len(frame) == 3
    streamed = tmp_path / "stream.jsonl"
    streamed.write_text(llamacpp_lines(per_token=True))
    frame = read_benchmark(streamed)
    s = _accounted(frame)
    _check_convention(frame)
    assert s["with_segments"] == 3
    assert frame[frame["text_tokens"] == 512].iloc[0][SEG_T] == [1, 2, 1, 4, 3, 2, 3]


def test_llamacpp_truncated_stream_is_refused(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join(llamacpp_lines(per_token=True).splitlines()[:3]) + "\n")
    with pytest.raises(BenchmarkFormatError, match="ends with 3 partial response"):
        read_benchmark(path)


def test_simultaneous_events_are_joined_not_dropped(tmp_path):
    run = vllm_run(requests=[(128, 5, None, False)])
    run["itls"][0] = [0.01, 0.0, 0.012, 0.013]
    frame = read_benchmark(write_vllm(tmp_path / "v.json", [run]))
    row = frame.iloc[0]
    assert row[SEG_T] == [2, 1, 1] and row[SEG_MS] == pytest.approx([10.0, 12.0, 13.0])
    assert row["T_LLM_decode"] == pytest.approx(35.0)


def test_first_event_with_several_tokens_is_kept_out(tmp_path):
    run = sglang_run(requests=[(128, 6, None, False)])
    run["itls"][0] = run["itls"][0][1:]  # the first chunk carried 2 tokens
    frame = read_benchmark(write_sglang(tmp_path / "s.jsonl", [run]))
    assert frame.attrs["import_summary"]["kept_out"] == {
        "first event carried several tokens: its time mixes prefill and decode": 1
    }


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r: r["ttfts"].pop(), r"unequal length: \{'ttfts': 4"),
        (lambda r: r["itls"][0].__setitem__(2, -0.001), r"key 'itls', request 0, entry 2: .*>= 0"),
        (lambda r: r["ttfts"].__setitem__(1, float("nan")), r"key 'ttfts', request 1: .*finite"),
        (lambda r: r["itls"][0].__setitem__(0, float("inf")), r"key 'itls', request 0, entry 0"),
        (
            lambda r: r["output_lens"].__setitem__(0, 2**21),
            r"key 'output_lens', request 0: .*up to",
        ),
        (lambda r: r["output_lens"].__setitem__(0, 2.5), r"key 'output_lens', request 0"),
        (lambda r: r["itls"].__setitem__(0, "fast"), r"key 'itls', request 0: expected a list"),
    ],
)
def test_malformed_values_name_file_key_and_request(tmp_path, edit, match):
    run = vllm_run()
    edit(run)
    path = write_vllm(tmp_path / "bad.json", [run])
    with pytest.raises(BenchmarkFormatError, match=match) as info:
        read_benchmark(path)
    assert "bad.json" in str(info.value)


def test_truncated_json_names_the_line(tmp_path):
    path = write_vllm(tmp_path / "cut.json", [vllm_run(), vllm_run()])
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    with pytest.raises(BenchmarkFormatError, match=r"cut.json, line 2: not valid JSON.*truncated"):
        read_benchmark(path)


def test_unknown_and_ambiguous_formats_list_what_was_considered(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(
        BenchmarkFormatError,
        match=r"formats considered: vllm, sglang, guidellm, aiperf, llmperf, llama.cpp",
    ):
        read_benchmark(path)
    both = tmp_path / "both.jsonl"
    both.write_text(
        json.dumps({"timings": {}, "metadata": {"request_start_ns": 1}, "metrics": {}}) + "\n"
    )
    with pytest.raises(BenchmarkFormatError, match=r"ambiguous: .*aiperf and llama.cpp"):
        read_benchmark(both)
    with pytest.raises(BenchmarkFormatError, match=r"not a guidellm benchmark file"):
        read_benchmark(write_vllm(tmp_path / "v.json", [vllm_run()]), format="guidellm")
    with pytest.raises(ValueError, match=r"format must be 'auto' or one of"):
        read_benchmark(path, format="tgi")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(BenchmarkFormatError, match="empty.jsonl: the file is empty"):
        read_benchmark(path)


def test_vllm_older_benchmark_serving_layout(tmp_path):
    # benchmarks/benchmark_serving.py: no endpoint_type or label, backend "vllm",
    # a "request_goodput:" key, one object written with json.dump.
    run = vllm_run(backend="vllm")
    for key in ("endpoint_type", "label", "failed"):
        run.pop(key)
    run["request_goodput:"] = None
    frame = read_benchmark(write_vllm(tmp_path / "old.json", [run]))
    _check_convention(frame)
    assert frame.attrs["import_summary"]["tool"] == "vllm" and set(frame["backend"]) == {"vllm"}


# ---------------------------------------------------------------- hostile files
@pytest.mark.parametrize(
    "key, value, match",
    [
        (
            "itls",
            {"0": [0.01, 0.01]},
            r"'itls' must be a list with one entry per request, got dict",
        ),
        ("ttfts", None, r"'ttfts' must be a list with one entry per request, got NoneType"),
        ("output_lens", "9", r"'output_lens' must be a list"),
    ],
)
def test_vllm_arrays_of_the_wrong_type_name_the_key(tmp_path, key, value, match):
    run = vllm_run()
    run[key] = value
    with pytest.raises(BenchmarkFormatError, match=r"bad.json: run 0 .*" + match):
        read_benchmark(write_vllm(tmp_path / "bad.json", [run]))


def test_a_numeric_string_among_gaps_is_refused_not_read_as_a_number(tmp_path):
    run = vllm_run()
    run["itls"][0][1] = "0.5"
    with pytest.raises(BenchmarkFormatError, match=r"key 'itls', request 0, entry 1: .*number"):
        read_benchmark(write_vllm(tmp_path / "s.json", [run]))


def test_more_events_than_tokens_is_kept_out_and_counted(tmp_path):
    run = vllm_run(requests=[(128, 10, None, False), (64, 5, None, False)])
    run["itls"][0] = [0.01] * 8000  # 8,000 gaps for 9 tokens after the first
    frame = read_benchmark(write_vllm(tmp_path / "v.json", [run]))
    summary = _accounted(frame)
    assert summary["kept_out"] == {
        "more token-carrying events than output tokens: the counts disagree": 1
    }
    assert frame["text_tokens"].tolist() == [64]


# 1e308 s overflows to inf in ms: it was refused as "expected a finite number".
@pytest.mark.parametrize("key, seconds", [("ttfts", 1e300), ("ttfts", 1e6), ("ttfts", 1e308)])
def test_times_longer_than_a_day_are_refused(tmp_path, key, seconds):
    run = vllm_run()
    run[key][0] = seconds
    with pytest.raises(
        BenchmarkFormatError,
        match=rf"key 'ttfts', request 0: {re.escape(repr(seconds))} \(.* ms\) is more than a day",
    ):
        read_benchmark(write_vllm(tmp_path / "v.json", [run]))


def test_a_gap_longer_than_a_day_is_refused(tmp_path):
    run = vllm_run()
    run["itls"][0][0] = 1e6
    with pytest.raises(BenchmarkFormatError, match=r"key 'itls', request 0, entry 0: .*a day"):
        read_benchmark(write_vllm(tmp_path / "v.json", [run]))


def test_a_duplicate_json_key_is_refused(tmp_path):
    path = tmp_path / "dup.json"
    text = json.dumps(vllm_run())
    path.write_text(text[:-1] + ', "ttfts": [1.0, 1.0, 1.0, 1.0]}')
    with pytest.raises(
        BenchmarkFormatError, match=r"dup.json: .*line 1 holds the key 'ttfts' twice"
    ):
        read_benchmark(path)


def test_a_byte_order_mark_is_read_past(tmp_path):
    plain = write_vllm(tmp_path / "plain.json", [vllm_run()])
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    pd.testing.assert_frame_equal(
        read_benchmark(bom).drop(columns="source_file"),
        read_benchmark(plain).drop(columns="source_file"),
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda b: b.__setitem__("metrics", [1]), r"benchmarks\[0\].metrics: expected an object"),
        (
            lambda b: b["requests"].__setitem__("errored", 5),
            r"benchmarks\[0\].requests.errored: expected a list of requests, got int",
        ),
        (
            lambda b: b["requests"]["successful"][0].__setitem__("request_latency", 0.001),
            r"key 'request_latency', request \d+: 1 ms is shorter than the time to first token",
        ),
    ],
)
def test_guidellm_wrong_types_and_impossible_latencies(tmp_path, edit, match):
    report = guidellm_report()
    edit(report["benchmarks"][0])
    path = tmp_path / "g.json"
    path.write_text(json.dumps(report))
    with pytest.raises(BenchmarkFormatError, match=match):
        read_benchmark(path)


def test_aiperf_metrics_of_the_wrong_type_and_gaps_past_the_request(tmp_path):
    path = write_aiperf(tmp_path / "a.jsonl")
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record["metrics"] = [1]
    bad = tmp_path / "types.jsonl"
    bad.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"key 'metrics', request 0: expected an object"):
        read_benchmark(bad)
    record = json.loads(lines[0])
    record["metrics"]["request_latency"]["value"] = (
        record["metrics"]["time_to_first_token"]["value"] + 1.0
    )
    late = tmp_path / "late.jsonl"
    late.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    with pytest.raises(
        BenchmarkFormatError, match=r"the gaps add up to .* more than request_latency"
    ):
        read_benchmark(late)


# ------------------------------------------------------------ load from times
def _in_flight_mean(intervals, first, last):
    """The mean count over [first, last] by brute force on a fine grid."""
    grid = np.linspace(first, last, 20001)[:-1] + (last - first) / 40000
    return np.mean([sum(s <= t < e for s, e in intervals) for t in grid])


def test_vllm_start_times_give_each_requests_measured_concurrency(tmp_path):
    run = timed(vllm_run(), [0.0, 0.01, 0.02, 0.5, 0.03])
    frame = read_benchmark(write_vllm(tmp_path / "v.json", [run]))
    s = _accounted(frame)
    assert "concurrency reconstructed for 3 requests from their times in flight" in s["notes"]
    assert "1 failed requests' times in flight not recorded (not counted)" in s["notes"]
    intervals = [
        (start, start + latency)
        for start, latency in zip(run["start_times"], run["latencies"])
        if latency > 0
    ]
    for _, row in frame.iterrows():
        i = run["input_lens"].index(row["text_tokens"])
        first = run["start_times"][i] + run["ttfts"][i]
        last = run["start_times"][i] + run["latencies"][i]
        assert row["concurrency"] == pytest.approx(
            _in_flight_mean(intervals, first, last), abs=2e-3
        )
        assert row["concurrency"] >= 1.0
        # At its start: the requests in flight, and those of them before
        # their first token (the failed one, latency 0, was never in flight).
        start = run["start_times"][i]
        held = [j for j, lat in enumerate(run["latencies"]) if lat > 0]
        ends = {j: run["start_times"][j] + run["latencies"][j] for j in held}
        in_flight = [j for j in held if run["start_times"][j] <= start < ends[j]]
        waiting = [j for j in in_flight if start < run["start_times"][j] + run["ttfts"][j]]
        assert row["in_flight_at_start"] == len(in_flight) >= 1
        assert row["waiting_at_start"] == len(waiting) >= 1
    # Requests sent one after another, none overlapping: alone.
    apart = timed(vllm_run(), [0.0, 10.0, 20.0, 30.0, 40.0])
    frame = read_benchmark(write_vllm(tmp_path / "apart.json", [apart]))
    np.testing.assert_allclose(frame["concurrency"], 1.0)


@pytest.mark.parametrize(
    "edit, message",
    [
        # vLLM's latency is the time of the last event: at least ttft + sum(itls).
        (
            lambda run: run["latencies"].__setitem__(0, 0.9 * run["latencies"][0]),
            r"key 'latencies', request 0: .* leaves 7\d\.\d+ ms after the first token, less "
            r"than its itls need \(82\.12 ms\): the request would end before its last token",
        ),
        # A start time so large that its ttft and latency land on one float.
        (
            lambda run: run["start_times"].__setitem__(0, 1e300),
            r"key 'latencies', request 0: .* \(from start_times 1e\+300\) leaves 0 ms",
        ),
        # The value named as the file records it (seconds), not in ms.
        (
            lambda run: run["latencies"].__setitem__(0, -1.0),
            r"key 'latencies', request 0: expected a finite number >= 0, got -1.0\.",
        ),
    ],
)
def test_vllm_latencies_that_end_before_the_last_token_are_refused(tmp_path, edit, message):
    run = timed(vllm_run(), [0.0, 0.01, 0.02, 0.5, 0.03])
    edit(run)
    with pytest.raises(BenchmarkFormatError, match=message):
        read_benchmark(write_vllm(tmp_path / "v.json", [run]))
    # A latency past ttft + sum(itls) is what the chat path writes when the
    # usage event comes after the last text: kept.
    run = timed(vllm_run(), [0.0, 0.01, 0.02, 0.5, 0.03])
    run["latencies"][1] += 0.25
    assert len(read_benchmark(write_vllm(tmp_path / "late.json", [run]))) == 3


def test_a_guidellm_request_that_ends_before_its_last_token_is_refused(tmp_path):
    report = guidellm_report()
    request = report["benchmarks"][0]["requests"]["successful"][0]
    request["request_end_time"] -= 0.005  # 5 ms before its last token
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(report))
    with pytest.raises(
        BenchmarkFormatError,
        match=r"key 'request_end_time', request \d+: 1000\.08852 s is before the request's "
        r"last token \(1000\.0 s \+ 11\.4 ms to the first \+ 82\.12 ms of decode\)",
    ):
        read_benchmark(path)
    # Epoch times (time.time(), as GuideLLM records them) keep microsecond
    # slack; a shift of every time leaves the concurrency as it was.
    report = guidellm_report()
    path.write_text(json.dumps(report))
    before = read_benchmark(path)["concurrency"].to_numpy()
    for status in ("successful", "errored"):
        for request in report["benchmarks"][0]["requests"][status]:
            request["request_start_time"] += 1.76e9
            request["request_end_time"] += 1.76e9
    path.write_text(json.dumps(report))
    np.testing.assert_allclose(read_benchmark(path)["concurrency"], before, atol=1e-5)
    request = report["benchmarks"][0]["requests"]["successful"][0]
    request["request_end_time"] -= 0.001
    path.write_text(json.dumps(report))
    with pytest.raises(BenchmarkFormatError, match="is before the request's last token"):
        read_benchmark(path)


def test_files_without_request_times_keep_the_setting_and_say_so(tmp_path):
    frame = read_benchmark(write_vllm(tmp_path / "v.json", [vllm_run()]))
    assert "concurrency" not in frame.columns and set(frame["max_concurrency"]) == {1}
    assert frame.attrs["import_summary"]["notes"] == [
        "concurrency not reconstructed (the file records no start_times and latencies)"
    ]


def test_guidellm_and_aiperf_request_times_give_concurrency(tmp_path):
    report = guidellm_report()
    path = tmp_path / "g.json"
    path.write_text(json.dumps(report))
    frame = read_benchmark(path)
    requests = report["benchmarks"][0]["requests"]
    intervals = [
        (r["request_start_time"], r["request_end_time"])
        for r in requests["successful"] + requests["errored"]
    ]
    for _, row in frame.iterrows():
        r = next(q for q in requests["successful"] if q["prompt_tokens"] == row["text_tokens"])
        first = r["request_start_time"] + r["time_to_first_token_ms"] / 1000
        last = first + r["inter_token_latency_ms"] * (r["output_tokens"] - 1) / 1000
        assert row["concurrency"] == pytest.approx(
            _in_flight_mean(intervals, first, last), abs=2e-3
        )
        # At its start: the requests in flight and those before their first
        # token (an errored one has none: it waits to its end).
        start = r["request_start_time"]
        firsts = {
            (q["request_start_time"], q["request_end_time"]): q["request_start_time"]
            + q["time_to_first_token_ms"] / 1000
            for q in requests["successful"]
        }
        held = [(s, e) for s, e in intervals if s <= start < e]
        assert row["in_flight_at_start"] == len(held)
        assert row["waiting_at_start"] == sum(start < firsts.get((s, e), e) for s, e in held)
    aiperf = read_benchmark(write_aiperf(tmp_path / "a.jsonl"))
    # The fixture's records are a second apart: each alone in flight.
    np.testing.assert_allclose(aiperf["concurrency"], 1.0)
    assert (aiperf["in_flight_at_start"] == 1).all() and (aiperf["waiting_at_start"] == 1).all()
    assert any("concurrency reconstructed" in n for n in aiperf.attrs["import_summary"]["notes"])


def test_an_aiperf_record_that_ends_before_its_last_token_is_refused(tmp_path):
    path = write_aiperf(tmp_path / "a.jsonl")
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["metadata"]["request_end_ns"] = record["metadata"]["request_start_ns"] + 1000
    path.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"request 1: the request ends before its last"):
        read_benchmark(path)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_guidellm_0_3_reports_give_concurrency_from_their_start_and_end(tmp_path, suffix):
    # GuideLLM 0.2 and 0.3 name a request's times start_time and end_time, and
    # count the requests on the benchmark rather than under metrics.
    import yaml

    report = guidellm_report_v03()
    path = tmp_path / f"benchmarks{suffix}"
    path.write_text(json.dumps(report, indent=4) if suffix == ".json" else yaml.dump(report))
    frame = read_benchmark(path)
    s = _accounted(frame)
    _check_convention(frame)
    assert s["imported"] == 3 and s["kept_out"]["errored"] == 1
    assert s["notes"] == ["concurrency reconstructed for 3 requests from their times in flight"]
    requests = report["benchmarks"][0]["requests"]
    intervals = [
        (r["start_time"], r["end_time"]) for r in requests["successful"] + requests["errored"]
    ]
    for _, row in frame.iterrows():
        r = next(q for q in requests["successful"] if q["prompt_tokens"] == row["text_tokens"])
        assert row["T_prefill_total"] == pytest.approx(r["time_to_first_token_ms"])
        assert row["T_LLM_decode"] == pytest.approx(
            1000 * (r["last_token_time"] - r["first_token_time"])
        )
        expected = _in_flight_mean(intervals, r["first_token_time"], r["last_token_time"])
        assert row["concurrency"] == pytest.approx(expected, abs=2e-3)
        held = [(a, b) for a, b in intervals if a <= r["start_time"] < b]
        assert row["in_flight_at_start"] == len(held)


def test_a_sampled_guidellm_0_3_report_is_said_to_be_one(tmp_path):
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(guidellm_report_v03(sample=2)))
    frame = read_benchmark(path)
    assert len(frame) == 2 and "concurrency" not in frame.columns
    assert frame.attrs["import_summary"]["notes"] == [
        "benchmark 0 holds a sample: 2 of 4 successful requests",
        "concurrency not reconstructed (benchmark 0 holds a sample of its requests)",
    ]


def test_a_guidellm_0_3_request_that_ends_before_its_last_token_is_refused(tmp_path):
    report = guidellm_report_v03()
    report["benchmarks"][0]["requests"]["successful"][0]["end_time"] -= 0.01
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(report))
    with pytest.raises(
        BenchmarkFormatError,
        match=r"key 'end_time', request \d+: .* s is before the request's last",
    ):
        read_benchmark(path)


def test_a_request_whose_tokens_all_came_with_the_first_is_kept_out(tmp_path):
    # A reply sent whole: the last token's time is the first's (GuideLLM's
    # inter-token latency 0), or every gap is 0 (vLLM). The import used to
    # stop at such a request.
    first_event = "first event carried several tokens: its time mixes prefill and decode"
    report = guidellm_report()
    report["benchmarks"][0]["requests"]["successful"][0]["inter_token_latency_ms"] = 0.0
    path = tmp_path / "g.json"
    path.write_text(json.dumps(report))
    frame = read_benchmark(path)
    s = _accounted(frame)
    assert s["imported"] == 2 and s["kept_out"][first_event] == 1
    run = vllm_run()
    run["itls"][0] = [0.0] * len(run["itls"][0])
    frame = read_benchmark(write_vllm(tmp_path / "v.json", [run]))
    s = _accounted(frame)
    assert s["imported"] == 2 and s["kept_out"][first_event] == 1
    # A negative time is still malformed.
    report["benchmarks"][0]["requests"]["successful"][0]["inter_token_latency_ms"] = -1.0
    path.write_text(json.dumps(report))
    with pytest.raises(BenchmarkFormatError, match="inter_token_latency_ms"):
        read_benchmark(path)
