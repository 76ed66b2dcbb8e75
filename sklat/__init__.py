"""sklat: per-position decode latency learnt from total decode latencies."""

from ._estimator import LatencyEstimator
from .persistence import ModelFileError, load, save

__version__ = "0.1.0"

__all__ = ["LatencyEstimator", "ModelFileError", "load", "save", "__version__"]
