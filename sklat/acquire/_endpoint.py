"""``sklat profile --endpoint``: measure a running OpenAI-compatible engine.

For each grid point (prompt tokens x output tokens x repeats) one streamed
request is sent to ``/v1/completions`` (or ``/v1/chat/completions``), asking
for ``output_tokens + 1`` tokens (the first comes with the prefill) in the
engine's own way of forcing the length (see :data:`ENGINE_FIELDS`). Every
event is timed as it arrives (:mod:`sklat.acquire._stream`); the row records the time
to the first token as the prefill, the rest as decode time and, where each
event's token count is known, the decode segments. Rows are appended to
``<output_dir>/<dataset>/requests.csv`` as requests finish; a request that
fails (HTTP error, stall, malformed or dropped stream) is logged to
``failed_requests.log`` in the same folder and measured again by the next run.
"""

import json
import platform
import time
import uuid
from functools import partial
from pathlib import Path

import numpy as np

from .._constants import (
    DECODE_COL,
    OUTPUT_TOKENS_COL,
    PREFILL_COL,
    SEGMENT_MS_COL,
    SEGMENT_TOKENS_COL,
)
from .._results import (
    RESULTS_FILE,
    append_csv_row,
    check_lengths,
    progress_bar,
    read_done,
    safe_name,
)
from .._version import __version__
from ._load import InFlight, at_start, check_levels, mean_in_flight, run_level

APIS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
# Request fields that make each engine produce exactly ``n`` tokens (the end of
# sequence ignored) and report token counts; "openai" sends only the standard
# fields, so a response may be shorter (recorded as such).
ENGINE_FIELDS = {
    "openai": lambda n: {"stream_options": {"include_usage": True}},
    "vllm": lambda n: {
        "min_tokens": n,
        "ignore_eos": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    },
    "sglang": lambda n: {
        "min_tokens": n,
        "ignore_eos": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    },
    "llama.cpp": lambda n: {
        "n_predict": n,
        "ignore_eos": True,
        "timings_per_token": True,
        "stream_options": {"include_usage": True},
    },
    # transformers serve sends the usage (the token counts) in a last event
    # only when asked, as OpenAI's API does (cli/serving/completion.py and
    # chat_completion.py: ``stream_options={"include_usage": True}``).
    "transformers": lambda n: {
        "generation_config": json.dumps(
            {"min_new_tokens": n, "max_new_tokens": n, "do_sample": False}
        ),
        "stream_options": {"include_usage": True},
    },
}
FAILED_LOG = "failed_requests.log"
KEYS = ("text_tokens_asked", "output_tokens_asked", "repeat", "max_concurrency", "request_rate")
# A server that refuses a request for now (too many requests, overloaded) is
# asked again after a pause: 0.25 s, doubling, or what its Retry-After says,
# at most the timeout.
RETRY_STATUSES = (429, 503)
_FIRST_PAUSE_S = 0.25
# Words the prompts are drawn from: common English words, one token each in
# most vocabularies. Prompts differ between requests so that a prefix cache
# does not shorten the prefill; the server's own count is what is recorded.
WORDS = (
    "time person year way day thing man world life hand part child eye woman place "
    "work week case point company number group problem fact water money story month "
    "book word business side kind head house service friend father power hour game "
    "line end member law car city community name president team minute idea body"
).split()


def _body(api, engine, model, prompt, n, extra):
    body = {"model": model, "stream": True, "temperature": 0.0, "max_tokens": n}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body.update(ENGINE_FIELDS[engine](n))
    body.update(extra or {})
    return body


def server_root(endpoint):
    """The server's root URL of ``endpoint``, given with or without the ``/v1``
    that OpenAI clients and most engines' docs put in a base URL (the API
    paths of :data:`APIS` add it)."""
    root = endpoint.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _columns(set_columns):
    return (
        ["vision_tokens", "text_tokens", *set_columns]
        + [OUTPUT_TOKENS_COL, PREFILL_COL, DECODE_COL, SEGMENT_TOKENS_COL, SEGMENT_MS_COL]
        + ["text_tokens_asked", "output_tokens_asked", "e2e_ms", "finish_reason", "segments"]
        + ["repeat", "endpoint", "api", "engine", "server", "server_version", "model"]
        + ["concurrency", "in_flight_at_start", "waiting_at_start"]
        + ["max_concurrency", "request_rate", "seed"]
        + ["run_id", "sklat_version", "httpx_version", "python_version"]
    )


def _check(endpoint, model, api, engine, retries, timeout, prompt_mismatch, lists):
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must be an http:// or https:// URL; got {endpoint!r}.")
    if not model:
        raise ValueError("model (the served model's name) is required with an endpoint.")
    if api not in APIS:
        raise ValueError(f"api must be one of {sorted(APIS)}; got {api!r}.")
    if engine not in ENGINE_FIELDS:
        raise ValueError(f"engine must be one of {sorted(ENGINE_FIELDS)}; got {engine!r}.")
    if prompt_mismatch not in ("record", "refuse"):
        raise ValueError(f"prompt_mismatch must be 'record' or 'refuse'; got {prompt_mismatch!r}.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0; got {retries!r}.")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds; got {timeout!r}.")
    return {name: check_lengths(values, name) for name, values in lists.items()}


def profile_endpoint(
    endpoint,
    output_dir,
    *,
    model,
    prompt_tokens=(64, 256, 1024),
    output_tokens=(16, 128, 512),
    repeats=3,
    api="completions",
    engine="openai",
    set_columns=None,
    concurrency=1,
    request_rate=None,
    retries=3,
    timeout=60.0,
    prompt_mismatch="record",
    extra_body=None,
    dataset=None,
    seed=0,
    warmup=2,
    progress=True,
):
    """Measure a running OpenAI-compatible streaming engine into a results folder.

    Each request streams ``output_tokens + 1`` tokens; every event is timed as it
    arrives. The row holds the time to the first token (``T_prefill_total``), the
    decode time after it (``T_LLM_decode``), ``output_tokens`` as received (a
    shorter response is recorded as such, with ``output_tokens_asked``) and, where
    each event's token count is known, the decode segments
    (``T_decode_segment_tokens`` / ``T_decode_segment_ms``); events that arrive in
    one network read form one segment. ``text_tokens`` is the server's count of
    the prompt (``usage.prompt_tokens``), ``text_tokens_asked`` what was asked.

    Parameters
    ----------
    endpoint : str
        The server's base URL, e.g. ``"http://127.0.0.1:8000"``.
    output_dir : str or path-like
        Results folder (created); rows go to ``<output_dir>/<dataset>/requests.csv``.
    model : str
        The served model's name (the request's ``model`` field).
    prompt_tokens, output_tokens : sequence of int
        Grid of prompt lengths and of decode steps after the first token.
    repeats : int, default=3
        Measurements per grid point.
    api : {"completions", "chat"}, default="completions"
        ``/v1/completions`` or ``/v1/chat/completions``.
    engine : {"openai", "vllm", "sglang", "llama.cpp", "transformers"}, \
            default="openai"
        How to ask for exactly ``output_tokens + 1`` tokens and for token counts
        (``min_tokens``/``ignore_eos`` and continuous usage statistics for vLLM
        and SGLang, ``n_predict``/``timings_per_token`` for llama.cpp,
        ``generation_config`` for ``transformers serve``); ``"openai"`` sends only
        ``max_tokens``.
    set_columns : dict, default=None
        Constant configuration columns of every row (``{"top_k": 2, "gpu": "h100"}``).
    concurrency : int, list of int or None, default=1
        Closed-loop load levels: at each, the whole grid with that many
        requests in flight at once (a new one sent as one ends). Each row
        records its level as ``max_concurrency``. ``None``: none (with
        ``request_rate``).
    request_rate : float or list of float, default=None
        Open-loop load levels, in requests per second: at each, the whole grid
        sent at seeded Poisson arrival times whatever is in flight (as vLLM and
        GuideLLM benchmark). Each row records its level as ``request_rate``.
        Every row's ``concurrency`` is the time-weighted mean number of this
        client's requests in flight (itself included) from its first token to
        its end, computed from the measured times; ``in_flight_at_start`` is
        that number at the instant it was sent (what a router sees), and
        ``waiting_at_start`` how many of those had no first token yet (the
        queue its prefill joined, itself included).
    retries : int, default=3
        Times a request refused with HTTP 429 or 503 is sent again, after a
        pause (0.25 s doubling, or the server's ``Retry-After``, at most
        ``timeout``); after the last, it is a logged failure.
    timeout : float, default=60.0
        Seconds without a token after which a request counts as stalled.
    prompt_mismatch : {"record", "refuse"}, default="record"
        When the server counts a prompt differently from what was asked:
        record its count, or stop with an error.
    extra_body : dict, default=None
        More request fields (they override sklat's).
    dataset : str, default=None
        Dataset sub-folder; default: the model name, made safe for a folder.
    seed : int, default=0
        Seed of the prompts' words and of the order of the grid.
    warmup : int, default=2
        Untimed requests before the grid.
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    path : pathlib.Path
        The results file.

    Raises
    ------
    ValueError
        Bad arguments, a results file of another setup, a prompt counted
        differently with ``prompt_mismatch="refuse"``, or no server at
        ``endpoint``.

    Examples
    --------
    With an engine serving ``my-model`` on port 8000 (see the "Profile a serving
    engine" page):

    >>> from sklat.acquire import profile_endpoint
    >>> profile_endpoint("http://127.0.0.1:8000", "results", model="my-model",
    ...                  prompt_tokens=[64], output_tokens=[16], repeats=1,
    ...                  engine="vllm")  # doctest: +SKIP
    PosixPath('results/my-model/requests.csv')
    """
    httpx = _import_httpx()

    levels = check_levels(concurrency, request_rate)
    lists = _check(
        endpoint,
        model,
        api,
        engine,
        retries,
        timeout,
        prompt_mismatch,
        {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "repeats": [repeats]},
    )
    set_columns = dict(set_columns or {})
    root = server_root(endpoint)
    url = root + APIS[api]
    path = Path(output_dir) / (dataset or dataset_name(model)) / RESULTS_FILE
    columns = _columns(list(set_columns))
    setup = {
        "endpoint": endpoint,
        "model": model,
        "api": api,
        "engine": engine,
        "seed": seed,
        **set_columns,
    }
    done = read_done(path, setup, columns, keys=KEYS)
    work = [(level, _pending_jobs(lists, level, done, seed)) for level in levels]
    descriptive = _descriptive(setup, httpx)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A closed loop needs as many connections as requests in flight.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    with httpx.Client(limits=limits) as client:
        _warm_up(client, url, api, engine, model, extra_body, timeout, warmup)
        descriptive["server_version"] = _server_version(client, endpoint, httpx)
        recorder = _Recorder(path, columns, descriptive, prompt_mismatch)
        request = partial(
            _measure,
            client,
            url,
            api=api,
            engine=engine,
            model=model,
            extra=extra_body,
            timeout=timeout,
            seed=seed,
            retries=retries,
        )
        with progress_bar(sum(len(jobs) for _, jobs in work), progress) as bar:
            for level, jobs in work:
                _run_level(request, recorder, bar, level, jobs, seed)
    return path


def _run_level(request, recorder, bar, level, jobs, seed):
    """Measure ``jobs`` at one load ``level``; the rows are written when the
    level ends (on Ctrl-C too: the requests in flight finish first), once
    every request's time in flight is known."""
    in_flight, finished = InFlight(), []

    def run(job):
        finished.append((job, request(job, in_flight)))
        bar.update(1)

    try:
        run_level(run, jobs, level, seed)
    finally:
        # Every request of the level has ended (run_level waits for those in
        # flight): its times in flight are complete.
        starts, ends = in_flight.intervals()
        measured = [row for _, row in finished if "error" not in row]
        counts = at_start(
            starts, ends, in_flight.first_tokens(), [row.pop("_sent_ns") for row in measured]
        )
        decodes = np.array([row.pop("_decode_ns") for row in measured], dtype=np.float64)
        means = mean_in_flight(starts, ends, *decodes.reshape(-1, 2).T)
        for row, mean, in_flight_at_start, waiting_at_start in zip(measured, means, *counts):
            row["concurrency"] = round(float(mean), 6)
            row["in_flight_at_start"] = int(in_flight_at_start)
            row["waiting_at_start"] = int(waiting_at_start)
        for job, row in finished:
            recorder.record(job, row)


def _descriptive(setup, httpx):
    """The run's settings and provenance, recorded on every row."""
    return {
        **setup,
        "run_id": time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
        "sklat_version": __version__,
        "httpx_version": httpx.__version__,
        "python_version": platform.python_version(),
    }


def _pending_jobs(lists, level, done, seed):
    """The grid's ``(prompt, output, repeat, max_concurrency, request_rate)``
    requests at ``level`` not yet in the results file, in a seeded order."""
    jobs = [
        (p, n, r, level.max_concurrency, level.request_rate)
        for p in lists["prompt_tokens"]
        for n in lists["output_tokens"]
        for r in range(lists["repeats"][0])
        if (p, n, r, level.max_concurrency, level.request_rate) not in done
    ]
    np.random.RandomState(seed).shuffle(jobs)
    return jobs


class _Recorder:
    """Writes each measured request: a row of the results file, or a line of
    the failure log. Called once a level has ended, from one thread."""

    def __init__(self, path, columns, descriptive, prompt_mismatch):
        self.append = append_csv_row
        self.path, self.columns, self.descriptive = path, columns, descriptive
        self.prompt_mismatch = prompt_mismatch

    def record(self, job, row):
        if "error" in row:
            _log_failure(self.path.parent / FAILED_LOG, job, row["error"])
        else:
            _check_prompt(row, self.prompt_mismatch)
            self.append(self.path, self.columns, {**self.descriptive, **row})


def _import_httpx():
    try:
        import httpx
        import httpx_sse  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"profiling an endpoint needs httpx and httpx-sse: pip install 'sklat[endpoint]' "
            f"({exc})"
        ) from None
    return httpx


def dataset_name(model):
    """The default dataset folder of a served model: its name, made safe."""
    return safe_name(model)


def _server_version(client, endpoint, httpx):
    """The engine's version where it says (vLLM's ``/version``), else ""."""
    try:
        reply = client.get(server_root(endpoint) + "/version", timeout=5)
        version = reply.json().get("version", "") if reply.status_code == 200 else ""
    except (httpx.HTTPError, ValueError, AttributeError):
        return ""
    return str(version)


def _prompt(words, n):
    return " ".join(words[i % len(words)] for i in range(n))


def _warm_up(client, url, api, engine, model, extra, timeout, n):
    # httpx and httpx-sse (which _stream needs) come with the endpoint extra.
    import httpx

    from ._stream import EndpointError, stream

    for _ in range(n):
        try:
            stream(
                client, url, _body(api, engine, model, _prompt(WORDS, 16), 8, extra), api, timeout
            )
        except httpx.ConnectError as exc:
            raise ValueError(f"cannot connect to {url}: {exc}") from None
        except EndpointError as exc:
            # A setup that fails before the grid (a wrong model name, a refused
            # field) would fail every request of it.
            hint = (
                f" (no such path: the endpoint is the server's base URL, to which sklat "
                f"appends {APIS[api]})"
                if str(exc).startswith("HTTP 404")
                else ""
            )
            raise ValueError(f"the warm-up request to {url} failed: {exc}{hint}") from None


def _measure(client, url, job, in_flight, *, api, engine, model, extra, timeout, seed, retries):
    """One row (a dict; ``_decode_ns``: its first token's and end's
    ``perf_counter_ns``), or ``{"error": ...}``. Every attempt's time in flight
    goes to ``in_flight``."""
    # httpx and httpx-sse (which _stream needs) come with the endpoint extra.
    import httpx

    from ._stream import EndpointError, measurement, stream

    prompt_n, n, repeat, max_concurrency, request_rate = job
    rng = np.random.RandomState([seed, prompt_n, n, repeat])
    words = [WORDS[i] for i in rng.randint(0, len(WORDS), prompt_n)]
    body = _body(api, engine, model, " ".join(words), n + 1, extra)
    for attempt in range(retries + 1):
        sent, first_ns = time.perf_counter_ns(), None
        try:
            reads = stream(client, url, body, api, timeout)
            ttft, decode, received, segments, why = measurement(reads)
            first_ns = reads.reads[0][0] if reads.reads else None
            break
        except httpx.ConnectError as exc:
            return {"error": f"cannot connect: {exc}"}
        except EndpointError as exc:
            if exc.status not in RETRY_STATUSES or attempt == retries:
                suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                return {"error": f"{exc}{suffix}"}
            pause = exc.retry_after if exc.retry_after is not None else _FIRST_PAUSE_S * 2**attempt
            time.sleep(min(pause, timeout))
        finally:
            in_flight.add(sent, time.perf_counter_ns(), first_ns)
    if received < 1:
        return {"error": f"{reads.completion_tokens} output token(s): no decode step"}
    return {
        "vision_tokens": 0,
        "text_tokens": reads.prompt_tokens if reads.prompt_tokens is not None else prompt_n,
        OUTPUT_TOKENS_COL: received,
        PREFILL_COL: round(ttft, 6),
        DECODE_COL: round(decode, 6),
        SEGMENT_TOKENS_COL: None if segments is None else json.dumps(segments[0]),
        SEGMENT_MS_COL: None if segments is None else json.dumps(np.round(segments[1], 6).tolist()),
        "text_tokens_asked": prompt_n,
        "output_tokens_asked": n,
        "e2e_ms": round((reads.end_ns - reads.start_ns) / 1e6, 6),
        "finish_reason": reads.finish_reason,
        "segments": why,
        "server": reads.server,
        "repeat": repeat,
        "max_concurrency": max_concurrency,
        "request_rate": request_rate,
        "_decode_ns": (reads.reads[0][0], reads.end_ns),
        "_sent_ns": sent,
    }


def _check_prompt(row, mismatch):
    if mismatch == "refuse" and row["text_tokens"] != row["text_tokens_asked"]:
        raise ValueError(
            f"the server counted {row['text_tokens']} prompt tokens where "
            f"{row['text_tokens_asked']} were asked (prompt_mismatch='refuse'); "
            "use prompt_mismatch='record' to keep the server's count."
        )


def _log_failure(path, job, error):
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "text_tokens_asked": job[0],
        "output_tokens_asked": job[1],
        "repeat": job[2],
        "max_concurrency": job[3],
        "request_rate": job[4],
        "error": error,
    }
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
