"""sklat: per-position decode latency learnt from total decode latencies."""

from ._constants import MAX_OUTPUT_TOKENS, PROBE_POSITIONS
from ._estimator import LatencyEstimator
from ._version import __version__
from .exceptions import (
    BenchmarkFormatError,
    ExtrapolationWarning,
    ModelFileError,
    TrainingDivergedError,
)
from .persistence import load, save

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
