"""sklat: per-position decode latency learnt from total decode latencies."""

import importlib

from ._constants import MAX_OUTPUT_TOKENS, PROBE_POSITIONS
from ._version import __version__
from .exceptions import (
    BenchmarkFormatError,
    ExtrapolationWarning,
    ModelFileError,
    TrainingDivergedError,
)

# The estimator and the model files need torch and skorch, which take seconds
# to import; they load on first use, so that the measuring side
# (sklat.acquire, sklat.io) and `sklat --help` do not pay for them.
_LAZY = {
    "LatencyEstimator": "._estimator",
    "load": ".persistence",
    "save": ".persistence",
}

__all__ = [
    "BenchmarkFormatError",
    "ExtrapolationWarning",
    "LatencyEstimator",
    "MAX_OUTPUT_TOKENS",
    "ModelFileError",
    "PROBE_POSITIONS",
    "TrainingDivergedError",
    "load",
    "save",
    "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
