"""Adapting a fitted curve to a new setting from a few requests.

The curve's shape is kept; one multiplier per cost term is refitted: the
decode's three (the flat cost, the context cost, the learnt shape) and the
prefill's ``n_cost_terms`` power laws::

    total' = exp(c) * (exp(d_flat) F + exp(d_context) G + exp(d_shape) H)
    prefill' = exp(c') * sum_m exp(d'_m) P_m

``F``, ``G`` and ``H`` are the three terms of a request's predicted total,
``P_m`` those of its prefill. The common factors ``exp(c)`` and ``exp(c')``
are free (a new GPU, a new dtype: everything slower or faster); the per-term
deviations ``d`` are penalised, so that a few requests move the balance of the
terms only as far as they show it. Each fit is a least-squares fit of log
latencies (scipy's ``least_squares``).

Conformity scores of the new requests are cross-fitted: each request's score
comes from the factors fitted without it (leave-one-out up to
``LEAVE_ONE_OUT_MAX`` requests, ``N_FOLDS`` folds beyond). They are plain log
errors: the old setting's difficulty model is dropped (on the measured moves,
keeping it under-covered by up to 6 points, see benchmarks/RESULTS.md).
"""

import numpy as np

# Penalty on the squared per-term log deviations, against the mean squared
# log error of the latencies.
DEVIATION_PENALTY = 0.01
LEAVE_ONE_OUT_MAX = 50
N_FOLDS = 10


def fit_factors(terms, measured):
    """Multipliers ``exp(c + d_k)`` of the cost terms ``terms`` (n, K) of the
    requests' predictions that fit their measured latencies ``measured`` (n,):
    a least-squares fit of log latencies, the per-term deviations ``d``
    penalised. Terms that are 0 for every request keep a multiplier of 1."""
    from scipy.optimize import least_squares

    target = np.log(measured)
    n, K = terms.shape
    used = terms.sum(axis=0) > 0

    def residuals(params):
        c, d = params[0], params[1:]
        predicted = c + np.log(terms @ np.where(used, np.exp(d), 0.0))
        return np.concatenate([(target - predicted) / np.sqrt(n), np.sqrt(DEVIATION_PENALTY) * d])

    start = np.zeros(K + 1)
    start[0] = float(np.mean(target - np.log(terms.sum(axis=1))))
    params = least_squares(residuals, start, method="lm").x
    return np.where(used, np.exp(params[0] + params[1:]), 1.0)


def folds(n, seed=0):
    """Cross-fitting folds of ``n`` requests: one per request up to
    ``LEAVE_ONE_OUT_MAX``, else ``N_FOLDS`` seeded folds."""
    if n <= LEAVE_ONE_OUT_MAX:
        return [np.array([i]) for i in range(n)]
    order = np.random.RandomState(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, N_FOLDS)]


def cross_fitted_log_errors(terms, measured):
    """Signed log errors of every request under multipliers fitted without it."""
    n = len(measured)
    errors = np.empty(n)
    for held in folds(n):
        keep = np.setdiff1d(np.arange(n), held)
        factors = fit_factors(terms[keep], measured[keep])
        errors[held] = np.log(measured[held]) - np.log(terms[held] @ factors)
    return errors


def recalibrated(curve, calibrator, X_arr, decode, prefill, output_tokens, n_threads):
    """``(curve, calibrator)`` adapted to checked new requests: the curve with
    refitted multipliers, the calibrator with their cross-fitted scores."""
    from ._calibrator import Calibrator, flat_tree

    coef = curve.encode(X_arr, n_threads=n_threads, scaled=False)
    decode_terms = curve.total_terms(coef, output_tokens)
    scales = fit_factors(decode_terms, decode)
    # Which requests the old setting found hard need not carry over: the new
    # scores are plain log errors (a difficulty of 1 everywhere).
    flat_trees = np.stack([flat_tree(tree) for tree in calibrator.difficulty_trees])
    scores = np.zeros((len(decode), calibrator.scores.shape[1]))
    scores[:, 0] = cross_fitted_log_errors(decode_terms, decode)
    if prefill is not None:
        scales = np.append(scales, fit_factors(coef.prefill_terms, prefill))
        scores[:, 1] = cross_fitted_log_errors(coef.prefill_terms, prefill)
    else:
        scales = np.append(scales, curve.scales[3:])
    new_calibrator = Calibrator.flat(flat_trees, scores, calibrator.position_scores)
    return curve.rescaled(scales), new_calibrator
