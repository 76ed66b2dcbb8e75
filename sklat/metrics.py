"""Error measures of latency predictions, in the units the project reports.

Shared by ``sklat train``'s ``metrics.json``, the benchmarks and the tests:

- :func:`mape`: mean absolute percentage error of totals (or of anything
  positive), in percent;
- :func:`positioned_mape`: the error of predicted per-position curves against
  measured per-step latencies, averaged per request, in percent;
- :func:`segment_mape`: the error of predicted sums over timed decode
  segments (the gaps between streamed events), token-weighted per request,
  in percent;
- :func:`per_token_mae`: the mean absolute error of the per-token average
  ``total / N`` (what a time-per-output-token SLO compares), in ms per token;
- :func:`interval_coverage` and :func:`mean_interval_width`: how often
  prediction intervals hold the measured value, and how wide they are;
- :func:`evaluate`: all of them for a fitted estimator on a set of requests,
  as ``sklat train`` reports them in ``metrics.json``.
"""

import numpy as np

from ._conformal import min_calibration
from ._domain import quiet_extrapolation
from ._validation import (
    as_float_array,
    check_distinct_keys,
    check_entries,
    check_finite,
    check_finite_positive,
    check_output_tokens,
    check_target_rows,
    first_true,
    n_rows,
    report_key,
)

__all__ = [
    "evaluate",
    "interval_coverage",
    "mape",
    "mean_interval_width",
    "per_token_mae",
    "positioned_mape",
    "segment_mape",
]


def _pair(y_true, y_pred):
    y_true = as_float_array(y_true, "y_true")
    y_pred = as_float_array(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape; got {y_true.shape} and {y_pred.shape}."
        )
    if y_true.size == 0:
        raise ValueError("y_true is empty.")
    check_finite_positive(y_true.reshape(-1), "y_true", where="entry {}".format)
    return y_true, y_pred


def mape(y_true, y_pred, *, sample_weight=None):
    """Mean absolute percentage error, in percent.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Measured latencies, > 0.
    y_pred : array-like of the same shape
        Predicted latencies.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the samples.

    Returns
    -------
    error : float
        ``100 * mean(|y_pred - y_true| / y_true)`` (over all entries).

    Examples
    --------
    >>> from sklat.metrics import mape
    >>> round(mape([100.0, 200.0], [110.0, 190.0]), 6)
    7.5
    """
    y_true, y_pred = _pair(y_true, y_pred)
    relative = np.abs(y_pred - y_true) / y_true
    if relative.ndim > 1:
        relative = relative.reshape(len(relative), -1).mean(axis=1)
    return float(100 * np.average(relative, weights=sample_weight))


def per_token_mae(y_true, y_pred, output_tokens):
    """Mean absolute error of the per-token decode latency ``total / N``, in ms.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Measured and predicted total decode latencies (ms).
    output_tokens : array-like of shape (n_samples,)
        ``N`` of each request.

    Returns
    -------
    error : float
        Milliseconds per token.

    Examples
    --------
    >>> from sklat.metrics import per_token_mae
    >>> per_token_mae([100.0, 200.0], [110.0, 190.0], [10, 20])
    0.75
    """
    y_true, y_pred = _pair(y_true, y_pred)
    n = check_output_tokens(output_tokens, len(y_true))
    return float(np.mean(np.abs(y_pred - y_true) / n))


def _check_no_missing(per_request, name, what):
    """Refuse a ``None`` entry: a request without ``what`` (as
    :func:`sklat.io.load_results` gives for one measured otherwise)."""
    missing = next((i for i, value in enumerate(per_request) if value is None), None)
    if missing is not None:
        raise ValueError(
            f"{name}[{missing}] is None: that request has no {what} (as load_results gives "
            "for a request measured otherwise); score only the requests that have them."
        )


def positioned_mape(y_true, y_pred, *, output_tokens=None, start=1):
    """Error of per-position curves against per-step latencies, in percent.

    Each request's error is the mean relative error over its own steps
    ``1..N``; the result is the mean over requests, so that long requests do
    not outweigh short ones.

    Parameters
    ----------
    y_true : list of 1-D arrays, or ndarray of shape (n_samples, n_positions)
        Per request, the measured latency of steps ``1..N`` (a list of arrays of
        length ``N``), or a 2-D array whose first ``output_tokens[i]`` entries
        count for row ``i``.
    y_pred : ndarray of shape (n_samples, n_positions) or list of 1-D arrays
        Predicted latency at positions ``1..``; at least ``N`` per request.
    output_tokens : array-like of shape (n_samples,), default=None
        ``N`` per request; ``None`` takes the lengths of ``y_true``'s arrays.
    start : int, default=1
        First position that counts (e.g. the positions past the longest
        training request); every request needs ``N >= start``.

    Returns
    -------
    error : float
        Percent.

    Examples
    --------
    >>> import numpy as np
    >>> from sklat.metrics import positioned_mape
    >>> measured = [np.array([10.0, 10.0]), np.array([20.0])]
    >>> positioned_mape(measured, np.array([[11.0, 9.0, 7.0], [22.0, 0.0, 0.0]]))
    10.0
    """
    _check_no_missing(y_true, "y_true", "per-step latencies")
    if output_tokens is None:
        lengths = [len(steps) for steps in y_true]
    else:
        lengths = check_output_tokens(output_tokens, len(y_true))
    if len(y_pred) != len(y_true):
        raise ValueError(f"y_true has {len(y_true)} requests but y_pred {len(y_pred)}.")
    if len(y_true) == 0:
        raise ValueError("y_true is empty.")
    errors = []
    for i, n in enumerate(lengths):
        if n < start:
            raise ValueError(f"request {i} has {n} steps, fewer than start={start}.")
        true = as_float_array(y_true[i], "y_true")[:n]
        pred = as_float_array(y_pred[i], "y_pred")[:n]
        if len(true) < n or len(pred) < n:
            raise ValueError(
                f"request {i}: {n} steps expected, y_true has {len(true)} and y_pred {len(pred)}."
            )
        true, pred = true[start - 1 :], pred[start - 1 :]
        check_finite_positive(true, f"y_true[{i}]", where=lambda j: f"step {start + j}")
        errors.append(np.mean(np.abs(pred - true) / true))
    return float(100 * np.mean(errors))


def segment_mape(segments, y_pred):
    """Error of per-position curves against timed decode segments, in percent.

    A segment that covered ``k`` tokens is compared with the sum of the
    predicted curve over its positions. Each request's error is the mean
    relative error over its segments, weighted by their tokens (so that with
    one-token segments this is :func:`positioned_mape`); the result is the
    mean over requests.

    Parameters
    ----------
    segments : list of (tokens, ms) pairs
        Per request, the tokens of each segment (covering positions ``1..N``
        in order) and its measured time.
    y_pred : ndarray of shape (n_samples, n_positions) or list of 1-D arrays
        Predicted latency at positions ``1..``; at least ``N`` per request.

    Returns
    -------
    error : float
        Percent.

    Examples
    --------
    >>> import numpy as np
    >>> from sklat.metrics import segment_mape
    >>> segments = [([1, 3], [10.0, 30.0])]
    >>> float(segment_mape(segments, np.array([[11.0, 10.0, 10.0, 10.0]])))
    2.5
    """
    _check_no_missing(segments, "segments", "decode segments")
    if len(y_pred) != len(segments):
        raise ValueError(f"segments has {len(segments)} requests but y_pred {len(y_pred)}.")
    if len(segments) == 0:
        raise ValueError("segments is empty.")
    errors = []
    for i, (tokens, ms) in enumerate(segments):
        tokens = np.asarray(tokens, dtype=np.int64)
        ms = as_float_array(ms, f"segments[{i}] ms")
        if tokens.shape != ms.shape or tokens.ndim != 1 or (tokens < 1).any():
            raise ValueError(
                f"segments[{i}] must be two 1-D lists of equal length, tokens >= 1; got "
                f"shapes {tokens.shape} and {ms.shape}."
            )
        check_finite_positive(ms, f"segments[{i}] ms", where=lambda j: f"segment {j + 1}")
        n = int(tokens.sum())
        pred = as_float_array(y_pred[i], "y_pred")[:n]
        if len(pred) < n:
            raise ValueError(f"request {i}: {n} positions expected, y_pred has {len(pred)}.")
        cumulative = np.concatenate(([0.0], np.cumsum(pred)))
        ends = np.cumsum(tokens)
        predicted = cumulative[ends] - cumulative[ends - tokens]
        errors.append(np.sum(tokens * np.abs(predicted - ms) / ms) / n)
    return float(100 * np.mean(errors))


def _intervals(y_interval):
    """``y_interval`` as float64 (n, 2) or (n, 2, k), lower <= upper."""
    arr = as_float_array(y_interval, "y_interval")
    if arr.ndim not in (2, 3) or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(
            "y_interval must have shape (n_samples, 2) or (n_samples, 2, n_confidences) "
            f"(lower and upper bounds); got {arr.shape}."
        )
    if np.isnan(arr).any():
        raise ValueError("y_interval holds NaN.")
    row = first_true(arr[:, 0] > arr[:, 1])
    if row is not None:
        raise ValueError(f"y_interval has its lower bound above its upper bound at sample {row}.")
    return arr


def interval_coverage(y_true, y_interval):
    """Fraction of measured values inside their prediction intervals.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Measured values.
    y_interval : array-like of shape (n_samples, 2) or (n_samples, 2, n_confidences)
        Lower and upper bounds (bounds included), e.g. from
        :meth:`~sklat.LatencyEstimator.predict_interval`, or stacked along the
        last axis for several confidences.

    Returns
    -------
    coverage : float or ndarray of shape (n_confidences,)
        In ``[0, 1]``.

    Examples
    --------
    >>> from sklat.metrics import interval_coverage
    >>> interval_coverage([10.0, 20.0, 30.0], [[9, 11], [21, 25], [25, 30]])
    0.666...
    """
    bounds = _intervals(y_interval)
    y = as_float_array(y_true, "y_true")
    if y.shape != bounds.shape[:1]:
        raise ValueError(
            f"y_true must have one value per interval ({bounds.shape[0]}); got shape {y.shape}."
        )
    check_finite(y, "y_true", where="entry {}".format)
    if bounds.ndim == 3:
        y = y[:, None]
    inside = (bounds[:, 0] <= y) & (y <= bounds[:, 1])
    coverage = inside.mean(axis=0)
    return float(coverage) if bounds.ndim == 2 else coverage


def mean_interval_width(y_interval):
    """Mean width (upper - lower) of prediction intervals.

    Parameters
    ----------
    y_interval : array-like of shape (n_samples, 2) or (n_samples, 2, n_confidences)
        Lower and upper bounds.

    Returns
    -------
    width : float or ndarray of shape (n_confidences,)
        In the unit of the bounds (ms for latencies).

    Examples
    --------
    >>> from sklat.metrics import mean_interval_width
    >>> float(mean_interval_width([[9.0, 11.0], [21.0, 25.0]]))
    3.0
    """
    bounds = _intervals(y_interval)
    if not np.isfinite(bounds).all():
        raise ValueError("y_interval must be finite to have a width.")
    width = (bounds[:, 1] - bounds[:, 0]).mean(axis=0)
    return float(width) if bounds.ndim == 2 else width


def evaluate(
    estimator,
    X,
    y,
    *,
    output_tokens,
    positioned_latencies=None,
    decode_segments=None,
    groups=None,
    confidences=None,
):
    """Every error measure of a fitted estimator on a set of requests.

    What ``sklat train`` writes to ``metrics.json`` for its training and
    held-out requests. Requests outside the training domain are counted
    (``n_outside_domain``), not warned of.

    Parameters
    ----------
    estimator : LatencyEstimator
        A fitted estimator.
    X : DataFrame or array-like of shape (n_samples, n_features)
        Configurations.
    y : DataFrame or array-like of shape (n_samples, 2) or (n_samples,)
        ``[T_prefill_total, T_LLM_decode]``, or ``T_LLM_decode`` alone.
    output_tokens : array-like of shape (n_samples,)
        ``N`` of each request.
    positioned_latencies : list of length n_samples, default=None
        Per request, ``None`` or its per-step latencies: ``positioned_mape_pct``.
    decode_segments : list of length n_samples, default=None
        Per request, ``None`` or ``(tokens, ms)``: ``segment_mape_pct``.
    groups : array-like of shape (n_samples,), default=None
        A name per request (e.g. its dataset): total-decode MAPE per group
        under ``by_dataset``.
    confidences : sequence of float, default=None
        Nominal coverages of decode-total intervals to report
        (``decode_interval``; those the model has enough calibration requests
        for).

    Returns
    -------
    metrics : dict
        ``n_requests``, ``total_decode_mape_pct``, ``total_decode_mae_ms``,
        ``prefill_mape_pct`` and ``prefill_mae_ms`` (with a prefill),
        ``n_outside_domain``, and where their inputs are given
        ``decode_interval``, ``n_requests_with_per_step``,
        ``positioned_mape_pct``, ``n_requests_with_segments``,
        ``segment_mape_pct``, ``by_dataset``.

    Examples
    --------
    >>> from sklat import LatencyEstimator
    >>> from sklat.datasets import make_positioned_latency
    >>> from sklat.metrics import evaluate
    >>> d = make_positioned_latency(60, random_state=0)
    >>> est = LatencyEstimator(max_epochs=5, random_state=0).fit(
    ...     d.X, d.y, output_tokens=d.output_tokens)
    >>> m = evaluate(est, d.X, d.y, output_tokens=d.output_tokens)
    >>> sorted(m)[:3]
    ['n_outside_domain', 'n_requests', 'prefill_mae_ms']
    """

    n_samples = n_rows(X)
    n = check_output_tokens(output_tokens, n_samples)
    decode, prefill = check_target_rows(y, n_samples)
    y_arr = decode[:, None] if prefill is None else np.c_[prefill, decode]
    groups, positioned_latencies, decode_segments = (
        None if values is None else check_entries(values, name, n_samples)
        for values, name in (
            (groups, "groups"),
            (positioned_latencies, "positioned_latencies"),
            (decode_segments, "decode_segments"),
        )
    )
    with quiet_extrapolation():
        pred = estimator.predict(X, n).reshape(len(n), -1)
        total, pred_total = y_arr[:, -1], pred[:, -1]
        out = {
            "n_requests": int(len(n)),
            "total_decode_mape_pct": mape(total, pred_total),
            "total_decode_mae_ms": float(np.mean(np.abs(pred_total - total))),
        }
        if y_arr.shape[1] == 2:
            prefill, pred_prefill = y_arr[:, 0], pred[:, 0]
            out["prefill_mape_pct"] = mape(prefill, pred_prefill)
            out["prefill_mae_ms"] = float(np.mean(np.abs(pred_prefill - prefill)))
        out["n_outside_domain"] = int((~estimator.in_domain(X, n)).sum())
        if confidences is not None:
            out["decode_interval"] = _interval_metrics(estimator, X, n, total, confidences)
        for keys, entries, score in (
            (
                ("n_requests_with_per_step", "positioned_mape_pct"),
                positioned_latencies,
                positioned_mape,
            ),
            (("n_requests_with_segments", "segment_mape_pct"), decode_segments, segment_mape),
        ):
            if entries is not None:
                out.update(_step_metrics(estimator, X, n, entries, score, keys))
    if groups is not None:
        groups = np.asarray(groups)
        out["by_dataset"] = {
            str(g): {
                "n_requests": int((groups == g).sum()),
                "total_decode_mape_pct": mape(total[groups == g], pred_total[groups == g]),
            }
            for g in np.unique(groups)
        }
    return out


def _interval_metrics(estimator, X, n, total, confidences):
    """Coverage and mean width of the decode-total intervals, for the
    ``confidences`` the model has enough calibration requests for."""

    out = {}
    for confidence in check_distinct_keys(confidences, "confidences", "report"):
        if len(estimator.conformity_scores_) < min_calibration(confidence):
            continue
        bounds = estimator.predict_interval(X, n, confidence=confidence)
        out[report_key(confidence)] = {
            "coverage": interval_coverage(total, bounds),
            "mean_width_ms": mean_interval_width(bounds),
        }
    return out


def _step_metrics(estimator, X, n, entries, score, keys):
    """``{count_key: requests with entries, error_key: score}`` (the error
    only where some request has entries)."""
    count_key, error_key = keys
    have = [i for i in range(len(n)) if entries[i] is not None]
    out = {count_key: len(have)}
    if have:
        # One prediction for all of them, up to the longest.
        X_have = X.iloc[have] if hasattr(X, "iloc") else np.asarray(X)[have]
        curves = estimator.predict_positions(X_have, np.arange(1, n[have].max() + 1))
        out[error_key] = score([entries[i] for i in have], curves)
    return out
