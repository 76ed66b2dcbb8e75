"""Adapting a fitted curve to a new setting from a few requests.

The curve's shape is kept; one multiplier per cost term is refitted: the
decode's three (the flat cost, the context cost, the learnt shape) and the
prefill's ``n_cost_terms`` power laws, and, from ``MIN_SLOPE_REQUESTS``
requests on, a slope of the log multiplier on each standardised feature ``z``
where the requests show one::

    total' = exp(c + b . z) * (exp(d_flat) F + exp(d_context) G + exp(d_shape) H)
    prefill' = exp(c' + b' . z) * sum_m exp(d'_m) P_m

``F``, ``G`` and ``H`` are the three terms of a request's predicted total,
``P_m`` those of its prefill. The common factors ``exp(c)`` and ``exp(c')``
are free (a new GPU, a new dtype: everything slower or faster); the per-term
deviations ``d`` and the slopes ``b`` are penalised, so that a few requests
move the balance of the terms, and the slowdown from one configuration to
another, only as far as they show it. A wider MoE layer slows every expert:
the more experts a configuration runs, the more it slows, which no multiplier
of the cost terms can say. Each fit is a least-squares fit of log latencies
(scipy's ``least_squares``).

The slopes' penalty is chosen among ``SLOPE_PENALTIES`` (and none: no slopes)
by the cross-fitted squared log error of the new requests; ties keep the
simpler fit. Below ``MIN_SLOPE_REQUESTS`` that choice is noise (with slopes
from 10 requests, the decode totals of two of the four measured moves of
benchmarks/recalibration.py got worse, one better), so there are no slopes.

Conformity scores of the new requests are cross-fitted: each request's score
comes from the factors fitted without it (leave-one-out up to
``LEAVE_ONE_OUT_MAX`` requests, ``N_FOLDS`` folds beyond). They are plain log
errors: the old setting's difficulty model is dropped (on the measured moves,
keeping it under-covered by up to 6 points, see benchmarks/RESULTS.md).
"""

import numpy as np

from ._calibrator import Calibrator

# Penalty on the squared per-term log deviations, against the mean squared
# log error of the latencies.
DEVIATION_PENALTY = 0.01
# Penalties on the squared slopes (per standardised feature) to choose among,
# strongest first; "no slopes" is the first candidate.
SLOPE_PENALTIES = (1.0, 0.3, 0.1)
MIN_SLOPE_REQUESTS = 20
LEAVE_ONE_OUT_MAX = 50
N_FOLDS = 10


class Factors:
    """Fitted multipliers of the cost terms, ``exp(c + d_k)`` (``multipliers``,
    one per term) and the slopes ``b`` of their log on standardised features."""

    def __init__(self, multipliers, slopes):
        self.multipliers = multipliers
        self.slopes = slopes

    def predict(self, terms, z):
        """Latencies of requests with cost terms ``terms`` (n, K) and
        standardised features ``z`` (n, d)."""
        return np.exp(z @ self.slopes) * (terms @ self.multipliers)


def fit_factors(terms, measured, z=None, slope_penalty=None):
    """:class:`Factors` of the cost terms ``terms`` (n, K) of the requests'
    predictions that fit their measured latencies ``measured`` (n,): a
    least-squares fit of log latencies, the per-term deviations ``d``
    penalised. With ``slope_penalty``, also slopes on the standardised
    features ``z`` (n, d), penalised by it; else the slopes are 0. Terms that
    are 0 for every request keep a multiplier of 1."""
    from scipy.optimize import least_squares

    target = np.log(measured)
    n, K = terms.shape
    used = terms.sum(axis=0) > 0
    z_fit = np.zeros((n, 0)) if slope_penalty is None else z
    n_slopes = z_fit.shape[1]
    penalties = np.sqrt(np.r_[np.full(K, DEVIATION_PENALTY), np.full(n_slopes, slope_penalty or 0)])

    def residuals(params):
        c, d, b = params[0], params[1 : K + 1], params[K + 1 :]
        predicted = c + z_fit @ b + np.log(terms @ np.where(used, np.exp(d), 0.0))
        return np.concatenate([(target - predicted) / np.sqrt(n), penalties * params[1:]])

    start = np.zeros(1 + K + n_slopes)
    start[0] = float(np.mean(target - np.log(terms.sum(axis=1))))
    params = least_squares(residuals, start, method="lm").x
    slopes = np.zeros(0 if z is None else z.shape[1])
    slopes[:n_slopes] = params[K + 1 :]
    return Factors(np.where(used, np.exp(params[0] + params[1 : K + 1]), 1.0), slopes)


def folds(n, seed=0):
    """Cross-fitting folds of ``n`` requests: one per request up to
    ``LEAVE_ONE_OUT_MAX``, else ``N_FOLDS`` seeded folds."""
    if n <= LEAVE_ONE_OUT_MAX:
        return [np.array([i]) for i in range(n)]
    order = np.random.RandomState(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, N_FOLDS)]


def cross_fitted_log_errors(terms, z, measured, slope_penalty=None):
    """Signed log errors of every request under factors fitted without it."""
    n = len(measured)
    errors = np.empty(n)
    for held in folds(n):
        keep = np.setdiff1d(np.arange(n), held)
        factors = fit_factors(terms[keep], measured[keep], z[keep], slope_penalty)
        errors[held] = np.log(measured[held]) - np.log(factors.predict(terms[held], z[held]))
    return errors


def chosen_fit(terms, z, measured):
    """``(factors, cross-fitted log errors)`` of the slope penalty (or none)
    with the least cross-fitted squared log error."""
    candidates = [None]
    if len(measured) >= MIN_SLOPE_REQUESTS and z.shape[1]:
        candidates += list(SLOPE_PENALTIES)
    best = None
    for penalty in candidates:
        errors = cross_fitted_log_errors(terms, z, measured, penalty)
        # Strictly less: a tie keeps the simpler (more penalised) fit.
        if best is None or np.mean(errors**2) < np.mean(best[1] ** 2):
            best = (penalty, errors)
    penalty, errors = best
    return fit_factors(terms, measured, z, penalty), errors


def recalibrated(calibrator, X_arr, decode, prefill, output_tokens, n_threads):
    """``calibrator`` adapted to checked new requests: a calibration of its
    curve with refitted multipliers and slopes, by their cross-fitted
    scores."""
    curve = calibrator.curve
    coef = curve.encode(X_arr, n_threads=n_threads, scaled=False)
    decode_factors, decode_errors = chosen_fit(
        curve.total_terms(coef, output_tokens), coef.z, decode
    )
    scales, slopes = decode_factors.multipliers, curve.slopes.copy()
    slopes[0] = decode_factors.slopes
    scores = np.zeros((len(decode), calibrator.scores.shape[1]))
    scores[:, 0] = decode_errors
    if prefill is not None:
        prefill_factors, scores[:, 1] = chosen_fit(coef.prefill_terms, coef.z, prefill)
        scales = np.append(scales, prefill_factors.multipliers)
        slopes[1] = prefill_factors.slopes
    else:
        scales = np.append(scales, curve.scales[3:])
    # Which requests the old setting found hard need not carry over: the new
    # scores are plain log errors (a difficulty of 1 everywhere).
    return Calibrator.flat(scores, calibrator.position_scores, curve.rescaled(scales, slopes))
