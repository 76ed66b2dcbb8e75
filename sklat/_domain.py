"""The domain a fitted model has seen: the training range of every feature, and
the positions up to the longest training request.

Outside it a prediction is an extrapolation: :func:`warn_outside` says so with
an :class:`~sklat.exceptions.ExtrapolationWarning`. Far outside it the learnt
power laws would grow without bound (``top_k=1e6`` of a model trained on
``1..8`` overflowed to inf), so :func:`clip` holds a feature at the edge of
its *extended* range, the training range widened by its own width on each side
(in the model's log-scaled units, so ``1..8`` extends to ``1/8..64``): every
prediction stays finite.
"""

import contextlib
import os
import sys
import warnings

import numpy as np

from ._validation import first_true
from .exceptions import ExtrapolationWarning

# How many training-range widths past each edge a feature is still evaluated.
EXTENSION = 1.0
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _caller_level():
    """``stacklevel`` of the first frame outside sklat, for the function that
    calls this one: the warning points at the user's line, whichever public
    method led there."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def quiet_extrapolation():
    """Silence :class:`ExtrapolationWarning` where the caller counts or reports
    the rows outside the domain itself (``in_domain``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        yield


def feature_range(X_arr):
    """(2, n_features): training minimum and maximum of each feature."""
    return np.vstack([X_arr.min(axis=0), X_arr.max(axis=0)])


def extended_range(feature_range_, log_mask, log_shift):
    """(2, n_features): the range a feature is evaluated on, in raw units."""
    lo, hi = feature_range_
    lo_t = np.where(log_mask, np.log(np.maximum(lo + log_shift, 1e-300)), lo)
    hi_t = np.where(log_mask, np.log(np.maximum(hi + log_shift, 1e-300)), hi)
    width = EXTENSION * (hi_t - lo_t)
    with np.errstate(over="ignore"):
        ext_lo = np.where(log_mask, np.exp(lo_t - width) - log_shift, lo_t - width)
        ext_hi = np.where(log_mask, np.exp(hi_t + width) - log_shift, hi_t + width)
    # Log-scaled features are >= 0 (checked before clipping).
    ext_lo = np.where(log_mask, np.maximum(ext_lo, 0.0), ext_lo)
    return np.vstack([ext_lo, np.minimum(ext_hi, np.finfo(np.float64).max)])


def outside(X_arr, feature_range_):
    """(n, n_features) bool: values outside the training range."""
    return (X_arr < feature_range_[0]) | (X_arr > feature_range_[1])


def warn_outside(X_arr, feature_range_, extended, label):
    """One :class:`ExtrapolationWarning` per feature with values outside its
    training range, naming the feature, the first such value and the range."""
    mask = outside(X_arr, feature_range_)
    for col in np.flatnonzero(mask.any(axis=0)):
        rows = np.flatnonzero(mask[:, col])
        row = int(rows[0])
        lo, hi = feature_range_[:, col]
        beyond = (X_arr[rows, col] < extended[0, col]) | (X_arr[rows, col] > extended[1, col])
        held = (
            f"; values beyond [{extended[0, col]:.6g}, {extended[1, col]:.6g}] are "
            "evaluated at that edge"
            if beyond.any()
            else ""
        )
        warnings.warn(
            f"X column {label(int(col))} = {X_arr[row, col]:.6g} (sample {row}) is outside "
            f"its training range [{lo:.6g}, {hi:.6g}] ({len(rows)} of {len(X_arr)} "
            f"samples outside): the prediction is an extrapolation{held}.",
            ExtrapolationWarning,
            stacklevel=_caller_level(),
        )


def warn_lengths(values, high, what):
    """An :class:`ExtrapolationWarning` when output lengths (or positions)
    ``values`` go past ``high``, the longest training request: every position
    up to it took part in some training request's total, none past it."""
    values = np.asarray(values)
    bad = values > high
    i = first_true(bad)
    if i is not None:
        warnings.warn(
            f"{what} {int(values[i])} (entry {i}) is past the longest training request "
            f"({high} tokens; {int(bad.sum())} of {values.size} past it): the curve's "
            "learnt shape is held constant there, so the prediction is an extrapolation.",
            ExtrapolationWarning,
            stacklevel=_caller_level(),
        )


def clip(X_arr, extended):
    """``X_arr`` with every feature held inside its extended range."""
    return np.clip(X_arr, extended[0], extended[1])
