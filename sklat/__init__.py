"""sklat: per-position decode latency learnt from total decode latencies."""

from ._constants import MAX_OUTPUT_TOKENS
from ._estimator import LatencyEstimator
from ._version import __version__
from .exceptions import ModelFileError, TrainingDivergedError
from .persistence import load, save

__all__ = [
    "LatencyEstimator",
    "MAX_OUTPUT_TOKENS",
    "ModelFileError",
    "TrainingDivergedError",
    "load",
    "save",
    "__version__",
]
