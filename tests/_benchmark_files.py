"""Benchmark files written the way each tool writes them.

Each writer below follows the tool's own serialisation (cited): the keys, the
units, the JSON layout (one object, appended objects, JSON Lines, indent) and
the quirks (failed requests, bare ``Infinity``, LLMPerf's stray keys). The
timings come from a known per-position curve so that tests can check what
the importer recovers.
"""

import json

import numpy as np

# One request: prompt tokens, output tokens (the first included), tokens per
# event after the first (None: one per token), failed.
REQUESTS = [
    (128, 9, None, False),
    (512, 17, [1, 2, 1, 4, 3, 2, 3], False),
    (64, 5, None, True),
    (256, 1, None, False),
    (1024, 33, [4] * 8, False),
]


def step_ms(prompt, position):
    """The true per-position decode latency (ms)."""
    return 10.0 + 0.002 * (prompt + position)


def prefill_ms(prompt):
    return 5.0 + 0.05 * prompt


def _events(prompt, completion, chunks):
    """Gaps (ms) after the first event, and tokens per gap."""
    n = completion - 1
    tokens = [1] * n if chunks is None else list(chunks)
    assert sum(tokens) == n
    ends = np.cumsum(tokens)
    gaps = [sum(step_ms(prompt, p) for p in range(e - k + 1, e + 1)) for k, e in zip(tokens, ends)]
    return gaps, tokens


def vllm_run(requests=REQUESTS, **extra):
    """One ``vllm bench serve --save-detailed`` result (``serve.py``:
    ``result_json = {**result_json, **benchmark_result}``; times in s; failed
    requests: ttft 0.0, itl [], output_lens 0, an error text)."""
    out = {
        "date": "20261130-101500",
        "endpoint_type": "openai",
        "backend": "openai",
        "label": None,
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct",
        "num_prompts": len(requests),
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": 1,
        "duration": 3.2,
        "completed": sum(not r[3] for r in requests),
        "failed": sum(r[3] for r in requests),
        "input_lens": [],
        "output_lens": [],
        "ttfts": [],
        "itls": [],
        "generated_texts": [],
        "errors": [],
    }
    for request in requests:
        _append(out, request, _per_event, "TimeoutError\n")
    out.update(extra)
    return out


def timed(run, start_times):
    """``run`` as recent vLLM writes it: ``latencies`` (s from sending to the
    last token; 0.0 for a request that failed) and ``start_times``
    (``time.perf_counter()`` when sent)."""
    run["start_times"] = list(start_times)
    run["latencies"] = [
        0.0 if error else ttft + sum(itl)
        for ttft, itl, error in zip(run["ttfts"], run["itls"], run["errors"])
    ]
    return run


def write_vllm(path, runs):
    """``json.dump`` each run; ``--append-result`` writes "\\n" between runs."""
    with open(path, "w", encoding="utf-8") as f:
        for k, run in enumerate(runs):
            if k:
                f.write("\n")
            json.dump(run, f)
    return path


def sglang_run(requests=REQUESTS, backend="sglang", nested=False):
    """One ``bench_serving --output-details`` line (``bench_serving.py``:
    ``result | result_details``; the native backend writes ``[gap / k] * k``
    per chunk; ``request_rate`` inf is written as a bare Infinity)."""
    result = {
        "backend": backend,
        "dataset_name": "random",
        "request_rate": float("inf"),
        "max_concurrency": 4,
        "sharegpt_output_len": None,
        "random_input_len": 512,
        "random_output_len": 16,
        "random_range_ratio": 0.0,
        "duration": 2.0,
        "completed": sum(not r[3] for r in requests),
        "total_output_tokens_retokenized": 60,
        "accept_length": None,
    }
    names = ("input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors")
    details = {k: [] for k in names}
    for request in requests:
        _append(details, request, _spread if backend == "sglang" else _per_event, "ClientError\n")
    if nested:
        return {**result, "details": details}
    return result | details


def _spread(gaps, tokens):
    """SGLang's native backend: each chunk's gap spread over its tokens (s)."""
    return [g / 1000 / k for g, k in zip(gaps, tokens) for _ in range(k)]


def _per_event(gaps, tokens):
    """One gap per event (s)."""
    return [g / 1000 for g in gaps]


def _append(arrays, request, itls, error):
    """One request's entries of the per-request arrays (times in s); a failed
    request as both tools record it: ttft 0.0, no gaps, output_lens 0."""
    prompt, completion, chunks, failed = request
    arrays["input_lens"].append(prompt)
    if failed:
        arrays["output_lens"].append(0)
        arrays["ttfts"].append(0.0)
        arrays["itls"].append([])
        arrays["generated_texts"].append("")
        arrays["errors"].append("Traceback (most recent call last):\n  ...\n" + error)
        return
    gaps, tokens = _events(prompt, completion, chunks)
    arrays["output_lens"].append(completion)
    arrays["ttfts"].append(prefill_ms(prompt) / 1000)
    arrays["itls"].append(itls(gaps, tokens))
    arrays["generated_texts"].append("x" * completion)
    arrays["errors"].append("")


def write_sglang(path, runs):
    with open(path, "a", encoding="utf-8") as f:
        for run in runs:
            f.write(json.dumps(run) + "\n")
    return path


def write_aiperf(path, requests=REQUESTS, unit="ms"):
    """``profile_export.jsonl`` (``record_export_results_processor.py``:
    ``MetricRecordInfo.model_dump_json()`` lines joined by "\\n", one trailing
    "\\n"); metric values in display units with their ``unit``."""
    scale = {"ms": 1.0, "ns": 1e6, "sec": 1e-3, "us": 1e3}[unit]
    lines = []
    for k, (prompt, completion, chunks, failed) in enumerate(requests):
        metadata = {
            "session_num": k,
            "x_request_id": f"req-{k}",
            "x_correlation_id": f"corr-{k}",
            "conversation_id": f"conv-{k}",
            "turn_index": 0,
            "request_start_ns": 1759813207532900363 + k * 10**9,
            "request_ack_ns": None,
            # The end of the last response (or of the error): after the
            # start by the request's latency, plus the closing read.
            "request_end_ns": 1759813207532900363
            + k * 10**9
            + 250_000
            + (
                0
                if failed
                else int(1e6 * (prefill_ms(prompt) + sum(_events(prompt, completion, chunks)[0])))
            ),
            "worker_id": "worker_1",
            "record_processor_id": "record_processor_1",
            "benchmark_phase": "profiling",
            "was_cancelled": False,
            "cancellation_time_ns": None,
        }
        if failed:
            record = {
                "metadata": metadata,
                "metrics": {"error_isl": {"value": prompt, "unit": "tokens"}},
                "error": {"code": 500, "type": "ServerError", "message": "boom"},
            }
        else:
            gaps, _ = _events(prompt, completion, chunks)
            ttft = prefill_ms(prompt)
            metrics = {
                "input_sequence_length": {"value": prompt, "unit": "tokens"},
                "time_to_first_token": {"value": ttft * scale, "unit": unit},
                "request_latency": {"value": (ttft + sum(gaps)) * scale, "unit": unit},
                "output_token_count": {"value": completion, "unit": "tokens"},
                "output_sequence_length": {"value": completion, "unit": "tokens"},
            }
            if gaps:
                metrics["inter_chunk_latency"] = {"value": [g * scale for g in gaps], "unit": unit}
            record = {"metadata": metadata, "metrics": metrics, "error": None}
        lines.append(json.dumps(record, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_llmperf(path, requests=REQUESTS, stray_keys=True):
    """``*_individual_responses.json`` (``token_benchmark_ray.py``:
    ``json.dump(individual_responses, f, indent=4)``; keys of
    ``common_metrics.py``; its last collection pass ``extend``s the list with
    a metrics dict, i.e. with the dict's keys)."""
    out = []
    for prompt, completion, chunks, failed in requests:
        gaps, _ = _events(prompt, completion, chunks) if not failed else ([], [])
        ttft = prefill_ms(prompt) / 1000
        e2e = ttft + sum(gaps) / 1000
        out.append(
            {
                "error_code": 500 if failed else None,
                "error_msg": "Internal Server Error" if failed else "",
                "inter_token_latency_s": e2e / max(completion, 1),
                "ttft_s": 0 if failed else ttft,
                "end_to_end_latency_s": 0 if failed else e2e,
                "request_output_throughput_token_per_s": completion / e2e,
                "number_total_tokens": prompt + (0 if failed else completion),
                "number_output_tokens": 0 if failed else completion,
                "number_input_tokens": prompt,
            }
        )
    if stray_keys:
        out.extend(["error_code", "error_msg", "ttft_s"])
    with open(path, "w") as f:
        json.dump(out, f, indent=4)
    return path


def guidellm_report(requests=REQUESTS, sampled_total=None):
    """A GuideLLM report's ``model_dump(mode="json")`` (``report.py``):
    requests by status with their computed fields."""
    successful, errored = [], []
    for k, (prompt, completion, chunks, failed) in enumerate(requests):
        stats = {
            "type_": "generative_request_stats",
            "request_id": f"r{k}",
            "prompt_tokens": prompt,
            "output_tokens": 0 if failed else completion,
        }
        if failed:
            start = 1000.0 + 0.05 * k
            errored.append({**stats, "request_start_time": start, "request_end_time": start + 0.01})
            continue
        gaps, _ = _events(prompt, completion, chunks)
        ttft = prefill_ms(prompt)
        # Computed fields of request_stats.py: start and end in seconds (the
        # requests sent 50 ms apart), the latency their difference.
        start = 1000.0 + 0.05 * k
        stats.update(
            {
                "request_start_time": start,
                "request_end_time": start + (ttft + sum(gaps)) / 1000,
                "time_to_first_token_ms": ttft,
                "inter_token_latency_ms": sum(gaps) / (completion - 1) if completion > 1 else None,
                "request_latency": (ttft + sum(gaps)) / 1000,
            }
        )
        successful.append(stats)
    totals = {
        "successful": sampled_total or len(successful),
        "incomplete": 0,
        "errored": len(errored),
        "total": (sampled_total or len(successful)) + len(errored),
    }
    return {
        "metadata": {"version": 2, "guidellm_version": "0.4.0"},
        "config": {},
        "benchmarks": [
            {
                "type_": "generative_benchmark",
                "metrics": {"request_totals": totals},
                "requests": {"successful": successful, "incomplete": [], "errored": errored},
            }
        ],
    }


def llamacpp_lines(requests=REQUESTS, per_token=False):
    """Server responses (``result_timings::to_json``): one final object per
    request; with ``timings_per_token`` the partial objects before it carry
    the running ``predicted_n`` / ``predicted_ms``."""
    lines = []
    for prompt, completion, chunks, failed in requests:
        if failed:
            continue
        gaps, tokens = _events(prompt, completion, chunks)
        if per_token:
            running_n, running_ms = 1, 0.0
            lines.append({"content": "a", "stop": False, "timings": _timings(prompt, 1, 0.0)})
            for k, g in zip(tokens, gaps):
                running_n += k
                running_ms += g
                lines.append(
                    {
                        "content": "b",
                        "stop": False,
                        "timings": _timings(prompt, running_n, running_ms),
                    }
                )
        lines.append(
            {
                "content": "done",
                "model": "tiny.gguf",
                "stop": True,
                "tokens_predicted": completion,
                "timings": _timings(prompt, completion, sum(gaps)),
            }
        )
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def _timings(prompt, n, ms):
    return {
        "cache_n": 0,
        "prompt_n": prompt,
        "prompt_ms": prefill_ms(prompt),
        "prompt_per_token_ms": prefill_ms(prompt) / prompt,
        "prompt_per_second": 1e3 * prompt / prefill_ms(prompt),
        "predicted_n": n,
        "predicted_ms": ms,
        "predicted_per_token_ms": ms / n,
        "predicted_per_second": 1e3 * n / ms if ms else 0.0,
    }


def guidellm_report_v03(requests=REQUESTS, sample=None):
    """A GuideLLM 0.2 / 0.3 report (``benchmark/output.py``,
    ``GenerativeBenchmarksReport.save_json``: ``model_dump()`` then
    ``json.dump``): ``{"benchmarks": [...]}``, each benchmark's
    ``request_totals`` and ``request_samples`` (``set_sample_size``, the
    ``--output-sampling`` option) beside its requests, each request
    (``benchmark/benchmark.py``, ``GenerativeTextResponseStats``) with its
    ``start_time``, ``end_time``, ``first_token_time`` and
    ``last_token_time`` (``time.time()``, s; ``backend/openai.py``: the end is
    the stream's last line) and the computed fields. ``sample``: keep that
    many successful requests, as ``set_sample_size`` does."""
    successful, errored = [], []
    for k, (prompt, completion, chunks, failed) in enumerate(requests):
        # Sent 50 ms apart; a clock at 1000 s keeps the computed fields exact
        # enough for the convention's checks (an epoch's float spacing is
        # 0.24 us).
        start = 1000.0 + 0.05 * k
        stats = {
            "type_": "generative_text_error" if failed else "generative_text_response",
            "request_id": f"r{k}",
            "request_type": "text_completions",
            "scheduler_info": {"requested": True, "completed": True, "errored": failed},
            "prompt": "w0 " * prompt,
            "prompt_tokens": prompt,
        }
        if failed:
            errored.append(
                {
                    **stats,
                    "output": None,
                    "output_tokens": 0,
                    "start_time": start,
                    "end_time": start + 0.01,
                    "first_token_time": None,
                    "last_token_time": None,
                    "request_latency": 0.01,
                    "time_to_first_token_ms": None,
                    "time_per_output_token_ms": None,
                    "inter_token_latency_ms": None,
                    "tokens_per_second": prompt / 0.01,
                    "output_tokens_per_second": None,
                    "error": "TimeoutError",
                }
            )
            continue
        gaps, _ = _events(prompt, completion, chunks)
        first = start + prefill_ms(prompt) / 1000
        last = first + sum(gaps) / 1000
        end = last + 0.0005  # the [DONE] line after the last text
        successful.append(
            {
                **stats,
                "output": "w1 " * completion,
                "output_tokens": completion,
                "start_time": start,
                "end_time": end,
                "first_token_time": first,
                "last_token_time": last,
                "request_latency": end - start,
                "time_to_first_token_ms": 1000 * (first - start),
                "time_per_output_token_ms": 1000 * (last - first) / completion,
                "inter_token_latency_ms": 1000 * (last - first) / (completion - 1)
                if completion > 1
                else 0.0,
                "tokens_per_second": (prompt + completion) / (end - start),
                "output_tokens_per_second": completion / (end - start),
            }
        )
    totals = {
        "successful": len(successful),
        "incomplete": 0,
        "errored": len(errored),
        "total": len(successful) + len(errored),
    }
    samples = None
    if sample is not None:
        successful = successful[:sample]
        samples = {"successful": len(successful), "incomplete": 0, "errored": len(errored)}
        samples["total"] = None
    starts = [r["start_time"] for r in successful + errored]
    ends = [r["end_time"] for r in successful + errored]
    return {
        "benchmarks": [
            {
                "type_": "generative_benchmark",
                "id_": "b0",
                "run_id": "run0",
                "args": {"strategy_index": 0, "max_number": None, "max_duration": 30.0},
                "run_stats": {"start_time": min(starts), "end_time": max(ends)},
                "worker": {"type_": "generative_requests_worker"},
                "request_loader": {"type_": "generative_request_loader"},
                "extras": {},
                "metrics": {"request_concurrency": {"successful": {"mean": 1.2}}},
                "start_time": min(starts),
                "end_time": max(ends),
                "duration": max(ends) - min(starts),
                "request_totals": totals,
                "request_samples": samples,
                "requests": {
                    "successful": successful,
                    "incomplete": [],
                    "errored": errored,
                    "total": None,
                },
            }
        ]
    }
