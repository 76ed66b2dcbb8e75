"""The private parts of scikit-learn sklat builds on: parameter validation
and sample-weight checks.

``sklearn.utils._param_validation`` and ``_check_sample_weight`` are private
API: every import of them goes through this module, so a move in a future
scikit-learn is mended in one place.
"""

from numbers import Integral, Real

from sklearn.utils.validation import _check_sample_weight as check_sample_weight
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)

__all__ = [
    "Integral",
    "check_sample_weight",
    "InvalidParameterError",
    "NumberInterval",
    "Real",
    "StrOptions",
    "validate_parameter_constraints",
]


class NumberInterval(Interval):
    """An :class:`Interval` that refuses booleans: ``True`` is an ``Integral``
    to Python, but ``hidden_size=True`` or ``lr=True`` is a mistake, not 1."""

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)
