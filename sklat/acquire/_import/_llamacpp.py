"""llama.cpp server responses with ``timings``, one JSON object per line.

Measured in the server (``tools/server/server-context.cpp``: when the first
token is sampled, ``t_prompt_processing`` ends and ``t_start_generation``
starts; ``n_decoded`` counts every sampled token, the first included) and
written by ``result_timings::to_json`` (``tools/server/server-task.cpp``):
``prompt_n`` (prompt tokens evaluated), ``cache_n`` (prompt tokens reused from
the cache, in newer servers), ``prompt_ms``, ``predicted_n``,
``predicted_ms`` (from the first token to the last). So the prefill is
``prompt_ms``, ``output_tokens`` is ``predicted_n - 1`` and the decode time is
``predicted_ms``. With ``timings_per_token`` a streamed response's partial
objects (``"stop": false``, or OpenAI-style chunks whose ``finish_reason`` is
null) carry the running ``predicted_n`` / ``predicted_ms``: the differences
between consecutive objects are decode segments with their token counts.
The partial objects of a request are the lines before its final object.
"""

import numpy as np

from ...exceptions import BenchmarkFormatError
from ._convention import Importer


def detect(docs):
    return bool(docs) and all(isinstance(d, dict) and "timings" in d for d in docs)


def _final(doc):
    if "stop" in doc:
        return bool(doc["stop"])
    choices = doc.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("finish_reason") is not None
    return True


def read(docs, path, tool="llama.cpp"):
    imp = Importer(path, tool)
    partial = []
    index = 0
    for line, doc in enumerate(docs, start=1):
        if not isinstance(doc.get("timings"), dict):
            raise BenchmarkFormatError(f"{path}, line {line}: 'timings' must be an object.")
        if not _final(doc):
            partial.append(doc["timings"])
            continue
        _request(imp, doc, partial, index)
        partial = []
        index += 1
    if partial:
        raise BenchmarkFormatError(
            f"{path}: the file ends with {len(partial)} partial response(s) and no final "
            "one (truncated stream?)."
        )
    return imp


def _request(imp, doc, partial, index):
    t = doc["timings"]
    for key in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms"):
        if key not in t:
            raise BenchmarkFormatError(f"{imp.where('timings.' + key, index)}: missing.")
    completion = imp.count(t["predicted_n"], "timings.predicted_n", index)
    prompt = imp.count(t["prompt_n"], "timings.prompt_n", index)
    if "cache_n" in t:
        prompt += imp.count(t["cache_n"], "timings.cache_n", index)
    gaps = tokens = None
    if partial:
        running = [
            (
                imp.count(p.get("predicted_n"), "timings.predicted_n", index),
                imp.number(p.get("predicted_ms"), "timings.predicted_ms", index),
            )
            for p in partial
        ] + [(completion, imp.number(t["predicted_ms"], "timings.predicted_ms", index))]
        counts = np.array([r[0] for r in running])
        times = np.array([r[1] for r in running])
        if (np.diff(counts) >= 0).all() and (np.diff(times) >= 0).all() and 1 in counts:
            # The time at which each new count was first reported; the object
            # that first reported one token starts the decode.
            new = np.concatenate(([True], np.diff(counts) > 0))
            counts, times = counts[new], times[new]
            first = int(np.flatnonzero(counts == 1)[0])
            tokens, gaps = np.diff(counts[first:]), np.diff(times[first:])
    imp.add(
        index,
        ttft_ms=imp.number(t["prompt_ms"], "timings.prompt_ms", index, positive=True),
        completion_tokens=completion,
        decode_ms=imp.number(t["predicted_ms"], "timings.predicted_ms", index),
        gaps_ms=gaps,
        gap_tokens=tokens,
        prompt_tokens=prompt,
        model=doc.get("model"),
        totals_reason=None if partial else "a final response only (no per-token timings)",
    )
