"""AIPerf ``profile_export.jsonl``: one record per request, one per line.

Written by ``aiperf/post_processors/record_export_results_processor.py``
(``MetricRecordInfo.model_dump_json()``; model in
``aiperf/common/models/record_models.py``): ``{"metadata": {...},
"metrics": {tag: {"value": v, "unit": u}}, "error": null | {...}}``. Each
metric carries its own unit (``ns``, ``us``, ``ms``, ``sec`` for times), which
is honoured. ``inter_chunk_latency`` (``aiperf/metrics/types/
inter_chunk_latency_metric.py``) is the list of gaps between consecutive
responses; ``output_sequence_length`` counts output and reasoning tokens, the
first included; ``request_latency`` runs to the last response. A request
with ``error`` set is kept out. ``metadata.request_start_ns`` and
``request_end_ns`` (wall-clock ns) say when each record was in flight: from
them each request's ``concurrency`` is reconstructed over the file (see
:mod:`._convention`).
"""

from ...exceptions import BenchmarkFormatError
from ._convention import ERRORED, TIME_UNITS_MS, Importer

# Relative (and ms) slack between times recorded from separate clocks reads.
_SLACK = 1e-3


def detect(docs):
    return bool(docs) and all(
        isinstance(d, dict)
        and isinstance(d.get("metadata"), dict)
        and "metrics" in d
        and "request_start_ns" in d["metadata"]
        for d in docs
    )


def _metric(imp, metrics, tag, index, *, time=True, required=True):
    item = metrics.get(tag)
    if item is None:
        if required:
            raise BenchmarkFormatError(f"{imp.where(f'metrics.{tag}', index)}: missing.")
        return None
    if not isinstance(item, dict) or "value" not in item or "unit" not in item:
        raise BenchmarkFormatError(
            f"{imp.where(f'metrics.{tag}', index)}: expected {{'value': ..., 'unit': ...}}."
        )
    unit = item["unit"]
    if not time:
        return item["value"]
    if unit not in TIME_UNITS_MS:
        raise BenchmarkFormatError(
            f"{imp.where(f'metrics.{tag}.unit', index)}: unknown time unit {unit!r}; "
            f"expected one of {sorted(TIME_UNITS_MS)}."
        )
    return item["value"], TIME_UNITS_MS[unit]


def read(docs, path, tool="aiperf"):
    imp = Importer(path, tool)
    for index, doc in enumerate(docs):
        metrics = doc.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise BenchmarkFormatError(
                f"{imp.where('metrics', index)}: expected an object of metrics, got "
                f"{type(metrics).__name__}."
            )
        times = _flight(imp, doc["metadata"], index)
        if doc.get("error") is not None or doc["metadata"].get("was_cancelled"):
            imp.error(index, ERRORED)
            continue
        value, unit = _metric(imp, metrics, "time_to_first_token", index)
        ttft = imp.number(value, "metrics.time_to_first_token", index, unit=unit, positive=True)
        completion = imp.count(
            _metric(imp, metrics, "output_sequence_length", index, time=False),
            "metrics.output_sequence_length",
            index,
        )
        prompt = _metric(imp, metrics, "input_sequence_length", index, time=False, required=False)
        prompt = (
            None if prompt is None else imp.count(prompt, "metrics.input_sequence_length", index)
        )
        gaps = decode = None
        chunks = _metric(imp, metrics, "inter_chunk_latency", index, required=False)
        latency = _metric(imp, metrics, "request_latency", index, required=chunks is None)
        if latency is not None:
            latency = imp.number(latency[0], "metrics.request_latency", index, unit=latency[1])
        if chunks is not None:
            gaps = imp.gaps(chunks[0], "metrics.inter_chunk_latency.value", index, unit=chunks[1])
            span = float(gaps.sum())
            # The gaps run from the first response to the last, which ends
            # the request: they fit in what follows the first token.
            if latency is not None and span > (latency - ttft) * (1 + _SLACK) + _SLACK:
                raise BenchmarkFormatError(
                    f"{imp.where('metrics.inter_chunk_latency', index)}: the gaps add up to "
                    f"{span:g} ms, more than request_latency minus time to first token "
                    f"({latency - ttft:g} ms)."
                )
        else:
            decode = span = latency - ttft
        window = None
        if times is not None:
            start, end, flight = times
            last_token_ns = start + (ttft + span) * 1e6
            if last_token_ns - _SLACK * (ttft + span) * 1e6 > end:
                raise BenchmarkFormatError(
                    f"{imp.where('metadata.request_end_ns', index)}: the request ends before its "
                    f"last token ({ttft:g} ms to the first and {span:g} ms of decode)."
                )
            window = (0, start + ttft * 1e6, last_token_ns, flight)
        imp.add(
            index,
            ttft_ms=ttft,
            completion_tokens=completion,
            gaps_ms=gaps,
            decode_ms=decode,
            prompt_tokens=prompt,
            window=window,
            run=doc["metadata"].get("benchmark_phase"),
        )
    return imp


def _flight(imp, metadata, index):
    """The record's ``(start, end)`` (ns) where both are recorded, else None."""
    return imp.recorded_flight(
        0,
        metadata.get("request_start_ns"),
        metadata.get("request_end_ns"),
        ("metadata.request_start_ns", "metadata.request_end_ns"),
        index,
    )
