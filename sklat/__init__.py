"""sklat: per-position decode latency learnt from total decode latencies."""

from ._estimator import LatencyEstimator
from .exceptions import ModelFileError, TrainingDivergedError
from .persistence import load, save

__version__ = "0.3.0"

__all__ = ["LatencyEstimator", "ModelFileError", "TrainingDivergedError", "load", "save",
           "__version__"]
