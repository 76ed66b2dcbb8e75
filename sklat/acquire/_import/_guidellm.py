"""GuideLLM benchmark reports (``benchmarks.json`` / ``benchmarks.yaml``).

Written by ``GenerativeBenchmarksReport.save_file`` (``src/guidellm/benchmark/
schemas/report.py``: ``model_dump(mode="json")`` then ``json.dumps`` or
``yaml.dump``): ``{"metadata": ..., "config": ..., "benchmarks": [...]}``.
Each benchmark (``schemas/benchmark.py``) lists its requests by status under
``requests`` (``successful``, ``incomplete``, ``errored``), and counts all of
them in ``metrics.request_totals``: the lists may be a sample
(``accumulator.get_sampled``), which the summary says. A request
(``src/guidellm/schemas/request_stats.py``) serialises its computed fields
``time_to_first_token_ms``, ``inter_token_latency_ms`` (``(last token -
first token) / (output_tokens - 1)``), ``output_tokens`` (the first
included), ``prompt_tokens`` and ``request_latency`` (seconds). GuideLLM keeps
no gaps: every request is totals only, its decode time ``inter_token_latency_ms
* (output_tokens - 1)``, the time from the first to the last token. Each
request also serialises ``request_start_time`` and ``request_end_time``
(seconds): from them, each request's ``concurrency`` is reconstructed within
its benchmark (see :mod:`._convention`), unless the lists are a sample.

GuideLLM 0.2 and 0.3 (tags ``v0.2.1``, ``v0.3.1``) wrote the same layout under
other names (``src/guidellm/benchmark/output.py``,
``GenerativeBenchmarksReport.save_json``: ``model_dump()`` then ``json.dump``;
``src/guidellm/benchmark/benchmark.py``): ``request_totals`` and
``request_samples`` (``set_sample_size``, the ``--output-sampling`` option;
null when every request is kept) on the benchmark itself rather than under
``metrics``, and each request (``GenerativeTextResponseStats``) with
``start_time``, ``end_time``, ``first_token_time`` and ``last_token_time``
(``time.time()``, seconds; ``backend/openai.py`` takes the start before the
request is sent and the end at the stream's last line) and the same computed
fields, ``time_to_first_token_ms`` and ``inter_token_latency_ms`` among them.
A request with ``first_token_time`` is read in that layout: its flight is
``start_time`` to ``end_time``.
"""

import numpy as np

from ...exceptions import BenchmarkFormatError
from ._convention import ERRORED, TOTALS_ONLY_TOOL, Importer

INCOMPLETE = "incomplete (cut off when the benchmark ended)"
# Relative (and ms) slack for times recorded and rounded separately.
_ROUNDING = 1e-6
# Slack (s) of a request's end against its start plus its recorded latencies:
# a microsecond, plus the spacing of the floats of an epoch time.
_END_SLACK_S = 1e-6


def detect(docs):
    return (
        len(docs) == 1
        and isinstance(docs[0], dict)
        and isinstance(docs[0].get("benchmarks"), list)
        and all(isinstance(b, dict) and "requests" in b for b in docs[0]["benchmarks"])
    )


def read(docs, path, tool="guidellm"):
    imp = Importer(path, tool)
    index = 0
    for run, bench in enumerate(docs[0]["benchmarks"]):
        requests = bench["requests"]
        if not isinstance(requests, dict):
            raise BenchmarkFormatError(
                f"{path}: benchmarks[{run}].requests: expected an object with "
                "successful / incomplete / errored lists."
            )
        for status in ("successful", "incomplete", "errored"):
            if requests.get(status) is not None and not isinstance(requests[status], list):
                raise BenchmarkFormatError(
                    f"{path}: benchmarks[{run}].requests.{status}: expected a list of "
                    f"requests, got {type(requests[status]).__name__}."
                )
        successful = requests.get("successful") or []
        metrics = bench.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise BenchmarkFormatError(
                f"{path}: benchmarks[{run}].metrics: expected an object, got "
                f"{type(metrics).__name__}."
            )
        # 0.4 and later count the requests under metrics, 0.2 and 0.3 on the
        # benchmark itself.
        totals = metrics.get("request_totals") or bench.get("request_totals") or {}
        if not isinstance(totals, dict):
            totals = {}
        recorded = totals.get("successful")
        if isinstance(recorded, int) and recorded > len(successful):
            imp.notes.append(
                f"benchmark {run} holds a sample: {len(successful)} of {recorded} "
                "successful requests"
            )
            # The requests in flight beside a sampled one are not all known.
            imp.cannot_reconstruct(f"benchmark {run} holds a sample of its requests")
        for status, reason in (("errored", ERRORED), ("incomplete", INCOMPLETE)):
            for request in requests.get(status) or []:
                _flight(imp, request, index, run)
                imp.error(index, reason)
                index += 1
        for request in successful:
            _request(imp, request, index, run)
            index += 1
    return imp


def _flight(imp, request, index, run):
    """The request's ``(start, end)`` (seconds) where both are recorded."""
    if not isinstance(request, dict):
        return None
    keys = _time_keys(request)
    return imp.recorded_flight(run, request.get(keys[0]), request.get(keys[1]), keys, index)


def _time_keys(request):
    """The keys of a request's start and end: 0.4 and later's, or 0.2 and
    0.3's for a request in that layout."""
    keys = ("request_start_time", "request_end_time")
    if not any(key in request for key in keys) and "first_token_time" in request:
        keys = ("start_time", "end_time")
    return keys


def _request(imp, request, index, run):
    if not isinstance(request, dict):
        raise BenchmarkFormatError(f"{imp.path}: request {index}: expected an object.")
    times = _flight(imp, request, index, run)
    completion = imp.count(request.get("output_tokens"), "output_tokens", index)
    if completion < 2:
        imp.add(index, ttft_ms=None, completion_tokens=completion)
        return
    ttft = imp.number(
        request.get("time_to_first_token_ms"), "time_to_first_token_ms", index, positive=True
    )
    itl = imp.number(request.get("inter_token_latency_ms"), "inter_token_latency_ms", index)
    if request.get("request_latency") is not None:
        # Seconds, from the request's start to its end: it holds the time to
        # the first token and the decode after it.
        latency = imp.number(request["request_latency"], "request_latency", index, unit=1000.0)
        if ttft + itl * (completion - 1) > latency * (1 + _ROUNDING) + _ROUNDING:
            raise BenchmarkFormatError(
                f"{imp.where('request_latency', index)}: {latency:g} ms is shorter than the "
                f"time to first token and the decode after it ({ttft:g} + "
                f"{itl * (completion - 1):g} ms)."
            )
    decode = itl * (completion - 1)
    if times is not None:
        # The request is in flight from its start to its end; its decode
        # window, start + ttft to start + ttft + decode, lies inside.
        start, end, _ = times
        if start + (ttft + decode) / 1000 > end + _END_SLACK_S + 8 * np.spacing(abs(end)):
            raise BenchmarkFormatError(
                f"{imp.where(_time_keys(request)[1], index)}: {end!r} s is before the request's "
                f"last token ({start!r} s + {ttft:g} ms to the first + {decode:g} ms of decode)."
            )
    prompt = request.get("prompt_tokens")
    imp.add(
        index,
        ttft_ms=ttft,
        completion_tokens=completion,
        decode_ms=decode,
        prompt_tokens=None if prompt is None else imp.count(prompt, "prompt_tokens", index),
        totals_reason=TOTALS_ONLY_TOOL,
        window=None
        if times is None
        else (run, times[0] + ttft / 1000, times[0] + (ttft + decode) / 1000, times[2]),
        run=run,
    )
