"""The one convention every importer follows, and the per-file summary.

- Time to first token is the prefill (``T_prefill_total``).
- ``output_tokens`` is the number of tokens after the first (as ``sklat
  profile`` counts decode steps).
- Decode time (``T_LLM_decode``) is end-to-end minus time to first token. When
  the gaps between streamed events are recorded, they run from the first to
  the last token, and their sum is that time (a tool's end-to-end may also
  cover a closing message that carries no token).
- Each event's token count is used where the tool records it. Where it does
  not and there is one gap per token (``len(gaps) == output_tokens``), each
  gap is one token. Where the counts cannot be known, the request is kept as
  its totals only. Events that arrived together (a gap of exactly 0) are
  joined into one segment; the times are unchanged.
- A request the tool marks as failed, or that produced no decode step, is kept
  out; the summary counts it. Nothing is invented.
- Where the tool records when each request was in flight (its start and end),
  ``concurrency`` is the time-weighted mean number of the run's requests in
  flight, itself included, from the request's first token to its last (its
  decode), as ``sklat profile --endpoint`` measures it; ``in_flight_at_start``
  and ``waiting_at_start`` count the run's requests in flight at its start and
  those of them before their first token (a failed request waits to its end),
  itself included. Where it does not, the run's setting (``max_concurrency``,
  ``request_rate``) stays a column and the summary says that concurrency was
  not reconstructed.
"""

import math
from collections import Counter

import numpy as np

from ..._constants import (
    DECODE_COL,
    MAX_OUTPUT_TOKENS,
    OUTPUT_TOKENS_COL,
    PREFILL_COL,
    SEGMENT_MS_COL,
    SEGMENT_TOKENS_COL,
)
from ...exceptions import BenchmarkFormatError
from .._load import at_start, mean_in_flight

# Descriptive columns of an imported request: kept, never features unless a
# user names them.
DESCRIPTIVE_COLUMNS = (
    "tool",
    "model",
    "backend",
    "request_rate",
    "max_concurrency",
    "source_file",
    "run",
    "request_index",
)
# The load each request met, where the tool records when requests were in flight.
LOAD_COLUMNS = ("concurrency", "in_flight_at_start", "waiting_at_start")
# Columns of an imported file, in order; those a tool may not record (left out
# of the frame when no request has them) are the optional descriptive ones.
IMPORT_COLUMNS = (
    "text_tokens",
    OUTPUT_TOKENS_COL,
    PREFILL_COL,
    DECODE_COL,
    SEGMENT_TOKENS_COL,
    SEGMENT_MS_COL,
    *LOAD_COLUMNS,
    *DESCRIPTIVE_COLUMNS,
)
OPTIONAL_COLUMNS = (*LOAD_COLUMNS, "model", "backend", "request_rate", "max_concurrency", "run")
TIME_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "sec": 1000.0}
# No request of a serving benchmark lasts a day: a longer time is a unit or a
# file gone wrong, not a measurement.
MAX_TIME_MS = 86_400_000.0

ERRORED = "errored"
NO_DECODE = "one output token: no decode step"
FIRST_EVENT = "first event carried several tokens: its time mixes prefill and decode"
MORE_EVENTS = "more token-carrying events than output tokens: the counts disagree"
UNKNOWN_COUNTS = "token counts per event not recorded"
TOTALS_ONLY_TOOL = "the tool records per-request totals only"
NO_GAPS = "no inter-event gaps recorded"


class Importer:
    """Collects the rows of one file and accounts for every request read."""

    def __init__(self, path, tool):
        self.path = str(path)
        self.tool = tool
        self.rows = []
        self.read = 0
        self.kept_out = Counter()
        self.totals_only = Counter()
        self.notes = []
        # Per run: the (start, end) times in flight of its requests, and the
        # rows whose decode window ``(first token, last token)`` is known.
        self.in_flight = {}
        self.windows = {}
        self.not_reconstructed = None

    def where(self, key, index, entry=None):
        """Location of a value for an error message."""
        at = f"{self.path}: key {key!r}, request {index}"
        return at if entry is None else f"{at}, entry {entry}"

    def number(self, value, key, index, *, unit=1.0, positive=False, entry=None, time=True):
        """A recorded time (times ``unit``, to ms; at most a day) or, with
        ``time=False``, a count, checked."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BenchmarkFormatError(
                f"{self.where(key, index, entry)}: expected a number, got {value!r}."
            )
        recorded, value = value, float(value) * unit
        # Checked as recorded: a finite time can overflow to inf in ms, and is
        # then too long rather than not a number.
        if not math.isfinite(recorded) or recorded < 0 or (positive and recorded == 0):
            need = "> 0" if positive else ">= 0"
            # The value as the file records it, in the file's unit.
            raise BenchmarkFormatError(
                f"{self.where(key, index, entry)}: expected a finite number {need}, "
                f"got {recorded!r}."
            )
        if time and value > MAX_TIME_MS:
            raise BenchmarkFormatError(
                f"{self.where(key, index, entry)}: {recorded!r} ({value:g} ms) is more than a "
                "day; not a request's time (a wrong unit?)."
            )
        return value

    def count(self, value, key, index):
        """A token count: an integer in ``0..MAX_OUTPUT_TOKENS + 1``."""
        number = self.number(value, key, index, time=False)
        if number != int(number) or number > MAX_OUTPUT_TOKENS + 1:
            raise BenchmarkFormatError(
                f"{self.where(key, index)}: expected a token count (an integer up to "
                f"{MAX_OUTPUT_TOKENS + 1}), got {value!r}."
            )
        return int(number)

    def gaps(self, values, key, index, unit=1.0):
        """A list of gaps between events, in ms (checked at numpy speed; the
        first bad entry is named)."""
        if not isinstance(values, list):
            raise BenchmarkFormatError(
                f"{self.where(key, index)}: expected a list of gaps, got {type(values).__name__}."
            )
        if len(values) > MAX_OUTPUT_TOKENS:
            raise BenchmarkFormatError(
                f"{self.where(key, index)}: {len(values)} gaps, more than "
                f"MAX_OUTPUT_TOKENS ({MAX_OUTPUT_TOKENS})."
            )
        # Numbers only: numpy would read "0.5" as 0.5 and True as 1.
        try:
            arr = np.array(values)
            numeric = arr.dtype.kind in "iuf" and not any(isinstance(v, bool) for v in values)
        except (TypeError, ValueError):
            numeric = False
        if not numeric or arr.ndim != 1:
            for j, v in enumerate(values):
                self.number(v, key, index, entry=j)
        arr = arr.astype(np.float64) * unit
        bad = ~np.isfinite(arr) | (arr < 0) | (arr > MAX_TIME_MS)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            self.number(values[j], key, index, unit=unit, entry=j)
        return arr

    def error(self, index, reason=ERRORED):
        """A request kept out (failed, or no decode step)."""
        self.read += 1
        self.kept_out[reason] += 1

    def add(
        self,
        index,
        *,
        ttft_ms,
        completion_tokens,
        decode_ms=None,
        gaps_ms=None,
        gap_tokens=None,
        prompt_tokens=None,
        totals_reason=None,
        window=None,
        **descriptive,
    ):
        """One successful request, by the convention of this module.

        ``completion_tokens`` counts every output token, the first included;
        ``gaps_ms`` are the gaps between consecutive events after the first
        (``gap_tokens`` their token counts, where recorded); ``decode_ms`` is
        end-to-end minus time to first token, for tools without gaps;
        ``window``: ``(run, first token time, last token time, flight)`` in
        the run's clock, where the tool records it; ``flight``: the index
        :meth:`flight` gave the request's time in flight.
        """
        self.read += 1
        n = completion_tokens - 1
        if n < 1:
            self.kept_out[NO_DECODE] += 1
            return
        segments = None
        if gaps_ms is not None:
            if gap_tokens is not None:
                gap_tokens = np.asarray(gap_tokens, dtype=np.int64)
                if gap_tokens.sum() < n:
                    self.kept_out[FIRST_EVENT] += 1
                    return
                if gap_tokens.sum() == n:
                    segments = _join_simultaneous(gap_tokens, gaps_ms)
                else:
                    totals_reason = UNKNOWN_COUNTS
            elif len(gaps_ms) > n:
                # Every recorded gap ends at an event that carried a token.
                self.kept_out[MORE_EVENTS] += 1
                return
            elif len(gaps_ms) == n:
                segments = _join_simultaneous(np.ones(n, dtype=np.int64), gaps_ms)
            else:
                totals_reason = totals_reason or UNKNOWN_COUNTS
            decode_ms = float(gaps_ms.sum())
        elif totals_reason is None:
            totals_reason = NO_GAPS
        if decode_ms == 0:
            # Every token after the first came at the instant of the first
            # (a reply sent whole, or one event): the first event carried
            # them all.
            self.kept_out[FIRST_EVENT] += 1
            return
        if decode_ms is None or not decode_ms > 0:
            raise BenchmarkFormatError(
                f"{self.path}: request {index}: decode time {decode_ms!r} ms for {n} tokens "
                "after the first; expected a time > 0."
            )
        if segments is None:
            self.totals_only[totals_reason] += 1
        if window is not None:
            run, first, last, flight = window
            self.windows.setdefault(run, []).append((len(self.rows), first, last, flight))
        self.rows.append(
            {
                "text_tokens": prompt_tokens,
                OUTPUT_TOKENS_COL: n,
                PREFILL_COL: ttft_ms,
                DECODE_COL: decode_ms,
                SEGMENT_TOKENS_COL: None if segments is None else segments[0],
                SEGMENT_MS_COL: None if segments is None else segments[1],
                "tool": self.tool,
                "source_file": self.path,
                "request_index": index,
                **descriptive,
            }
        )

    def flight(self, run, start, end):
        """Request of ``run`` in flight from ``start`` to ``end`` (the run's
        clock, any unit its windows share); returns its index in the run."""
        flights = self.in_flight.setdefault(run, [])
        flights.append((start, end))
        return len(flights) - 1

    def recorded_flight(self, run, start, end, keys, index):
        """Give the importer a request's recorded ``start`` and ``end`` (named
        ``keys`` in messages) and return them checked, with the index
        :meth:`flight` gave them, ``(start, end, flight)``; None (and no
        reconstruction for the file) where either is not recorded."""
        if start is None or end is None:
            self.cannot_reconstruct(f"a request without {keys[0]} or {keys[1]}")
            return None
        start = self.number(start, keys[0], index, time=False)
        end = self.number(end, keys[1], index, time=False)
        if end < start:
            raise BenchmarkFormatError(
                f"{self.where(keys[1], index)}: {end!r} is before its {keys[0]} {start!r}."
            )
        return start, end, self.flight(run, start, end)

    def cannot_reconstruct(self, why):
        """Concurrency is not reconstructed for this file, because ``why``."""
        self.not_reconstructed = why

    def finish(self):
        """Give each row whose window is known its measured ``concurrency``."""
        if self.not_reconstructed is not None:
            self.notes.append(f"concurrency not reconstructed ({self.not_reconstructed})")
            return
        reconstructed = 0
        for run, windows in self.windows.items():
            times = np.asarray(self.in_flight.get(run, []), dtype=np.float64).reshape(-1, 2)
            starts, ends = times[:, 0], times[:, 1]
            # Each request waits for its first token until it comes; one
            # without a window (failed, or kept out) waits to its end.
            firsts = ends.copy()
            for _, first, _, flight in windows:
                firsts[flight] = first
            counts = at_start(starts, ends, firsts, [starts[w[3]] for w in windows])
            means = mean_in_flight(starts, ends, [w[1] for w in windows], [w[2] for w in windows])
            for (row, *_), mean, in_flight, waiting in zip(windows, means, *counts):
                record = self.rows[row]
                record["concurrency"] = round(float(mean), 6)
                record["in_flight_at_start"], record["waiting_at_start"] = (
                    int(in_flight),
                    int(waiting),
                )
                reconstructed += 1
        if reconstructed:
            self.notes.append(
                f"concurrency reconstructed for {reconstructed} requests from their times in flight"
            )
        elif self.rows:
            self.notes.append("concurrency not reconstructed (the tool records no request times)")

    def summary(self):
        """What happened to every request of the file (a dict)."""
        with_segments = len(self.rows) - sum(self.totals_only.values())
        return {
            "file": self.path,
            "tool": self.tool,
            "read": self.read,
            "imported": len(self.rows),
            "with_segments": with_segments,
            "totals_only": dict(self.totals_only),
            "kept_out": dict(self.kept_out),
            "notes": list(self.notes),
        }


def _join_simultaneous(tokens, ms):
    """Segments ``(tokens, ms)`` with zero-time events joined to a neighbour:
    events that arrived together share one measured time."""
    tokens, ms = np.asarray(tokens, dtype=np.int64), np.asarray(ms, dtype=np.float64)
    if not (ms == 0).any():
        return tokens.tolist(), ms.tolist()
    out_tokens, out_ms = [], []
    carry = 0
    for k, t in zip(tokens, ms):
        if t == 0:
            if out_tokens:
                out_tokens[-1] += int(k)
            else:
                carry += int(k)
            continue
        out_tokens.append(int(k) + carry)
        out_ms.append(float(t))
        carry = 0
    if not out_tokens:
        return None
    out_tokens[-1] += carry
    return out_tokens, out_ms


def summary_line(summary):
    """One line accounting for every request of a file."""
    parts = [f"{summary['read']} read", f"{summary['imported']} imported"]
    detail = [f"{summary['with_segments']} with segments"]
    for reason, k in sorted(summary["totals_only"].items()):
        detail.append(f"{k} totals only ({reason})")
    parts[-1] += " (" + ", ".join(detail) + ")"
    errored = summary["kept_out"].get(ERRORED, 0)
    parts.append(f"{errored} errored (kept out)")
    for reason, k in sorted(summary["kept_out"].items()):
        if reason != ERRORED:
            parts.append(f"{k} kept out ({reason})")
    line = f"{summary['file']} [{summary['tool']}]: " + ", ".join(parts)
    for note in summary["notes"]:
        line += f"; {note}"
    return line
