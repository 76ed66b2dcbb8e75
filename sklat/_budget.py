"""The per-token latency a budget check compares, one function per strategy
of :meth:`sklat.LatencyEstimator.predict_budget`.

Each gives the point budget and the output length its calibrated upper bound
is taken at (``None``: ``N`` drawn from the distribution).
"""

import numpy as np

from ._distribution import expected_position, length_quantile
from ._validation import check_positions


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
