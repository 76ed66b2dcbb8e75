"""The per-token latency a budget check compares, one function per strategy
of :meth:`sklat.LatencyEstimator.predict_budget`.

Each gives the point budget and the output length its calibrated upper bound
is taken at (``None``: ``N`` drawn from the distribution).
"""

from functools import partial

import numpy as np

from ._conformal import check_confidence
from ._constants import BUDGET_STRATEGIES
from ._distribution import expected_position, length_quantile
from ._validation import check_positions

# Quantile of the output lengths up to which "max" takes the curve's maximum.
DEFAULT_QUANTILE = 0.95


def check_options(strategy, *, positions, position, distribution, quantile):
    """Raise ``ValueError`` for an unknown ``strategy`` or an option given
    that ``strategy`` (with the other options) does not use, naming both."""
    if not isinstance(strategy, str) or strategy not in BUDGET_STRATEGIES:
        raise ValueError(f"strategy must be one of {BUDGET_STRATEGIES}; got {strategy!r}.")
    if positions is not None and strategy != "max":
        raise ValueError(f"positions= goes with strategy='max' only; strategy is {strategy!r}.")
    if position is not None and strategy != "position":
        raise ValueError(f"position= goes with strategy='position' only; strategy is {strategy!r}.")
    if quantile is not None and (strategy != "max" or positions is not None):
        raise ValueError(
            "output_tokens_quantile= goes with strategy='max' without positions= only "
            "(it sets the longest position that max looks at)."
        )
    if distribution is not None and (
        (strategy == "max" and positions is not None)
        or (strategy == "position" and position is not None)
    ):
        raise ValueError(
            "output_tokens_distribution= is unused when the positions are given "
            "(positions= with 'max', position= with 'position'); give one or the other."
        )


def budget_rule(strategy, dist, *, positions, position, quantile):
    """``budget(curve, coef) -> (point, length)`` of checked options (see
    :func:`check_options`) and the output-length distribution ``dist``."""
    if strategy == "max":
        positions = None if positions is None else check_positions(positions)
        quantile = check_confidence(
            DEFAULT_QUANTILE if quantile is None else quantile, "output_tokens_quantile"
        )
        return partial(max_budget, dist=dist, positions=positions, quantile=quantile)
    if strategy == "position":
        return partial(position_budget, probe=probe_position(dist, position))
    return partial(expectation_budget, dist=dist)


def max_budget(curve, coef, dist, positions, quantile):
    """The curve's maximum over ``1..L`` (``L`` the ``quantile`` of the
    output lengths), or over the probe ``positions`` when given."""
    if positions is None:
        last = length_quantile(dist, quantile)
        return curve.max_over(coef, last), last
    return curve.at(coef, positions).max(axis=1), int(positions.max())


def position_budget(curve, coef, probe):
    """The curve at the single position ``probe`` (a checked 1-element array)."""
    return curve.at(coef, probe)[:, 0], int(probe[0])


def expectation_budget(curve, coef, dist):
    """The mean latency of a decoded token, ``E[sum_{p<=N} f(p)] / E[N]``."""
    mean_length = float(np.dot(dist["values"], dist["probabilities"]))
    return curve.expected_total(coef, dist) / mean_length, None


def probe_position(dist, position):
    """The checked position of ``strategy="position"``: ``position``, by
    default the expected position of a decoded token under ``dist``."""
    return check_positions([expected_position(dist) if position is None else position])
