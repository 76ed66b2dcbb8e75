"""Choosing a configuration among candidates: the candidates' features and
preference, and the choice itself (see :meth:`sklat.LatencyEstimator.choose`)."""

import numbers

import numpy as np
import pandas as pd

from ._validation import as_float_array, check_finite

# An attainment is a mean of counts; 27/30 must reach 0.9 whatever the rounding.
_TOLERANCE = 1e-12


def check_min_attainment(value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ValueError(f"min_attainment must be a number in [0, 1]; got {value!r}.")
    return float(value)


def split_candidates(candidates, feature_names, extra_columns, prefer):
    """``(X, preference or None)``: the candidates' feature columns (and the
    ``extra_columns`` among them, such as ``output_tokens``), and the
    ``prefer`` column (a name of ``candidates``) or values (array-like)."""
    if isinstance(prefer, str):
        if not isinstance(candidates, pd.DataFrame) or prefer not in candidates.columns:
            raise ValueError(
                f"prefer={prefer!r} names no column of candidates; give the name of a "
                "column of the candidates DataFrame, or one value per candidate."
            )
        if feature_names is not None and prefer in list(feature_names):
            raise ValueError(
                f"prefer={prefer!r} is a feature of the model; prefer a column that "
                "scores the candidates otherwise (e.g. a quality score)."
            )
        preference = as_float_array(candidates[prefer].to_numpy(), f"prefer column {prefer!r}")
    elif prefer is not None:
        preference = as_float_array(prefer, "prefer")
    else:
        preference = None
    if isinstance(candidates, pd.DataFrame) and feature_names is not None:
        keep = [*feature_names, *[c for c in extra_columns if c in candidates.columns]]
        missing = [c for c in feature_names if c not in candidates.columns]
        if missing:
            raise ValueError(f"candidates lack the feature column(s) {missing}.")
        if list(candidates.columns) != keep:  # a copy costs more than the decision
            candidates = candidates[keep]
    if preference is not None:
        if preference.ndim != 1 or len(preference) != len(candidates):
            raise ValueError(
                f"prefer must give one value per candidate ({len(candidates)}); got shape "
                f"{preference.shape}."
            )
        check_finite(preference, "prefer")
    return candidates, preference


def meets(attainment, min_attainment):
    """Whether each attainment reaches ``min_attainment``."""
    return np.asarray(attainment) >= min_attainment - _TOLERANCE


def best(attainment, min_attainment, preference):
    """The index of the choice: among the candidates whose attainment reaches
    ``min_attainment``, the one with the highest ``preference`` (the first
    such in order, without a preference); else the one with the highest
    attainment. Ties go to the earlier candidate."""
    qualified = np.flatnonzero(meets(attainment, min_attainment))
    if not len(qualified):
        return int(np.argmax(attainment))
    if preference is None:
        return int(qualified[0])
    return int(qualified[np.argmax(preference[qualified])])
