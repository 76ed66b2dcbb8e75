"""Split-conformal calibration: the arithmetic of scores, ranks, difficulty
trees, mixture quantiles and attainment (:class:`sklat._calibrator.Calibrator`
holds a fitted model's calibration and applies it).

A request's conformity score is its signed log error, normalised by how hard
the model finds requests like it::

    e = (log y - log y_hat) / sigma(x, N)

``sigma`` is a shallow regression tree of ``log |log y - log y_hat|`` on the
standardised features and ``log N`` of the *training* requests (never the
calibration requests, so the scores of the calibration requests and of a new
request stay exchangeable): it finds the few inputs that make a request hard
(a noisy tier among quiet ones, short outputs), ignores the others, and is
bounded by the training errors however far a request lies from the data.
The calibration requests' scores then give, for any new request, the
predictive distribution ``y_hat * exp(sigma * e_i)``: its order statistics are
the interval bounds (finite-sample coverage), its empirical mean of an event is
the event's probability.
"""

import math

import numpy as np

from ._validation import first_non_finite

# Residuals below this fraction of the median residual count as that floor:
# log|r| of a near-zero residual would dominate a mean of logs.
_RESIDUAL_FLOOR = 0.1
# The difficulty tree: its depth (a complete binary tree of 2**depth - 1
# nodes, stored as such) and the smallest share of the training requests in a
# leaf (the mean log error of fewer requests is mostly noise).
TREE_DEPTH = 4
TREE_NODES = 2**TREE_DEPTH - 1
_MIN_LEAF_SHARE = 0.05
_MIN_LEAF = 10
# Bisection steps of a mixture quantile: halves the log-range 60 times, past
# float precision.
_BISECTIONS = 60
# Values evaluated at once by the mixture computations.
_CHUNK_ELEMENTS = 2_000_000
# Largest mixture support (output lengths x scores) whose quantiles are found
# by sorting it (exact, and faster there than bisection), and most lengths
# (their index is carried in the lowest 12 mantissa bits).
_SORTED_SUPPORT = 262_144
_SORTED_LENGTHS = 4096
# A few quantiles of a support larger than this (one configuration's bounds)
# are narrowed by bisection and then read off the few values left, which
# beats sorting the whole support.
_FEW_QUANTILES = 8
_SMALL_SUPPORT = 16384
# Values left in a narrowed bracket, on average over the support's range:
# sorting them costs less than the bisection steps that would narrow it more.
_VALUES_LEFT = 512
# Lengths x calibration requests per row above which an end-to-end attainment
# sorts each row's keys (a binary search per length) instead of evaluating
# every (length, request) pair: the pairs cost about 10 ns each, a row of the
# sorted path a few microseconds.
_COUPLED_PAIRS = 1024
# Lengths per calibration request above which a mixture quantile's CDF
# (:func:`_runs_cdf`) and an attainment over an output-length distribution
# count, per calibration request, the lengths it meets by a binary search among
# the sorted lengths, instead of the requests each length meets (measured
# crossover: 2-4 lengths per request).
_LENGTHS_PER_REQUEST = 3
# Ranks are computed from (n + 1) * level; a level such as 1 - 0.9 is not exact
# in binary, and must not move a rank by one.
_RANK_TOLERANCE = 1e-9


# Fewest out-of-sample errors a point factor is fitted on. A weighted median
# of a handful of errors is noisier than the skew it corrects: on
# benchmarks/recalibration.py a factor fitted on the one calibration request
# of a 5-request fit made it much worse.
MIN_POINT_ERRORS = 20


def relative_error_factor(log_errors):
    """The multiplier ``k`` of a prediction that minimises the mean relative
    error ``mean(|k - exp(e)| / exp(e))`` over out-of-sample signed log
    errors ``e = log(measured / predicted)``: the median of ``exp(e)``
    weighted by ``exp(-e)`` (the lowest minimiser); 1 with fewer than
    ``MIN_POINT_ERRORS`` errors.

    Under a right-skewed error distribution (steps slowed by a busy machine,
    never sped up as much) this is below 1: the point with the least expected
    relative error sits below the centre the log loss fits."""
    e = np.sort(np.asarray(log_errors, dtype=np.float64))
    if len(e) < MIN_POINT_ERRORS:
        return 1.0
    cumulative = np.cumsum(np.exp(-e))
    return float(np.exp(e[np.searchsorted(cumulative, 0.5 * cumulative[-1])]))


def position_bound(scores, confidence, what):
    """The absolute log error bounding per-step latencies at ``confidence``:
    the weighted quantile of the calibration requests' steps at the level of
    the ``ceil((n + 1) confidence)``-th of ``n`` requests."""
    n = int(round(scores[:, 1].sum()))
    k = interval_rank(n, confidence, what)
    order = np.argsort(scores[:, 0], kind="stable")
    cumulative = np.cumsum(scores[order, 1])
    i = int(np.searchsorted(cumulative, k - _RANK_TOLERANCE * n, side="left"))
    return float(scores[order[min(i, len(order) - 1)], 0])


def difficulty_inputs(z, output_tokens):
    """Inputs of the difficulty trees: standardised features and ``log N``."""
    log_n = np.log(np.asarray(output_tokens, dtype=np.float64))
    return np.column_stack([z.astype(np.float64), log_n])


def fit_difficulty(inputs, residuals):
    """A regression tree of ``log(|r| + floor)`` on ``inputs``, as a
    (3, TREE_NODES) array: per node of a complete binary tree (children of
    node ``i``: ``2i + 1`` if ``input <= threshold``, else ``2i + 2``) its
    input index (``-1``: a leaf), threshold and value. Values are shifted so
    that the median ``sigma`` of the training requests is 1 (scores stay in
    log-ratio units)."""
    from sklearn.tree import DecisionTreeRegressor

    a = np.abs(residuals)
    target = np.log(a + max(_RESIDUAL_FLOOR * float(np.median(a)), 1e-12))
    tree = DecisionTreeRegressor(
        max_depth=TREE_DEPTH - 1,
        min_samples_leaf=max(_MIN_LEAF, int(_MIN_LEAF_SHARE * len(target))),
        random_state=0,
    ).fit(inputs, target)
    t = tree.tree_
    out = np.zeros((3, TREE_NODES))
    out[0] = -1
    stack = [(0, 0)]  # (sklearn node, complete-tree node)
    while stack:
        node, slot = stack.pop()
        out[2, slot] = t.value[node, 0, 0]
        if t.children_left[node] >= 0:
            out[0, slot], out[1, slot] = t.feature[node], t.threshold[node]
            stack += [(t.children_left[node], 2 * slot + 1), (t.children_right[node], 2 * slot + 2)]
    out[2] -= np.median(tree_value(out, inputs))
    return out


def tree_value(tree, inputs):
    """The value of ``tree`` (see :func:`fit_difficulty`) at each row of ``inputs``."""
    if tree[0, 0] < 0:  # a single leaf
        return np.full(len(inputs), tree[2, 0])
    feature, threshold, value = tree[0].astype(np.int64), tree[1], tree[2]
    # The comparisons of scikit-learn's trees, which read inputs as float32.
    x = inputs.astype(np.float32)
    rows = np.arange(len(x))
    node = np.zeros(len(x), dtype=np.int64)
    for _ in range(TREE_DEPTH - 1):
        f = feature[node]
        leaf = f < 0
        left = x[rows, np.maximum(f, 0)] <= threshold[node]
        node = np.where(leaf, node, 2 * node + 1 + ~left)
    return value[node]


def check_confidence(confidence, name="confidence", example=0.9):
    """``confidence`` as a float in (0, 1); ``example``: a typical value,
    said in the error (a significance level's is small)."""
    if (
        isinstance(confidence, (bool, np.bool_))
        or not isinstance(confidence, (int, float, np.integer, np.floating))
        or not 0 < confidence < 1
    ):
        raise ValueError(f"{name} must be a number in (0, 1), e.g. {example}; got {confidence!r}.")
    return float(confidence)


def _ceil(x):
    return math.ceil(x - _RANK_TOLERANCE)


def min_calibration(confidence):
    """Fewest calibration requests giving a finite interval of ``confidence``
    (for a two-sided interval and for a one-sided bound alike)."""
    return _ceil(1.0 / (1.0 - confidence)) - 1


def interval_rank(n, confidence, what):
    """1-based rank ``k = ceil((n + 1) * confidence)`` of the calibration score
    that bounds an interval of ``confidence``: of the absolute scores for a
    two-sided interval, of the signed scores for a one-sided upper bound."""
    k = _ceil((n + 1) * confidence)
    if k > n:
        _too_few(n, min_calibration(confidence), confidence, what)
    return k


def symmetric(scores):
    """Sorted ``-|e|`` and ``|e|`` of the scores: the predictive distribution
    of a symmetric interval (``|e|_(k)`` has rank ``n + k`` of ``2n``)."""
    a = np.abs(scores)
    return np.sort(np.concatenate([-a, a]))


def _too_few(n, needed, confidence, what):
    raise ValueError(
        f"confidence={confidence:g} needs at least {needed} calibration requests "
        f"{what}; this model has {n}. Fit on more requests or raise calibration_fraction "
        "(a recalibrated model: recalibrate it on more requests)."
    )


def mixture_quantiles(center, sigma, weights, scores, levels):
    """Quantiles at ``levels`` of the mixture
    ``sum_j weights_j * ECDF_i(center_j * exp(sigma_j * e_i))``: (rows, n_levels).

    ``center`` and ``sigma`` are (rows, J) (J output lengths with probabilities
    ``weights``), ``scores`` the sorted scores. The quantile at ``level`` is the
    smallest value whose mixture CDF reaches it: with ``J == 1`` and
    ``level = k / n``, exactly ``center * exp(sigma * e_(k))``; with several
    lengths, found by bisection in log units to float precision (each step
    counts scores below a threshold with a binary search, instead of sorting
    all ``J x n`` values).
    """
    levels = np.asarray(levels, dtype=np.float64)
    rows, J = center.shape
    n = len(scores)
    if J == 1:
        k = np.clip(np.ceil(levels * n - _RANK_TOLERANCE).astype(np.int64), 1, n)
        return center[:, :1] * np.exp(sigma[:, :1] * scores[k - 1][None, :])
    log_center = np.log(center)
    if rows * len(levels) <= _FEW_QUANTILES and J * n > _SMALL_SUPPORT:
        return _narrowed_mixture_quantiles(log_center, sigma, weights, scores, levels)
    if J * n <= _SORTED_SUPPORT and J <= _SORTED_LENGTHS:
        return _sorted_mixture_quantiles(log_center, sigma, weights, scores, levels)
    out = np.empty((rows, len(levels)))
    step = max(1, _CHUNK_ELEMENTS // (J * len(levels) * 8))
    for start in range(0, rows, step):
        sl = slice(start, start + step)
        lc, sg = log_center[sl], sigma[sl]
        # The answer lies between the smallest and the largest value.
        low = (lc + sg * scores[0]).min(axis=1)
        high = (lc + sg * scores[-1]).max(axis=1)
        a = np.repeat(low[:, None], len(levels), axis=1)
        a -= _RANK_TOLERANCE * (1.0 + np.abs(a))
        b = np.repeat(high[:, None], len(levels), axis=1)
        for _ in range(_BISECTIONS):
            mid = 0.5 * (a + b)
            reached = _mixture_cdf(mid, lc, sg, weights, scores) >= levels - _RANK_TOLERANCE
            b = np.where(reached, mid, b)
            a = np.where(reached, a, mid)
        out[sl] = np.exp(b)
    return out


def quantile_ranks(n, levels):
    """1-based ranks among ``n`` sorted scores of the quantiles at ``levels``:
    the smallest ``k`` with ``k / n >= level``."""
    levels = np.asarray(levels, dtype=np.float64)
    return np.clip(np.ceil(levels * n - _RANK_TOLERANCE).astype(np.int64), 1, n)


def joint_quantiles(prefill, prefill_sigma, total, total_sigma, weights, scores, levels):
    """Quantiles at ``levels`` of the end-to-end latency, prefill plus decode
    total, of each row: (rows, L). Calibration request ``i`` with its
    (decode, prefill) scores ``scores[i]`` gives, at length ``j`` (probability
    ``weights_j``), the value ``prefill exp(prefill_sigma e_i1) + total_j
    exp(total_sigma_j e_i0)``: the prefill and the decode keep the joint
    behaviour of the calibration requests. ``total``/``total_sigma`` are
    (rows, J)."""
    levels = np.asarray(levels, dtype=np.float64)
    rows, J = total.shape
    n = len(scores)
    out = np.empty((rows, len(levels)))
    mass = np.repeat(np.asarray(weights, dtype=np.float64), n) / n
    step = max(1, _CHUNK_ELEMENTS // (J * n))
    for start in range(0, rows, step):
        sl = slice(start, start + step)
        pre = prefill[sl, None, None] * np.exp(prefill_sigma[sl, None, None] * scores[:, 1])
        dec = total[sl, :, None] * np.exp(total_sigma[sl, :, None] * scores[:, 0])
        values = (pre + dec).reshape(len(pre), J * n)
        order = np.argsort(values, axis=1, kind="stable")
        cdf = np.cumsum(mass[order], axis=1)
        first = np.minimum(
            (cdf[:, :, None] < levels[None, None, :] - _RANK_TOLERANCE).sum(axis=1), J * n - 1
        )
        out[sl] = np.take_along_axis(np.take_along_axis(values, order, axis=1), first, axis=1)
    return out


def _mixture_cdf(values, lc, sg, weights, scores):
    """The mixture CDF at log ``values`` (rows, L), per row's ``lc`` / ``sg`` (rows, J)."""
    below = np.searchsorted(
        scores, (values[:, :, None] - lc[:, None, :]) / sg[:, None, :], side="right"
    )
    return (below @ weights) / len(scores)


def _narrowed_mixture_quantiles(log_center, sigma, weights, scores, levels):
    """:func:`mixture_quantiles` of a few rows and levels, exactly: bisection
    narrows each quantile to a bracket holding few of the mixture's values
    (each length's scores in it are found by a binary search), and the first
    of those values whose mixture CDF reaches the level is the quantile."""
    rows, J = log_center.shape
    out = np.empty((rows, len(levels)))
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    # Counting lengths per calibration request pays where the lengths
    # outnumber the requests several times (measured crossover about 3x).
    by_request = J > _LENGTHS_PER_REQUEST * len(scores)
    # Decode totals grow with the length: their log centres never fall within
    # a run of equal difficulty.
    runs, rising, _ = _shared_runs(log_center, sigma) if by_request else (None, None, None)
    n = len(scores)
    threshold = levels - _RANK_TOLERANCE
    for r in range(rows):
        lc, sg = log_center[r], sigma[r]

        def cdf(values, lc=lc, sg=sg, sorted_runs=by_request and rising[r]):
            """The mixture CDF at log ``values`` (m,), as :func:`_mixture_cdf`."""
            if not sorted_runs:
                return (
                    np.searchsorted(scores, (values[:, None] - lc) / sg, side="right") @ weights
                ) / n
            return _runs_cdf(values[None, :], lc, sg, runs, cumulative, scores)[0]

        a = np.full(len(levels), (lc + sg * scores[0]).min())
        a -= _RANK_TOLERANCE * (1.0 + np.abs(a))
        b = np.full(len(levels), (lc + sg * scores[-1]).max())
        # The mixture CDF at a (nothing lies below the first a).
        below = np.zeros(len(levels))
        for _ in range(max(int(np.ceil(np.log2(J * n / _VALUES_LEFT))), 0)):
            mid = 0.5 * (a + b)
            at_mid = cdf(mid)
            reached = at_mid >= threshold
            b = np.where(reached, mid, b)
            a = np.where(reached, a, mid)
            below = np.where(reached, below, at_mid)
        for q in range(len(levels)):
            # The values in (a, b], with a margin for the rounding of the
            # division, sorted, and the lengths they belong to.
            low, high = (a[q] - lc) / sg, (b[q] - lc) / sg
            margin = _RANK_TOLERANCE * 1e-3 * (1.0 + np.abs(high))
            first = np.searchsorted(scores, low - margin, side="right")
            last = np.searchsorted(scores, high + margin, side="right")
            owner = np.repeat(np.arange(J), last - first)
            offsets = np.concatenate(([0], np.cumsum(last - first)))
            index = np.arange(offsets[-1]) - np.repeat(offsets[:-1], last - first)
            values = lc[owner] + sg[owner] * scores[first[owner] + index]
            order = np.argsort(values, kind="stable")
            values, owner = values[order], owner[order]
            at = values + _RANK_TOLERANCE * 1e-3 * (1.0 + np.abs(values))
            # The CDF at a plus the weights of the values up to each one.
            guess = below[q] + np.cumsum(weights[owner]) / n
            t = first_reaching(at, guess, threshold[q], cdf)
            out[r, q] = np.exp(values[t] if t is not None else b[q])
    return out


def first_reaching(at, guess, threshold, cdf):
    """The index of the first of sorted values whose mixture CDF (``cdf`` at
    ``at``, just past each value) reaches ``threshold``, or None.

    ``guess`` (the CDF below the values plus the running sum of their
    weights) points at it; the CDF itself at that value and at the one before
    confirms it, two evaluations instead of one per value. Where rounding puts
    a value on both sides of the bracket's start the guess can be off: then
    the CDF at every value decides."""
    t = int(np.searchsorted(guess, threshold, side="left"))
    if t < len(at):
        check = cdf(at[[max(t - 1, 0), t]]) >= threshold
        if check[1] and (t == 0 or not check[0]):
            return t
    reached = cdf(at) >= threshold
    return int(np.argmax(reached)) if reached.any() else None


def _shared_runs(keys, sigma):
    """For many rows at once: ``(runs, rising, falling)``, the runs of lengths
    where no row's difficulty changes (``[(start, stop)]``: the difficulty
    tree splits ``N`` at the same thresholds for every row) and, per row,
    whether its ``keys`` never fall (or never rise) within every run."""
    changes = np.any(np.diff(sigma, axis=1) != 0, axis=0)
    breaks = np.flatnonzero(changes) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sigma.shape[1]]])
    step = np.diff(keys, axis=1)
    step[:, breaks - 1] = 0.0  # a step from one run to the next is allowed
    rising = ~np.any(step < 0, axis=1)
    falling = ~np.any(step > 0, axis=1)
    return list(zip(starts.tolist(), stops.tolist())), rising, falling


def _runs_cdf(values, lc, sg, runs, cumulative, scores):
    """:func:`_mixture_cdf` of one row (``values`` (1, L)) whose centres are
    sorted within runs of equal difficulty (:func:`_shared_runs`): a length
    ``j`` counts calibration request ``i`` when ``lc_j <= value - sigma e_i``,
    so each request's count of lengths is one binary search among the
    lengths, ``O(n log J)`` instead of ``O(J log n)``; ``cumulative`` is the
    running sum of the lengths' weights from 0."""
    total = np.zeros(values.shape[1])
    for start, stop in runs:
        thresholds = values[0][:, None] - sg[start] * scores[None, :]
        count = np.searchsorted(lc[start:stop], thresholds, side="right")
        total += (cumulative[start + count] - cumulative[start]).sum(axis=1)
    return (total / len(scores))[None, :]


def _sorted_mixture_quantiles(log_center, sigma, weights, scores, levels):
    """:func:`mixture_quantiles` for a support of at most ``_SORTED_SUPPORT``
    values (``J`` lengths x ``n`` scores) per row, exactly: the values sorted
    once, each carrying its length's index in its lowest mantissa bits (a
    relative change below 1e-12, which only orders values that tie to that
    precision), so the mixture CDF at every value is a cumulative sum."""
    rows, J = log_center.shape
    n = len(scores)
    bits = max(1, int(np.ceil(np.log2(J))))
    mask = np.int64(2**bits - 1)
    component = np.arange(J, dtype=np.int64)[None, :, None]
    out = np.empty((rows, len(levels)))
    step = max(1, _CHUNK_ELEMENTS // (J * n))
    for start in range(0, rows, step):
        lc, sg = log_center[start : start + step], sigma[start : start + step]
        values = lc[:, :, None] + sg[:, :, None] * scores[None, None, :]
        keys = (values.view(np.int64) & ~mask) | component
        keys = np.sort(keys.view(np.float64).reshape(len(lc), J * n), axis=1)
        cdf = np.cumsum(weights[keys.view(np.int64) & mask], axis=1) / n
        # One binary search over all rows: row r's CDF shifted by 2r (a CDF
        # lies in [0, 1 + rounding]) keeps the flattened array sorted.
        shift = 2.0 * np.arange(len(lc))[:, None]
        first = np.searchsorted(
            (cdf + shift).ravel(), (levels[None, :] - _RANK_TOLERANCE + shift).ravel()
        )
        first = np.minimum(
            first.reshape(len(lc), len(levels)) - (J * n) * np.arange(len(lc))[:, None], J * n - 1
        )
        out[start : start + step] = np.exp(np.take_along_axis(keys, first, axis=1))
    return out


def attainment(
    *,
    prefill=None,
    prefill_sigma=None,
    total=None,
    total_sigma=None,
    lengths=None,
    weights=None,
    scores,
    ttft=None,
    tpot=None,
    e2e=None,
):
    """Per row, the probability that every SLO given holds.

    ``prefill``/``prefill_sigma`` are (rows,), ``total``/``total_sigma``
    and the output ``lengths`` (rows, J), the lengths having probabilities
    ``weights`` (J,);
    ``scores`` (n, 2) the calibration requests' (decode, prefill) score pairs,
    so that the joint behaviour of prefill and decode is the calibration
    requests' own. ``ttft``/``tpot``/``e2e`` are (rows,) or None.
    """
    if e2e is None:
        return _separable_attainment(
            prefill, prefill_sigma, total, total_sigma, lengths, weights, scores, ttft, tpot
        )
    args = (prefill, prefill_sigma, total, total_sigma, lengths, weights, scores, ttft, tpot, e2e)
    if total.shape[1] * len(scores) > _COUPLED_PAIRS:
        return _coupled_attainment(*args)
    return _every_pair(*args)


def _every_pair(
    prefill, prefill_sigma, total, total_sigma, lengths, weights, scores, ttft, tpot, e2e
):
    """:func:`attainment` with an end-to-end objective, every (row, length,
    calibration request) evaluated."""
    rows, J = total.shape
    n = len(scores)
    out = np.empty(rows)
    step = max(1, _CHUNK_ELEMENTS // (J * n))
    for start in range(0, rows, step):
        sl = slice(start, start + step)
        pre = prefill[sl, None] * np.exp(prefill_sigma[sl, None] * scores[None, :, 1])
        pre = pre[:, None, :]
        dec = total[sl, :, None] * np.exp(total_sigma[sl, :, None] * scores[None, None, :, 0])
        ok = pre + dec <= e2e[sl, None, None]
        if ttft is not None:
            ok &= pre <= ttft[sl, None, None]
        if tpot is not None:
            ok &= dec / lengths[sl, :, None] <= tpot[sl, None, None]
        out[sl] = ok.mean(axis=2) @ (np.ones(1) if weights is None else weights)
    return out


def _separable_attainment(
    prefill, prefill_sigma, total, total_sigma, lengths, weights, scores, ttft, tpot
):
    """:func:`attainment` without an end-to-end objective: each objective is a
    threshold on a request's own score (``e <= log(limit / y_hat) / sigma``),
    so a binary search in the sorted scores counts the calibration requests
    that meet it, instead of evaluating every (length, request) pair."""
    n = len(scores)
    per_request = tpot is not None and total.shape[1] > _LENGTHS_PER_REQUEST * n
    if tpot is not None and (ttft is not None or not per_request):
        # (rows, J): the highest decode score that still meets tpot.
        limit = np.log(tpot[:, None] * lengths / total) / total_sigma
    if ttft is not None:
        pre_limit = np.log(ttft / prefill) / prefill_sigma
        if tpot is None:
            met = np.searchsorted(np.sort(scores[:, 1]), pre_limit, side="right")
            return met / n
    weights = np.ones(1) if weights is None else weights
    order = np.argsort(scores[:, 0], kind="stable")
    decode = scores[order, 0]
    if ttft is None:
        if per_request:
            return _tpot_over_lengths(total, total_sigma, lengths, weights, decode, tpot)
        return (np.searchsorted(decode, limit, side="right") / n) @ weights
    # Both: count the requests whose decode score is below the limit among
    # those whose prefill meets ttft, with a running count in decode order.
    out = np.empty(len(limit))
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, len(out), step):
        sl = slice(start, start + step)
        prefill_met = scores[order, 1][None, :] <= pre_limit[sl, None]
        running = np.concatenate(
            [np.zeros((len(prefill_met), 1)), np.cumsum(prefill_met, axis=1)], axis=1
        )
        below = np.searchsorted(decode, limit[sl], side="right")
        out[sl] = (np.take_along_axis(running, below, axis=1) / n) @ weights
    return out


def _tpot_over_lengths(total, total_sigma, lengths, weights, decode, tpot):
    """The tpot attainment of :func:`_separable_attainment` over many lengths.
    Request ``i`` meets tpot at length ``j`` when ``log c_j <= log tpot -
    sigma_j e_i``, ``c_j`` the per-token centre. Where ``log c`` is monotone
    within each run of equal difficulty (:func:`_shared_runs`; the per-token
    latency mostly keeps one direction as the output grows), the lengths a
    request meets are a prefix (or a suffix) of the run, found by one binary
    search among the lengths: ``O(n log J)`` per row instead of
    ``O(J log n)``. Other rows count every length."""
    n = len(decode)
    log_c = np.log(total / lengths)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    runs, rising, falling = _shared_runs(log_c, total_sigma)
    out = np.empty(len(total))
    log_tpot = np.log(tpot)
    for row in range(len(total)):
        if not (rising[row] or falling[row]):
            limit = (log_tpot[row] - log_c[row]) / total_sigma[row]
            out[row] = (np.searchsorted(decode, limit, side="right") / n) @ weights
            continue
        met = 0.0
        for start, stop in runs:
            bound = log_tpot[row] - total_sigma[row, start] * decode
            if rising[row]:
                count = np.searchsorted(log_c[row, start:stop], bound, side="right")
                met += (cumulative[start + count] - cumulative[start]).sum()
            else:
                first = np.searchsorted(-log_c[row, start:stop], -bound, side="left")
                met += (cumulative[stop] - cumulative[start + first]).sum()
        out[row] = met / n
    return out


def _coupled_attainment(
    prefill, prefill_sigma, total, total_sigma, lengths, weights, scores, ttft, tpot, e2e
):
    """:func:`attainment` with an end-to-end objective, without evaluating
    every (length, calibration request) pair.

    Calibration request ``i`` meets ``e2e`` at length ``j`` when its decode
    fits in the time its prefill leaves, ``room_i = e2e - prefill_i``:
    ``total_j exp(sigma_j e_i) <= room_i``, that is
    ``sigma_j e_i <= log room_i - log total_j`` (:func:`_fitting_decodes`).
    With ``tpot`` too, it must also have ``sigma_j e_i <= d_j = log tpot -
    log(total_j / len_j)``: rows where neither the total nor the time per
    token falls as the output grows (decode latency grows with the position)
    are counted by :func:`_first_runs`, the others by :func:`_every_pair`.
    """
    pre = prefill[:, None] * np.exp(prefill_sigma[:, None] * scores[None, :, 1])
    with np.errstate(divide="ignore"):  # log(0): the prefill leaves no room
        log_room = np.log(np.maximum(e2e[:, None] - pre, 0.0))
    if ttft is not None:
        log_room[pre > ttft[:, None]] = -np.inf
    weights = np.ones(1) if weights is None else weights
    decode = scores[:, 0]
    if tpot is None:
        return _fitting_decodes(total, total_sigma, weights, decode, log_room)
    per_token = np.log(total / lengths)
    shrinking = np.all(np.diff(total, axis=1) >= 0, axis=1) & np.all(
        np.diff(per_token, axis=1) >= 0, axis=1
    )
    out = np.empty(len(total))
    rest = np.flatnonzero(~shrinking)
    if len(rest):
        out[rest] = _every_pair(
            *(a[rest] for a in (prefill, prefill_sigma, total, total_sigma, lengths)),
            weights,
            scores,
            *(None if a is None else a[rest] for a in (ttft, tpot, e2e)),
        )
    rows = np.flatnonzero(shrinking)
    with np.errstate(divide="ignore"):
        neg_d = per_token[rows] - np.log(tpot[rows])[:, None]
    out[rows] = _first_runs(total[rows], total_sigma[rows], neg_d, weights, decode, log_room[rows])
    return out


def _fitting_decodes(total, total_sigma, weights, decode, log_room):
    """Per row, the probability that a calibration request's decode fits in
    the ``log_room`` (rows, n) its prefill leaves: ``sigma_j e_i - log
    room_i <= -log total_j``; counted per length (:func:`_fitting_by_length`)
    or, over many lengths, per request (:func:`_fitting_over_lengths`)."""
    if total.shape[1] > _LENGTHS_PER_REQUEST * len(decode):
        return _fitting_over_lengths(total, total_sigma, weights, decode, log_room)
    return _fitting_by_length(total, total_sigma, weights, decode, log_room)


def _fitting_by_length(total, total_sigma, weights, decode, log_room):
    """:func:`_fitting_decodes`, a binary search per length: the keys on the
    left are the same for every length of one difficulty ``sigma_j`` (a tree
    takes few values), so each row sorts them once per difficulty and counts
    the requests that meet each length."""
    needles = -np.log(total)
    # Rows of one difficulty over all lengths (a flat difficulty, or a tree
    # that ignores N for them) sort their keys together.
    one_sigma = np.all(total_sigma == total_sigma[:, :1], axis=1)
    keys = np.sort(total_sigma[:, :1] * decode[None, :] - log_room, axis=1)
    out = np.empty(len(total))
    for row in range(len(total)):
        if one_sigma[row]:
            met = np.searchsorted(keys[row], needles[row], side="right")
        else:
            sigma = total_sigma[row]
            met = np.empty(len(sigma))
            for value in np.unique(sigma):
                at = sigma == value
                own = np.sort(value * decode - log_room[row])
                met[at] = np.searchsorted(own, needles[row, at], side="right")
        out[row] = met @ weights
    return out / len(decode)


def _fitting_over_lengths(total, total_sigma, weights, decode, log_room):
    """:func:`_fitting_decodes` over many lengths: the decode totals grow with
    the length, so within a run of equal difficulty the lengths whose decode
    fits request ``i``'s room (``log total_j <= log room_i - sigma e_i``) are
    a prefix, found by one binary search among the lengths per request."""
    log_total = np.log(total)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    runs, rising, _ = _shared_runs(log_total, total_sigma)
    out = np.empty(len(total))
    for row in range(len(total)):
        if not rising[row]:  # totals that fall with the length: count every pair
            out[row] = _fitting_by_length(
                total[row : row + 1],
                total_sigma[row : row + 1],
                weights,
                decode,
                log_room[row : row + 1],
            )[0]
            continue
        met = 0.0
        for start, stop in runs:
            bound = log_room[row] - total_sigma[row, start] * decode
            count = np.searchsorted(log_total[row, start:stop], bound, side="right")
            met += (cumulative[start + count] - cumulative[start]).sum()
        out[row] = met / len(decode)
    return out


def _first_runs(total, total_sigma, neg_d, weights, decode, log_room):
    """:func:`_fitting_decodes` with the per-token bound ``sigma_j e_i <=
    d_j`` too (``neg_d`` = ``-d``), on rows where ``log total_j`` and ``-d_j``
    do not fall as ``j`` grows: request ``i`` then meets each bound on a first
    run of the lengths of each difficulty, and both up to the shorter run."""
    n, J = len(decode), total.shape[1]
    log_total = np.log(total)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    one_sigma = np.all(total_sigma == total_sigma[:, :1], axis=1)
    out = np.empty(len(total))
    simple = np.flatnonzero(one_sigma)
    if len(simple):
        sigma = total_sigma[simple, 0]
        order = np.argsort(decode, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        # met[r, j]: the requests meeting tpot at length j, the lowest
        # decode scores; fewer as j grows, so request i meets it at the
        # lengths whose count exceeds its rank.
        met = np.searchsorted(decode[order], (-neg_d[simple] / sigma[:, None]).ravel(), "right")
        offsets = (n + 1) * np.arange(len(simple))[:, None]
        counts = np.bincount(
            (offsets + met.reshape(len(simple), J)).ravel(), minlength=offsets.size * (n + 1)
        )
        tpot_runs = (J - np.cumsum(counts.reshape(len(simple), n + 1), axis=1))[:, rank]
        for k, row in enumerate(simple):
            e2e_run = np.searchsorted(log_total[row], log_room[row] - sigma[k] * decode, "right")
            out[row] = cumulative[np.minimum(e2e_run, tpot_runs[k])].sum()
    for row in np.flatnonzero(~one_sigma):
        sigma, out[row] = total_sigma[row], 0.0
        for value in np.unique(sigma):
            scaled = value * decode
            runs = np.minimum(
                np.searchsorted(log_total[row], log_room[row] - scaled, side="right"),
                np.searchsorted(neg_d[row], -scaled, side="right"),
            )
            # Only the lengths of this difficulty count.
            own = np.concatenate([[0.0], np.cumsum((sigma == value) * weights)])
            out[row] += own[runs].sum()
    return out / n


def finite_bounds(values):
    """``values``, or a ``ValueError`` naming the first sample that overflowed."""
    row = first_non_finite(values)
    if row is not None:
        raise ValueError(
            f"the calibrated bound for sample {row} is not finite: the model's "
            "calibration scores or difficulty model overflow for this input."
        )
    return values
