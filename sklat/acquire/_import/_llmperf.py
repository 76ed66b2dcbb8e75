"""LLMPerf ``*_individual_responses.json``: a JSON list, one object per request.

Written by ``token_benchmark_ray.py`` (``run_token_benchmark``: ``json.dump``
of the completed requests' metrics); keys from ``src/llmperf/common_metrics.py``,
times in seconds: ``ttft_s``, ``end_to_end_latency_s``,
``number_input_tokens``, ``number_output_tokens`` (the re-tokenised output,
the first token included), ``error_code`` / ``error_msg`` (set on failure).
LLMPerf keeps no gaps, so every request is totals only. Its last collection
pass extends the list with a request's metrics dict itself, which adds the
dict's keys as bare strings: entries that are not objects are skipped, and the
summary says how many.
"""

from ._convention import ERRORED, TOTALS_ONLY_TOOL, Importer


def detect(docs):
    return (
        len(docs) == 1
        and isinstance(docs[0], list)
        and any(isinstance(d, dict) and "end_to_end_latency_s" in d for d in docs[0])
    )


def read(docs, path, tool="llmperf"):
    imp = Importer(path, tool)
    skipped = 0
    for index, doc in enumerate(docs[0]):
        if not isinstance(doc, dict):
            skipped += 1
            continue
        failed = doc.get("error_code") not in (None, "") or doc.get("error_msg") not in (None, "")
        completion = imp.count(doc.get("number_output_tokens"), "number_output_tokens", index)
        if failed or completion == 0:
            imp.error(index, ERRORED)
            continue
        ttft = imp.number(doc.get("ttft_s"), "ttft_s", index, unit=1000.0, positive=True)
        e2e = imp.number(
            doc.get("end_to_end_latency_s"), "end_to_end_latency_s", index, unit=1000.0
        )
        prompt = doc.get("number_input_tokens")
        imp.add(
            index,
            ttft_ms=ttft,
            completion_tokens=completion,
            decode_ms=e2e - ttft,
            prompt_tokens=None
            if prompt is None
            else imp.count(prompt, "number_input_tokens", index),
            totals_reason=TOTALS_ONLY_TOOL,
        )
    if skipped:
        imp.notes.append(f"{skipped} list entries that are not request objects skipped")
    return imp
