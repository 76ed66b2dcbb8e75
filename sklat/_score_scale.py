"""The scale on which a calibration measures errors: a Box-Cox power.

A conformity score is the difference between a measured and a predicted
latency on the scale ``u = v ** p / p`` (``u = log v`` for ``p = 0``; Box-Cox
up to a constant, which cancels in a difference). ``p = 0`` gives relative
(log) errors, whose intervals grow in proportion to the prediction; ``p = 1``
absolute errors, intervals of one width for every request; in between,
spreads that grow like ``v ** (1 - p)``: a decode total whose steps jitter
independently has a spread growing like the square root of its length
(``p = 1/2``), a model error of a configuration one in proportion to it.
Which one a set of measurements follows is chosen from out-of-sample errors
(:func:`cross_validated_width`, :func:`choose_power`). Every scale is equivariant to the unit of the
latencies, so a model in seconds and one in milliseconds calibrate alike.
"""

import numpy as np

# The powers tried (0: log errors, 1: absolute errors).
SCORE_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)
# The interval level at which scales are compared, and how much narrower
# another scale's intervals must be to replace log errors: on a few dozen
# requests a scale can look a hair narrower by chance.
CHECK_LEVEL = 0.9
MIN_NARROWING = 0.05
# Below a scale's range (u <= 0 for p > 0) a latency is 0: its log is kept
# finite so that it sorts (and exp of it is exactly 0).
_LOG_ZERO = -1e4
_TINY = np.finfo(np.float64).tiny


def to_scale(values, power):
    """Latencies ``values`` (> 0) on the scale of ``power``."""
    values = np.asarray(values, dtype=np.float64)
    if power == 0:
        return np.log(values)
    return values**power / power


def log_from_scale(u, power):
    """``log`` of the latency at ``u`` on the scale of ``power``: at the
    scale's lower end (``u <= 0`` for ``power > 0``) the latency is 0 and its
    log ``_LOG_ZERO``, finite."""
    if power == 0:
        return u
    v = power * u
    return np.where(v > 0, np.log(np.maximum(v, _TINY)) / power, _LOG_ZERO)


def scale_from_log(w, power):
    """The inverse of :func:`log_from_scale`: ``w`` (a log latency) on the
    scale of ``power``."""
    if power == 0:
        return w
    return np.exp(power * w) / power


def shifted(center, sigma, score, power):
    """The latency ``score * sigma`` away from ``center`` on the scale of
    ``power`` (``center * exp(sigma * score)`` for log errors)."""
    if power == 0:
        return center * np.exp(sigma * score)
    u = to_scale(center, power) + sigma * score
    return np.maximum(power * u, 0.0) ** (1.0 / power)


def score_of(limit, center, sigma, power):
    """The score at which a request predicted at ``center`` with difficulty
    ``sigma`` reaches the latency ``limit``: the inverse of :func:`shifted`."""
    if power == 0:
        return np.log(limit / center) / sigma
    return (to_scale(limit, power) - to_scale(center, power)) / sigma


def choose_power(widths):
    """The power with the narrowest intervals, given ``widths`` (power ->
    mean interval width, None where it could not be judged): 0 (log errors)
    unless another narrows them by ``MIN_NARROWING``."""
    if widths.get(0.0) is None:
        return 0.0
    best = min(widths, key=lambda p: np.inf if widths[p] is None else widths[p])
    return best if widths[best] < (1 - MIN_NARROWING) * widths[0.0] else 0.0


def cross_validated_width(measured, predicted, folds, power, sigma=1.0):
    """Mean width of the ``CHECK_LEVEL`` intervals around ``predicted`` on
    the scale of ``power`` with difficulties ``sigma``, each fold's requests
    (``folds``: a fold per request) bounded by the conformal quantile of the
    other folds' normalised errors, which are out of sample. None when a
    fold's complement holds too few requests for that quantile."""
    n_folds = int(folds.max()) + 1 if len(folds) else 0
    others = len(folds) - np.bincount(folds, minlength=n_folds)
    if n_folds < 2 or (_rank(others) > others).any():
        return None
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), np.shape(predicted))
    errors = np.abs(to_scale(measured, power) - to_scale(predicted, power)) / sigma
    total = 0.0
    for k in range(n_folds):
        inside = folds == k
        q = np.sort(errors[~inside])[_rank(others[k]) - 1]
        center, spread = predicted[inside], sigma[inside]
        upper, lower = shifted(center, spread, q, power), shifted(center, spread, -q, power)
        total += float(np.sum(np.log(upper - lower)))
    return float(np.exp(total / len(predicted)))


def _rank(n):
    """Rank of the conformal ``CHECK_LEVEL`` quantile of ``n`` scores (> n:
    too few)."""
    return np.ceil((np.asarray(n) + 1) * CHECK_LEVEL - 1e-9).astype(np.int64)
