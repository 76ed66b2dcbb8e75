"""The load a profiled request ran under: the sweep's levels, how each level
sends its requests, and the load each request saw.

A level is closed loop (``max_concurrency``: that many requests in flight, a
new one sent as one ends) or open loop (``request_rate``: requests sent at
seeded Poisson arrival times whatever is in flight, as vLLM's and GuideLLM's
benchmarks send them). Every request records when it was in flight; its
``concurrency`` is the time-weighted mean number of this client's requests in
flight (itself included) from its first token to its end, the stretch its
decode ran in, computed from those times rather than taken from the setting.
What a router sees when it sends a request is recorded too (:func:`at_start`):
the requests in flight at that instant, and how many of them still wait for
their first token (the queue its own prefill joins).
"""

import math
import numbers
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .._results import first_repeated

# Threads of an open-loop level: requests beyond this many in flight wait for
# a free thread (and their measured load says so).
MAX_OPEN_LOOP_THREADS = 256


@dataclass(frozen=True)
class Level:
    """One load setting: ``max_concurrency`` (closed loop) or ``request_rate``
    (requests per second, open loop); the other is None."""

    max_concurrency: int | None = None
    request_rate: float | None = None

    def __str__(self):
        if self.max_concurrency is not None:
            return f"concurrency {self.max_concurrency}"
        return f"request rate {self.request_rate:g}/s"


def check_levels(concurrency, request_rate):
    """The sweep's levels: each ``concurrency`` (an integer >= 1, or a list of
    them), then each ``request_rate`` (a finite number > 0, or a list); None
    gives none of that kind. Raises ``ValueError`` naming the first bad entry."""
    levels = []
    for value in _entries(concurrency, "concurrency"):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"concurrency must be integers >= 1; got {value!r}.")
        levels.append(Level(max_concurrency=int(value)))
    for value in _entries(request_rate, "request_rate"):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(
                f"request_rate must be finite numbers of requests per second > 0; got {value!r}."
            )
        levels.append(Level(request_rate=float(value)))
    if not levels:
        raise ValueError("give at least one load level: concurrency or request_rate.")
    twice = first_repeated(levels)
    if twice is not None:
        raise ValueError(f"a load level is listed twice: {twice}.")
    return levels


def _entries(values, name):
    if values is None:
        return []
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a number or a list of numbers; got {values!r}.")
    if isinstance(values, numbers.Number):
        return [values]
    entries = list(values)
    if not entries:
        raise ValueError(f"{name} must not be an empty list.")
    return entries


def arrival_times(n, rate, seed):
    """Seconds after the level's start at which its ``n`` requests are sent:
    a Poisson process of ``rate`` per second, seeded."""
    gaps = np.random.RandomState([seed, int(rate * 1000) % 2**32]).exponential(1.0 / rate, n)
    return np.concatenate(([0.0], np.cumsum(gaps)[:-1])) if n else gaps


def run_level(run, jobs, level, seed):
    """Run ``run(job)`` for every job: with ``max_concurrency`` threads, or
    sent at Poisson arrival times. On Ctrl-C or an error, jobs not yet sent
    are dropped; those in flight finish."""
    if level.max_concurrency is not None:
        pool = ThreadPoolExecutor(level.max_concurrency)
        submit_at = None
    else:
        pool = ThreadPoolExecutor(min(max(len(jobs), 1), MAX_OPEN_LOOP_THREADS))
        submit_at = arrival_times(len(jobs), level.request_rate, seed)
    start = time.monotonic()
    futures = []
    try:
        for k, job in enumerate(jobs):
            if submit_at is not None:
                time.sleep(max(0.0, start + submit_at[k] - time.monotonic()))
            futures.append(pool.submit(run, job))
        for future in futures:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class InFlight:
    """The intervals (``perf_counter_ns`` start and end) during which this
    client had requests in flight at one level, from any thread, with each
    one's first token (None: it had none)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._starts, self._ends, self._firsts = [], [], []

    def add(self, start_ns, end_ns, first_ns=None):
        with self._lock:
            self._starts.append(start_ns)
            self._ends.append(end_ns)
            self._firsts.append(end_ns if first_ns is None else first_ns)

    def intervals(self):
        """``(starts, ends)``: float64 arrays of the intervals so far."""
        with self._lock:
            return (
                np.asarray(self._starts, dtype=np.float64),
                np.asarray(self._ends, dtype=np.float64),
            )

    def first_tokens(self):
        """Float64 array of each interval's first token (its end where it
        had none), in the order of :meth:`intervals`."""
        with self._lock:
            return np.asarray(self._firsts, dtype=np.float64)


def mean_in_flight(starts, ends, window_starts, window_ends):
    """Time-weighted mean count of the intervals ``[starts, ends)`` over each
    window ``[window_starts[i], window_ends[i]]`` (float64 array); for an
    empty window, the count of intervals that hold its instant, ends included
    (a one-token request's decode window is the instant its own interval
    ends: it counts itself).

    Every window at once in ``O((n + m) log n)``, from the integral of the
    count over time at each of the sorted interval edges: a window's mean is
    the difference of that integral at its two ends over its length. The
    integral is accumulated edge to edge from the first start (counts times
    gaps, not sums of the times themselves), so its rounding stays relative to
    the run's busy time rather than to the clock's epoch."""
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    lo = np.atleast_1d(np.asarray(window_starts, dtype=np.float64))
    hi = np.atleast_1d(np.asarray(window_ends, dtype=np.float64))
    if starts.size == 0:
        return np.zeros(lo.shape)
    origin = starts.min()
    edges = np.concatenate([starts, ends]) - origin
    order = np.argsort(edges, kind="stable")
    edges = edges[order]
    count = np.cumsum(np.concatenate([np.ones(starts.size), -np.ones(ends.size)])[order])
    area = np.concatenate([[0.0], np.cumsum(count[:-1] * np.diff(edges))])

    def integral(t):
        # The count is count[k] from edges[k] to the next edge; before the
        # first start it is zero.
        k = np.searchsorted(edges, t, side="right") - 1
        inside = k >= 0
        k = np.maximum(k, 0)
        return np.where(inside, area[k] + count[k] * (t - edges[k]), 0.0)

    lo, hi = lo - origin, hi - origin
    length = hi - lo
    empty = length <= 0
    mean = (integral(hi) - integral(lo)) / np.where(empty, 1.0, length)
    sorted_starts, sorted_ends = np.sort(starts - origin), np.sort(ends - origin)
    holding = np.searchsorted(sorted_starts, lo, side="right") - np.searchsorted(
        sorted_ends, lo, side="left"
    )
    return np.where(empty, holding, mean)


def at_start(starts, ends, firsts, sent):
    """``(in flight, waiting)``, int arrays, at each instant of ``sent`` a
    request was sent: the intervals ``[starts, ends)`` that hold it, and those
    of them before their first token (``firsts``; an interval without one
    waits to its end). The request sent at an instant is one of the
    intervals, so both count it.

    Counted from the sorted times, in ``O(n log n)`` for every instant
    together: an interval that holds ``s`` has started by ``s`` and not ended,
    and one still waiting has not had its first token either (which comes
    between its start and its end)."""
    sent = np.asarray(sent, dtype=np.float64)

    def by(times):
        return np.searchsorted(np.sort(times), sent, side="right")

    started = by(starts)
    return started - by(ends), started - by(np.clip(firsts, starts, ends))
