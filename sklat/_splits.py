"""Which requests train, which stop training early and which calibrate: the
seeded draws of the held-out shares and of the cross-fitting folds.

Repeats of a measurement (requests with equal features and output length,
as ``sklat profile --repeats`` writes them, or a benchmark that sends the
same request many times) fall on one side of the calibration split and of
the folds. A calibration request whose repeat trained the net has an error
close to the measurement noise alone, smaller than a new configuration's:
its intervals would cover less than stated on new configurations, and its
point factors would correct for the noise only.
"""

import numpy as np

# n_folds="auto": the folds, and the sizes that are cross-fitted. Measured on
# the repeat sets (benchmarks/sample_efficiency.py), five averaged nets were as
# accurate or more than one net with set-aside requests at every size up to
# 378 requests, and covered closer to nominal; from CROSS_FIT_BELOW requests a
# set-aside share leaves hundreds to the point model and the fit is one net.
# From CROSS_FIT_BELOW requests of fewer than CROSS_FIT_BELOW distinct
# measurements (Splitwise's 960 requests hold 168), a calibration share of
# whole measurements is a few dozen of them, and keeps those configurations
# from the point model: the folds then calibrate a net trained on every
# request (benchmarks/RESULTS.md, sklat 0.12.0). With fewer than two
# configurations per fold a fold's net would stop early on almost nothing.
AUTO_FOLDS = 5
CROSS_FIT_BELOW = 500
# Fewest distinct measurements for a held-out share drawn by measurement;
# with fewer (a handful of configurations measured many times over), whole
# measurements would make the share far larger or smaller than asked, and
# requests are drawn one by one.
MIN_MEASUREMENTS = 2 * AUTO_FOLDS


def measurement_groups(X, output_tokens):
    """An id per request (``X``: features, float64): requests with equal
    features and output length share it."""
    keys = np.column_stack([X, np.asarray(output_tokens, dtype=np.float64)])
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    _, groups = np.unique(keys, axis=0, return_inverse=True)
    return groups.ravel().astype(np.int64)


def held_out_rows(n, k, order, groups):
    """``(kept_rows, held_out_rows)``: the first ``k`` requests of the
    permutation ``order``, or, by measurement (``groups``: one id per
    request, None for none), the measurements in the order their first
    request appears in it until at least ``k`` requests are held out. None
    held out if ``k`` would leave no request to keep; request by request
    where fewer than ``MIN_MEASUREMENTS`` measurements, or a draw of whole
    ones that would keep none, make whole measurements meaningless."""
    none = np.arange(n), np.zeros(0, dtype=np.int64)
    if k < 1 or n - k < 1:
        return none
    held = order[:k]
    if groups is not None:
        in_order = groups[order]
        _, first = np.unique(in_order, return_index=True)
        # The measurements in the order their first request is drawn.
        group_order = in_order[np.sort(first)]
        n_groups = int(np.searchsorted(np.cumsum(np.bincount(groups)[group_order]), k)) + 1
        whole = np.flatnonzero(np.isin(groups, group_order[:n_groups]))
        if len(group_order) >= MIN_MEASUREMENTS and len(whole) < n:
            held = whole
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def calibration_split(n, fraction, seed, groups=None):
    """``(fit_rows, calibration_rows)``: ``int(fraction * n)`` requests drawn
    (seeded) for calibration, whole measurements of ``groups`` (see
    :func:`measurement_groups`) when given; none if that would leave no
    request to fit. With every measurement distinct, the rows drawn do not
    depend on ``groups``."""
    # A seed of its own: the held-out split of early stopping draws from the
    # same seed and must not pick the same positions.
    order = np.random.RandomState((seed + 1) % 2**31).permutation(n)
    return held_out_rows(n, int(fraction * n), order, groups)


def validation_split(n, fraction, seed):
    """``(fit_rows, held_out_rows)`` of early stopping: ``round(fraction * n)``
    requests drawn (seeded), none if that would leave no request to fit.

    Drawn request by request, repeats of a measurement or not: the held-out
    loss only has to say when training stops helping, and a tenth of the
    measurements of a set with few configurations judges that too noisily
    (tried on Splitwise's 168 measurements in 960 requests: whole
    measurements stopped some nets far too early)."""
    order = np.random.RandomState(seed).permutation(n)
    return held_out_rows(n, int(round(fraction * n)), order, None)


def unseen(held_out, groups):
    """The rows of ``held_out`` whose measurement (``groups``, one per row of
    the data) has no request outside ``held_out``: those whose errors are
    out of sample for a net trained on the other rows."""
    held_out = np.asarray(held_out, dtype=np.int64)
    trained = np.ones(len(groups), dtype=bool)
    trained[held_out] = False
    return held_out[~np.isin(groups[held_out], groups[trained])]


def cross_fit_folds(X, output_tokens, n_folds, seed, groups=None):
    """The fold of each request (features ``X``, ``output_tokens``), or None
    for no folds (``n_folds=None``, or ``"auto"`` with fewer than ``2 *
    AUTO_FOLDS`` requests or configurations, or with ``CROSS_FIT_BELOW``
    configurations or more).

    Repeats of a measurement (``groups``, computed by
    :func:`measurement_groups` when not given) share a fold, so that a
    fold's errors are never those of a request its net saw measured again.
    Configurations are dealt out in a seeded order, each to the fold with
    the fewest requests so far."""
    n = len(X)
    if n_folds is None or (n_folds == "auto" and n < 2 * AUTO_FOLDS):
        return None
    if groups is None:
        groups = measurement_groups(X, output_tokens)
    n_groups = int(groups.max()) + 1 if n else 0
    if n_folds == "auto":
        if not 2 * AUTO_FOLDS <= n_groups < CROSS_FIT_BELOW:
            return None
        n_folds = AUTO_FOLDS
    if n_groups < 2 * n_folds:
        raise ValueError(
            f"n_folds={n_folds} needs at least {2 * n_folds} distinct configurations (two per "
            f"fold; requests with equal features and output_tokens share a fold); got "
            f"{n_groups} in {n} requests. Use fewer folds or n_folds=None."
        )
    # A seed of its own, like the calibration split's.
    order = np.random.RandomState((seed + 2) % 2**31).permutation(n_groups)
    sizes = np.bincount(groups, minlength=n_groups)
    group_fold = np.empty(n_groups, dtype=np.int64)
    filled = np.zeros(n_folds, dtype=np.int64)
    for g in order:
        group_fold[g] = int(np.argmin(filled))
        filled[group_fold[g]] += sizes[g]
    return group_fold[groups]


def calibrates_only(n_folds, n):
    """Whether the folds of a fit of ``n`` requests only calibrate (their nets
    are dropped, the model is one net trained on every request): with
    ``n_folds="auto"`` from ``CROSS_FIT_BELOW`` requests. Else the model is
    the average of the fold nets."""
    return n_folds == "auto" and n >= CROSS_FIT_BELOW
