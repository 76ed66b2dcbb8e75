"""One streamed request to an OpenAI-compatible endpoint, timed event by event.

The client reads the response as it arrives (``httpx``'s ``iter_bytes``, one
chunk per network read) and parses the server-sent events of each read with
``httpx-sse``'s decoders, so that every event is stamped with the monotonic
time (``time.perf_counter_ns``) of the read that delivered it. Events that
arrive in one read cannot be timed apart: they form one segment, whose token
count is the sum of theirs.

An event's token count is taken from the engine where it says it: the running
``usage.completion_tokens`` of vLLM's continuous usage statistics, the running
``timings.predicted_n`` of llama.cpp's per-token timings, or one log-probability
entry per token. Otherwise, when the number of events that carried text equals
the number of output tokens the server reports (``usage``), each event is one
token; when it does not, the counts are unknown and the request keeps its totals
only.
"""

import codecs
import json
import time
from dataclasses import dataclass, field

import httpx

# The SSE line and event decoders of httpx-sse (its EventSource would hide the
# network reads behind one iterator); pinned below 0.5 in the extra.
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from .._constants import MAX_OUTPUT_TOKENS

# Most tokens a server may report for one request (prompt or output): the
# longest output sklat trains on, and its first token.
MAX_TOKENS = MAX_OUTPUT_TOKENS + 1


class EndpointError(RuntimeError):
    """A request that did not complete as a measurement (HTTP error, stall,
    malformed or dropped stream, no token count); recorded, not kept.
    ``status``: the HTTP status of a refused request, else None;
    ``retry_after``: the seconds its ``Retry-After`` header asked for, or None."""

    def __init__(self, message, status=None, retry_after=None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass
class Reads:
    """What one request recorded."""

    start_ns: int
    # Per network read that carried tokens: (time, events with tokens, tokens
    # the engine counted or None where any event of the read had no count).
    reads: list = field(default_factory=list)
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    end_ns: int | None = None
    server: str = ""


def _event_tokens(obj, api, state):
    """``(carries_text, tokens or None)`` of one event's JSON object."""
    choices = obj.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    if api == "chat":
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("reasoning_content") or ""
        logprobs = (choice.get("logprobs") or {}).get("content")
    else:
        text = choice.get("text") or ""
        logprobs = (choice.get("logprobs") or {}).get("tokens")
    if choice.get("finish_reason"):
        state["finish_reason"] = choice["finish_reason"]
    count = None
    usage = obj.get("usage")
    timings = obj.get("timings")
    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
        running = _token_count(usage["completion_tokens"], "usage.completion_tokens")
        state["completion_tokens"] = running
        if usage.get("prompt_tokens") is not None:
            state["prompt_tokens"] = _token_count(usage["prompt_tokens"], "usage.prompt_tokens")
        # Continuous usage statistics: a running count on every event. A closing
        # summary (no text, a finish_reason) counts nothing by itself.
        if choices and (text or not choice.get("finish_reason")):
            count = running - state.get("counted", 0)
            state["counted"] = running
    elif isinstance(timings, dict) and timings.get("predicted_n") is not None:
        running = _token_count(timings["predicted_n"], "timings.predicted_n")
        count = running - state.get("counted", 0)
        state["counted"] = running
    elif isinstance(logprobs, list):
        count = len(logprobs)
    return bool(text) or bool(count), count


def _seconds(header):
    """A ``Retry-After`` header's seconds (a date form is not read), or None."""
    try:
        value = float(header)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 and value == value else None


def _token_count(value, what):
    """A token count the server reported: an integer in ``0..MAX_TOKENS``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise EndpointError(
            f"the server reported {what} = {value!r}; expected an integer in 0..{MAX_TOKENS}"
        )
    return value


def stream(client, url, body, api, timeout):
    """Send ``body`` to ``url`` and record its events (a :class:`Reads`).

    Raises :class:`EndpointError` for anything that is not a complete
    measurement; ``httpx.ConnectError`` (nothing listening) is left to the
    caller.
    """
    out = Reads(start_ns=time.perf_counter_ns())
    state = {}
    # The timeout bounds the wait for the next token, not for the next network
    # read: a server that only sends keep-alive comments stalls all the same.
    last_token_ns = out.start_ns
    try:
        with client.stream("POST", url, json=body, timeout=timeout) as response:
            out.server = response.headers.get("server", "")
            if response.status_code != 200:
                text = response.read().decode("utf-8", "replace").strip()
                raise EndpointError(
                    f"HTTP {response.status_code}: {text[:300]}",
                    status=response.status_code,
                    retry_after=_seconds(response.headers.get("retry-after")),
                )
            kind = response.headers.get("content-type", "").partition(";")[0]
            if kind != "text/event-stream":
                raise EndpointError(
                    f"the response is {kind or 'untyped'}, not an event stream (text/event-stream)"
                )
            utf8 = codecs.getincrementaldecoder("utf-8")("replace")
            lines, events = SSELineDecoder(), SSEDecoder()
            for chunk in response.iter_bytes():
                now = time.perf_counter_ns()
                n_events, tokens = 0, 0
                for line in lines.decode(utf8.decode(chunk)):
                    sse = events.decode(line.rstrip("\n"))
                    if sse is None or sse.data.strip() in ("", "[DONE]"):
                        continue
                    try:
                        obj = json.loads(sse.data)
                    except ValueError:
                        raise EndpointError(f"malformed event {sse.data[:80]!r}") from None
                    if not isinstance(obj, dict):
                        raise EndpointError(f"malformed event {sse.data[:80]!r}")
                    if obj.get("error"):
                        raise EndpointError(f"the server reported an error: {obj['error']}")
                    carries, count = _event_tokens(obj, api, state)
                    if carries:
                        n_events += 1
                        tokens = None if tokens is None or count is None else tokens + count
                if n_events:
                    out.reads.append((now, n_events, tokens))
                    last_token_ns = now
                elif now - last_token_ns > timeout * 1e9:
                    raise EndpointError(
                        f"no token for {timeout} s (only keep-alive data): the request stalled"
                    )
            out.end_ns = time.perf_counter_ns()
    except httpx.TimeoutException:
        raise EndpointError(f"no data for {timeout} s: the request stalled") from None
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise EndpointError(f"the connection dropped mid-stream ({exc})") from None
    except httpx.DecodingError as exc:
        raise EndpointError(f"the response body could not be decoded ({exc})") from None
    out.finish_reason = state.get("finish_reason")
    out.completion_tokens = state.get("completion_tokens")
    out.prompt_tokens = state.get("prompt_tokens")
    if not out.reads:
        raise EndpointError("the stream carried no token")
    if out.finish_reason is None:
        raise EndpointError("the stream ended without a finish_reason (dropped?)")
    if out.completion_tokens is None:
        raise EndpointError(
            "the server reported no output token count (usage); profile with an --engine "
            "that asks for it"
        )
    events = sum(n for _, n, _ in out.reads)
    if events > out.completion_tokens:
        # Every event that carried text carried at least one token.
        raise EndpointError(
            f"the stream carried {events} token events but the server counted "
            f"{out.completion_tokens} output tokens"
        )
    return out


def measurement(reads):
    """``(ttft_ms, decode_ms, output_tokens, segments or None, why)`` of a
    :class:`Reads`, by the convention of :mod:`sklat.acquire._import._convention`:
    the first token's read ends the prefill; decode segments where each read's
    tokens are known, else totals only (``why`` says why)."""
    times = [t for t, _, _ in reads.reads]
    ttft = (times[0] - reads.start_ns) / 1e6
    decode = (times[-1] - times[0]) / 1e6
    n = reads.completion_tokens - 1
    if all(tokens is not None for _, _, tokens in reads.reads):
        counts = [tokens for _, _, tokens in reads.reads]
        why = "counted by the engine"
    elif sum(e for _, e, _ in reads.reads) == reads.completion_tokens:
        counts = [e for _, e, _ in reads.reads]
        why = "one token per event"
    else:
        return ttft, decode, n, None, "token counts per event unknown"
    if counts[0] != 1:
        raise EndpointError(
            f"the first read carried {counts[0]} tokens: its time mixes prefill and decode"
        )
    if sum(counts) != reads.completion_tokens:
        return ttft, decode, n, None, "event token counts disagree with usage"
    gaps = [(b - a) / 1e6 for a, b in zip(times, times[1:])]
    return ttft, decode, n, (counts[1:], gaps), why
