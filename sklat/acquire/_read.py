"""Serving-benchmark files read into the results columns (see
:func:`read_benchmark`); each tool's reader is in :mod:`sklat.acquire._import`."""

import pandas as pd

from ._import._convention import IMPORT_COLUMNS, OPTIONAL_COLUMNS
from ._import._formats import read_file


def read_benchmark(path, format="auto"):
    """Read a serving-benchmark file into requests of the results format.

    Supported: vLLM ``bench serve`` JSON (``--save-detailed``; appended
    objects too), SGLang ``bench_serving`` JSONL (``--output-details``),
    GuideLLM reports (JSON, YAML), AIPerf ``profile_export.jsonl``, LLMPerf
    ``*_individual_responses.json`` and llama.cpp server responses with
    ``timings`` (one JSON object per line).

    One convention for every tool: time to first token is the prefill
    (``T_prefill_total``); ``output_tokens`` counts the tokens after the
    first; ``T_LLM_decode`` is end-to-end minus time to first token. The gaps
    between streamed events become decode segments
    (``T_decode_segment_tokens``, ``T_decode_segment_ms``) where each event's
    token count is known (recorded by the tool, or one gap per token);
    otherwise the request keeps its totals only. Failed requests are kept
    out. Nothing is invented: a configuration the file cannot know (tier,
    top_k, GPU ...) is for the caller to add as columns.

    Parameters
    ----------
    path : str or path-like
        The benchmark file.
    format : {"auto", "vllm", "sglang", "guidellm", "aiperf", "llmperf", \
            "llama.cpp"}, default="auto"
        The tool that wrote it; ``"auto"`` recognises it from its content.

    Returns
    -------
    requests : DataFrame
        One row per imported request: ``text_tokens`` (prompt tokens),
        ``output_tokens``, ``T_prefill_total``, ``T_LLM_decode`` (ms), the two
        segment columns (lists, or None), ``concurrency`` where the file
        records when each request was in flight (vLLM's ``start_times`` and
        ``latencies``, GuideLLM's request start and end, AIPerf's
        ``request_start_ns`` and ``request_end_ns``: the time-weighted mean
        number of the run's requests in flight over the request's decode),
        and descriptive columns (``tool``,
        ``model``, ``backend``, ``request_rate``, ``max_concurrency``,
        ``source_file``, ``run``, ``request_index``). ``requests.attrs
        ["import_summary"]`` accounts for every request read: imported (with
        segments or totals only, and why), errored, kept out (and why), and
        whether concurrency was reconstructed.

    Raises
    ------
    BenchmarkFormatError
        A malformed file (truncated JSON, arrays of unequal length, negative
        or non-finite times, too many tokens), naming the file, key and
        request; or a file whose format is unknown or ambiguous, listing the
        formats considered.

    Examples
    --------
    >>> import json, tempfile
    >>> from sklat.io import read_benchmark
    >>> run = {"date": "20260101-000000", "backend": "vllm", "model_id": "m",
    ...        "input_lens": [32], "output_lens": [4], "ttfts": [0.02],
    ...        "itls": [[0.01, 0.011, 0.012]], "errors": [""]}
    >>> path = tempfile.mkdtemp() + "/vllm.json"
    >>> _ = open(path, "w").write(json.dumps(run))
    >>> frame = read_benchmark(path)
    >>> frame[["text_tokens", "output_tokens", "T_prefill_total"]].to_dict("records")
    [{'text_tokens': 32, 'output_tokens': 3, 'T_prefill_total': 20.0}]
    >>> frame["T_decode_segment_tokens"].iloc[0]
    [1, 1, 1]
    """
    importer, _ = read_file(path, format)
    frame = pd.DataFrame.from_records(importer.rows, columns=IMPORT_COLUMNS)
    # Descriptive columns the tool does not record are left out.
    frame = frame.drop(columns=[c for c in OPTIONAL_COLUMNS if frame[c].isna().all()])
    frame.attrs["import_summary"] = importer.summary()
    return frame
