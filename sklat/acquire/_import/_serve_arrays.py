"""vLLM ``bench serve`` and SGLang ``bench_serving`` result files.

Both tools write one JSON object per benchmark run with per-request arrays of
equal length (vLLM with ``--save-detailed``, SGLang with ``--output-details``),
times in seconds:

- ``ttfts[i]``: time to the first event that carried text;
- ``itls[i]``: the gaps between later events (one per event, not per token:
  an event can carry several tokens);
- ``output_lens[i]``: output tokens, the first included (the server's usage
  count, or the tool's re-tokenisation of the text);
- ``input_lens[i]``: prompt tokens; ``errors[i]``: "" for a success;
- ``start_times[i]`` and ``latencies[i]`` (recent vLLM): when the request was
  sent (``time.perf_counter()``, seconds) and the time from then to its last
  token (``endpoint_request_func.py``: ``most_recent_timestamp - st``; 0 for a
  request that failed before streaming). With them, each request's
  ``concurrency`` is reconstructed (see :mod:`._convention`); a failed
  request's recorded latency of 0 leaves its time in flight unknown, which the
  summary says.

vLLM (``vllm/benchmarks/serve.py``, ``benchmark()`` and ``main_async()``;
request timing in ``vllm/benchmarks/lib/endpoint_request_func.py``; the
older ``benchmarks/benchmark_serving.py`` writes the same keys): with
``--append-result`` several objects follow each other in one file, separated
by a newline. A failed request has ``output_lens[i] == 0`` and usually a
non-empty ``errors[i]`` (a non-200 reply can leave it empty). vLLM records no
per-request end-to-end time: the decode time is the sum of the gaps.

SGLang (``python/sglang/bench_serving.py``, ``benchmark()`` and
``async_request_sglang_generate``): JSON Lines appended run after run, the
arrays at the top level; derived scripts nest them under ``"details"``. Its
native backend (``sglang``/``sglang-native``) spreads each chunk's gap evenly
over the chunk's new tokens (``[gap / k] * k``): a run of equal consecutive
values is one chunk of that many tokens, which is how it is read back. An
infinite request rate is written as a bare ``Infinity``.
"""

import numpy as np

from ...exceptions import BenchmarkFormatError
from ._convention import ERRORED, Importer

ARRAYS = ("ttfts", "itls", "output_lens", "errors")
TIMES = ("start_times", "latencies")
SGLANG_NATIVE = ("sglang", "sglang-native")


def _arrays(doc):
    """The per-request arrays of one run object, top level or under "details"."""
    details = doc.get("details")
    if isinstance(details, dict) and "ttfts" in details:
        return details
    return doc


def is_vllm(docs):
    return all(isinstance(d, dict) for d in docs) and any(
        "ttfts" in d and ("model_id" in d or "date" in d or "endpoint_type" in d) for d in docs
    )


def is_sglang(docs):
    return all(isinstance(d, dict) for d in docs) and any(
        "ttfts" in _arrays(d)
        and "model_id" not in d
        and ("dataset_name" in d or "total_output_tokens_retokenized" in d or "details" in d)
        for d in docs
    )


def read(docs, path, tool):
    imp = Importer(path, tool)
    index = unknown_flight = 0
    for run, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise imp_error(path, run, f"expected a JSON object, got {type(doc).__name__}")
        arrays = _arrays(doc)
        missing = [k for k in ARRAYS if k not in arrays]
        if missing:
            flag = "--save-detailed" if tool == "vllm" else "--output-details"
            raise imp_error(
                path,
                run,
                f"no per-request arrays {missing}; write the file with {flag}",
            )
        for key in ARRAYS + ("input_lens",) + TIMES:
            if key in arrays and not isinstance(arrays[key], list):
                raise imp_error(
                    path,
                    run,
                    f"{key!r} must be a list with one entry per request, got "
                    f"{type(arrays[key]).__name__}",
                )
        timed = all(k in arrays for k in TIMES)
        lengths = {
            k: len(arrays[k])
            for k in ARRAYS + ("input_lens",) + (TIMES if timed else ())
            if k in arrays
        }
        if len(set(lengths.values())) != 1:
            raise imp_error(path, run, f"per-request arrays of unequal length: {lengths}")
        backend = doc.get("backend", doc.get("endpoint_type"))
        descriptive = {
            "model": doc.get("model_id", doc.get("model")),
            "backend": backend,
            "request_rate": doc.get("request_rate"),
            "max_concurrency": doc.get("max_concurrency"),
            "run": run,
        }
        native = tool == "sglang" and backend in SGLANG_NATIVE
        if not timed:
            imp.cannot_reconstruct("the file records no start_times and latencies")
        for i in range(lengths["ttfts"]):
            window, known = _flight(imp, arrays, i, index, run) if timed else (None, True)
            unknown_flight += not known
            _request(imp, arrays, i, index, native, descriptive, window)
            index += 1
    if unknown_flight:
        imp.notes.append(
            f"{unknown_flight} failed requests' times in flight not recorded (not counted)"
        )
    return imp


def _flight(imp, arrays, i, index, run):
    """``(decode window or None, whether its time in flight is known)``: the
    time in flight goes to the importer; a request that failed before
    streaming (latency 0) has none."""
    start = imp.number(arrays["start_times"][i], "start_times", index, time=False)
    latency = imp.number(arrays["latencies"][i], "latencies", index, unit=1000.0) / 1000.0
    if latency == 0:
        return None, False
    flight = imp.flight(run, start, start + latency)
    ttft = arrays["ttfts"][i]
    if isinstance(ttft, bool) or not isinstance(ttft, (int, float)):
        return None, True  # refused by the request's own checks
    return (run, start + ttft, start + latency, flight), True


def _request(imp, arrays, i, index, native, descriptive, window):
    error = arrays["errors"][i]
    completion = imp.count(arrays["output_lens"][i], "output_lens", index)
    if (error not in (None, "")) or completion == 0:
        imp.error(index, ERRORED)
        return
    ttft = imp.number(arrays["ttfts"][i], "ttfts", index, unit=1000.0, positive=True)
    gaps = imp.gaps(arrays["itls"][i], "itls", index, unit=1000.0)
    if window is not None:
        _check_latency(imp, arrays, i, index, window, gaps)
    prompt = arrays["input_lens"][i] if "input_lens" in arrays else None
    if prompt is not None:
        prompt = imp.count(prompt, "input_lens", index)
    tokens = None
    if native and len(gaps):
        # Runs of bit-identical values: one chunk spread over its tokens.
        raw = np.asarray(arrays["itls"][i], dtype=np.float64)
        starts = np.flatnonzero(np.concatenate(([True], raw[1:] != raw[:-1])))
        tokens = np.diff(np.concatenate((starts, [len(raw)])))
        gaps = np.add.reduceat(gaps, starts)
    imp.add(
        index,
        ttft_ms=ttft,
        completion_tokens=completion,
        gaps_ms=gaps,
        gap_tokens=tokens,
        prompt_tokens=prompt,
        window=window,
        **descriptive,
    )


def _check_latency(imp, arrays, i, index, window, gaps_ms):
    """The recorded latency ends at the last token or after it (vLLM's
    ``latency`` is the time of the last event, its ``itls`` the gaps between
    text events: ``latency >= ttft + sum(itls)``, equal up to rounding where
    no event follows the last text); a window the start time's precision
    cannot resolve fails the same way."""
    _, first, last, _ = window
    decode_ms = 1000.0 * (last - first)
    needed_ms = float(np.sum(gaps_ms))
    if decode_ms < needed_ms - (1e-3 + 1e-6 * needed_ms):
        raise BenchmarkFormatError(
            f"{imp.where('latencies', index)}: {arrays['latencies'][i]!r} s (from "
            f"start_times {arrays['start_times'][i]!r}) leaves {decode_ms:.6g} ms after the first "
            f"token, less than its itls need ({needed_ms:.6g} ms): the request would end "
            "before its last token."
        )


def imp_error(path, run, message):
    return BenchmarkFormatError(f"{path}: run {run} (object {run + 1} of the file): {message}.")
