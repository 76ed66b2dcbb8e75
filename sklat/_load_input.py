"""One load for every row: what a controller knows when it decides (the
requests in flight now), set as the load feature column(s) of the candidates
instead of a column repeated in each of them."""

import numbers

import numpy as np
import pandas as pd

from ._constants import SELF_COUNTED_LOADS
from ._features import COUNTS_ITSELF, first_below_one
from ._validation import feature_label


def with_load(estimator, X, load):
    """``X`` with the model's load feature(s) set to ``load`` for every row.

    ``load``: ``None`` (``X`` as it is, holding its load columns), a number
    (the model's one load feature) or a dict ``{feature: value}`` naming load
    features by name or column index. ``X`` leaves out the columns ``load``
    gives: a DataFrame gains them, an array has them inserted at their
    positions.
    """
    names = getattr(estimator, "feature_names_in_", None)
    if load is None:
        _check_load_columns(estimator, X, names)
        return X
    values = load_values(estimator, load)
    if isinstance(X, pd.DataFrame) and names is not None:
        given = [str(names[col]) for col in values if str(names[col]) in X.columns]
        if given:
            raise ValueError(
                f"X holds the load feature column(s) {given} and load= gives them too: "
                "give each load once."
            )
        out = X.assign(**{str(names[col]): value for col, value in values.items()})
        # The model's columns in its order (assign appends the load at the
        # end, which scikit-learn's check of the feature names refuses where
        # the load was not the last column in fit), then any others.
        order = [str(n) for n in names]
        if set(order) <= set(out.columns):
            out = out[order + [c for c in out.columns if c not in order]]
        return out
    arr = np.asarray(X)
    expected = estimator.n_features_in_ - len(values)
    if arr.ndim != 2 or arr.shape[1] != expected:
        raise ValueError(
            f"with load= giving {len(values)} load feature(s), X must have {expected} "
            f"columns (the other features); got shape {arr.shape}."
        )
    out = arr.astype(np.float64)
    for col in sorted(values):
        out = np.insert(out, col, values[col], axis=1)
    return out


def _check_load_columns(estimator, X, names):
    """A DataFrame ``X`` without ``load=`` that holds every feature but some
    load ones: say how to give the load (scikit-learn's own message names
    the missing columns only)."""
    if not isinstance(X, pd.DataFrame) or names is None:
        return
    missing = [str(n) for n in names if str(n) not in X.columns]
    loads = {str(names[int(col)]) for col in getattr(estimator, "load_features_", [])}
    if missing and set(missing) <= loads:
        raise ValueError(
            f"X lacks the load feature column(s) {missing}: give them as columns of X, or "
            f"the load every row is predicted at with load= (e.g. load={{{missing[0]!r}: 8}})."
        )


def load_values(estimator, load):
    """``{column index: value}`` of the loads ``load`` gives (see
    :func:`with_load`), checked."""
    load_cols = [int(c) for c in estimator.load_features_]
    if not load_cols:
        raise ValueError(
            "load= needs a model trained with a load feature (its load_features_ is "
            "empty): fit it with a concurrency column, or give the load as a column of X."
        )
    names = getattr(estimator, "feature_names_in_", None)
    if isinstance(load, dict):
        if not load:
            raise ValueError("load= is an empty dict; give at least one load feature.")
        items = load.items()
    else:
        if len(load_cols) != 1:
            shown = [str(names[c]) if names is not None else c for c in load_cols]
            raise ValueError(
                f"the model has {len(load_cols)} load features {shown}: give load= as a "
                "dict {feature: value}."
            )
        items = [(load_cols[0], load)]
    out = {}
    for key, value in items:
        col = _column(key, load_cols, names)
        shown = feature_label(names, col)
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()  # np.asarray(8.0) is one number
        if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
            raise ValueError(
                f"load of feature {shown} is one number for every row; got {value!r}. "
                "A load per row is a column of X."
            )
        if (
            not isinstance(value, numbers.Real)
            or isinstance(value, bool)
            or not np.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"load of feature {shown} must be a finite number >= 0; got {value!r}."
            )
        if names is not None and str(names[col]) in SELF_COUNTED_LOADS:
            if first_below_one([value]) is not None:
                raise ValueError(f"load of feature {shown} {COUNTS_ITSELF}; got {value!r}.")
        out[col] = float(value)
    return out


def _column(key, load_cols, names):
    if isinstance(key, str) and names is not None and key in [str(n) for n in names]:
        col = [str(n) for n in names].index(key)
    elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
        col = int(key)
    else:
        col = None
    if col not in load_cols:
        shown = ", ".join(feature_label(names, c) for c in load_cols)
        raise ValueError(f"load= names {key!r}, which is not a load feature (they are {shown}).")
    return col
