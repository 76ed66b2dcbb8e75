"""The configuration features as the model sees them.

- :class:`FeatureTransform`: the log scaling and standardisation fitted on the
  training configurations. Costs scale as powers of counts (layers, experts,
  tokens, parallelism), so a non-negative feature is taken as ``log(x)`` (or
  ``log1p(x)`` where it holds zeros): a linear map of the result is then a
  power law of the raw features.
- :func:`resolve_roles`: which columns add up to the context length at the
  first decode step, and which measure the load.
"""

import numbers
import warnings
from collections import namedtuple

import numpy as np

from ._constants import (
    AUTO_CONTEXT_FEATURES,
    AUTO_LOAD_FEATURES,
    AUTO_PREFILL_LOAD_FEATURES,
    SELF_COUNTED_LOADS,
    SELF_COUNTED_TOLERANCE,
)
from ._validation import feature_label, first_true

LOG_FEATURES = ("auto", "all", "none")

# The columns with a role in the curve (int arrays of feature indices): the
# context at the first decode step (their sum), the load (every load column;
# decode_load and prefill_load: those the decode's and the prefill's costs see,
# None: all); and the log scaling chosen on all the training requests
# (FeatureTransform.log_scaling), None until then.
FeatureRoles = namedtuple(
    "FeatureRoles", "context load scaling decode_load prefill_load", defaults=(None,) * 3
)


class FeatureTransform:
    """``z = (log-scaled X - mean) / scale``, fitted on training configurations.

    Parameters
    ----------
    log_mask : ndarray of bool
        Columns that are log-transformed.
    log_shift : ndarray of float
        ``0`` (``log(x)``, the column was > 0 at fit time) or ``1``
        (``log1p(x)``, it held zeros).
    mean, scale : ndarray of float
        Standardisation of the (log-)features.
    """

    def __init__(self, log_mask, log_shift, mean, scale):
        self.log_mask = log_mask
        self.log_shift = log_shift
        self.mean = mean
        self.scale = scale

    @staticmethod
    def log_scaling(X_arr, log_features, label):
        """``(log_mask, log_shift)``: which columns of ``X_arr`` are log-scaled,
        and how. Chosen on every training request (before any calibration or
        validation split), so that a value one split holds and the other does
        not (a zero, a negative) cannot make the scaling refuse it."""
        nonneg = (X_arr >= 0).all(axis=0)
        col = first_true(~nonneg)
        if log_features == "all" and col is not None:
            raise ValueError(
                f"log_features='all' needs features >= 0; X column "
                f"{label(col)} has negative values."
            )
        mask = nonneg if log_features in ("auto", "all") else np.zeros_like(nonneg)
        return mask, np.where(mask & (X_arr > 0).all(axis=0), 0.0, 1.0)

    @classmethod
    def fit(cls, X_arr, log_features, label, scaling=None):
        """Choose the log columns (or take ``scaling``, :meth:`log_scaling` of
        all the training requests) and standardise. ``label(col)`` names a
        column in error messages."""
        mask, shift = scaling or cls.log_scaling(X_arr, log_features, label)
        transform = cls(mask, shift, None, None)
        logged = transform._log_columns(X_arr, label)
        std = logged.std(axis=0)
        transform.mean = logged.mean(axis=0)
        transform.scale = np.where(std > 0, std, 1.0)
        return transform

    def check(self, X_arr, label, *, strict=True):
        """Raise ``ValueError`` for values a log-scaled column cannot take:
        ``<= 0`` for ``log(x)`` (``strict``; the estimator's predictions hold a
        0 at the edge of the column's range instead, so only negative values
        are refused there), ``< 0`` for ``log1p(x)``."""
        mask = self.log_mask
        if not mask.any():
            return
        sub = X_arr[:, mask]
        shift = self.log_shift[mask] if strict else np.ones(int(mask.sum()))
        first = first_true(sub + shift <= 0 if strict else sub < 0)
        if first is not None:
            row, j = first
            col = int(np.flatnonzero(mask)[j])
            need = "> 0" if shift[j] == 0 else ">= 0"
            raise ValueError(
                f"X column {label(col)} was log-scaled at fit time and needs values "
                f"{need}; sample {row} is {sub[row, j]}."
            )

    def _log_columns(self, X_arr, label, checked=False):
        mask = self.log_mask
        if not mask.any():
            return X_arr
        if not checked:
            self.check(X_arr, label)
        out = X_arr.copy()
        out[:, mask] = np.log(out[:, mask] + self.log_shift[mask])
        return out

    def transform(self, X_arr, label, *, checked=False):
        """Standardised features, float32. ``checked``: ``X_arr`` is known to
        hold values the log columns can take (see :meth:`check`)."""
        z = (self._log_columns(X_arr, label, checked) - self.mean) / self.scale
        return z.astype(np.float32)


def warn_if_standardised(X_arr, label):
    """Warn when a feature looks standardised (mean 0, standard deviation 1,
    negative values): behind a ``StandardScaler`` the raw counts are gone, the
    automatic log scaling cannot apply, and costs that are power laws of the
    counts (layers x experts, tokens) stop being linear in the features."""
    if len(X_arr) < 3:
        return
    mean, std = X_arr.mean(axis=0), X_arr.std(axis=0)
    looks = (np.abs(mean) < 1e-6) & (np.abs(std - 1) < 1e-3) & (X_arr < 0).any(axis=0)
    if looks.any():
        cols = ", ".join(label(int(c)) for c in np.flatnonzero(looks))
        warnings.warn(
            f"X column(s) {cols} look standardised (mean 0, standard deviation 1): "
            "log_features='auto' cannot log-scale them, so power-law costs of the raw "
            "counts are not captured and accuracy can drop sharply. Give "
            "LatencyEstimator the raw configuration features (it standardises them "
            "itself), e.g. drop the StandardScaler in front of it.",
            UserWarning,
            stacklevel=4,
        )


def resolve_roles(
    context_features, load_features, feature_names, n_features, prefill_load_features="auto"
):
    """:class:`FeatureRoles` from the estimator's ``context_features``,
    ``load_features`` (the decode's loads) and ``prefill_load_features`` (the
    prefill's; ``"auto"``: the columns of ``AUTO_PREFILL_LOAD_FEATURES`` that
    ``X`` has, or the decode's loads where it has none of them; ``None``:
    none). No column is both a context feature and a load."""
    context = _resolve_columns(
        "context_features", context_features, AUTO_CONTEXT_FEATURES, feature_names, n_features
    )
    decode = _resolve_columns(
        "load_features", load_features, AUTO_LOAD_FEATURES, feature_names, n_features
    )
    prefill = _resolve_columns(
        "prefill_load_features",
        prefill_load_features,
        AUTO_PREFILL_LOAD_FEATURES,
        feature_names,
        n_features,
    )
    if isinstance(prefill_load_features, str) and len(prefill) == 0:
        prefill = decode
    load = np.asarray(sorted(set(decode.tolist()) | set(prefill.tolist())), dtype=np.int64)
    both = sorted(set(context.tolist()) & set(load.tolist()))
    if both:
        raise ValueError(
            f"feature {feature_label(feature_names, both[0])} is both a context feature "
            "and a load feature; a column can only have one role."
        )
    return FeatureRoles(context=context, load=load, decode_load=decode, prefill_load=prefill)


def _resolve_columns(param, value, auto, feature_names, n_features):
    """Column indices a role parameter names: ``"auto"``: the columns named
    ``auto`` among ``feature_names`` (none if ``X`` had no column names);
    ``None``: none; otherwise a list of feature names or column indices."""
    expected = f"{param} must be 'auto', None or a list of feature names or column indices"
    if value is None:
        return np.zeros(0, dtype=np.int64)
    names = [] if feature_names is None else [str(c) for c in feature_names]
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(expected + f"; got {value!r}.")
        return np.asarray([names.index(c) for c in auto if c in names], dtype=np.int64)
    try:
        entries = list(value)
    except TypeError:
        raise ValueError(expected + f"; got {value!r}.") from None
    indices = []
    for entry in entries:
        if isinstance(entry, str):
            if entry not in names:
                raise ValueError(
                    f"{param} names {entry!r}, which is not a feature of X "
                    f"(features: {names or 'X has no column names'})."
                )
            indices.append(names.index(entry))
        elif isinstance(entry, numbers.Integral) and not isinstance(entry, bool):
            if not 0 <= entry < n_features:
                raise ValueError(
                    f"{param} index {entry} is out of range for {n_features} features."
                )
            indices.append(int(entry))
        else:
            raise ValueError(
                f"{param} entries must be feature names or column indices; got {entry!r}."
            )
    if len(set(indices)) != len(indices):
        raise ValueError(f"{param} lists a feature twice: {entries!r}.")
    return np.asarray(indices, dtype=np.int64)


def _nonnegative(X_arr, indices, label, role):
    """The columns ``indices`` of ``X_arr``; ``ValueError`` naming the column,
    its ``role`` and the sample for a negative value."""
    sub = X_arr[:, indices]
    first = first_true(sub < 0)
    if first is not None:
        row, j = first
        raise ValueError(
            f"X column {label(int(indices[j]))} is {role} and must be >= 0; sample {row} "
            f"is {sub[row, j]}."
        )
    return sub


# The rule every check of a self-counted load (``SELF_COUNTED_LOADS``) states,
# whatever it names: a column and sample, a file and row, a ``load=``.
COUNTS_ITSELF = "counts this client's requests including the request itself, so it must be >= 1"
WAITING_WITHIN = (
    "counts those of 'in_flight_at_start' still waiting for their first token, so it "
    "cannot exceed it"
)


def first_below_one(values):
    """Index of the first value of a self-counted load below 1 (the rounding
    of a time-weighted mean allowed for), or None."""
    return first_true(np.asarray(values, dtype=np.float64) < 1.0 - SELF_COUNTED_TOLERANCE)


def first_more_waiting(in_flight, waiting):
    """Index of the first request with more waiting than in flight at its
    sending (rounding allowed for), or None."""
    in_flight = np.asarray(in_flight, dtype=np.float64)
    return first_true(np.asarray(waiting, dtype=np.float64) > in_flight + SELF_COUNTED_TOLERANCE)


def check_load(X_arr, indices, label, names=None):
    """Raise ``ValueError`` for a negative value of a load feature (a count
    of requests or a usage), naming the sample; with the feature ``names``,
    for a count that includes the request itself (``concurrency``,
    ``in_flight_at_start``, ``waiting_at_start``) below 1, and for more
    requests waiting for their first token than in flight when it was sent."""
    _nonnegative(X_arr, indices, label, "a load feature (requests in flight or a usage)")
    if names is None:
        return
    named = {str(names[int(col)]): int(col) for col in indices}
    for name, col in named.items():
        if name not in SELF_COUNTED_LOADS:
            continue
        first = first_below_one(X_arr[:, col])
        if first is not None:
            raise ValueError(
                f"X column {label(col)} {COUNTS_ITSELF}; sample {first} is {X_arr[first, col]}."
            )
    if {"in_flight_at_start", "waiting_at_start"} <= named.keys():
        in_flight = X_arr[:, named["in_flight_at_start"]]
        waiting = X_arr[:, named["waiting_at_start"]]
        first = first_more_waiting(in_flight, waiting)
        if first is not None:
            raise ValueError(
                f"X column 'waiting_at_start' {WAITING_WITHIN}; sample {first} has "
                f"{waiting[first]} waiting and {in_flight[first]} in flight."
            )


def context_lengths(X_arr, indices, label):
    """Context length (tokens) at the first decode step of each row: the sum of
    the context columns, which must be >= 0."""
    if len(indices) == 0:
        return np.zeros(len(X_arr))
    return _nonnegative(X_arr, indices, label, "a context feature (a number of tokens)").sum(axis=1)
