"""sklat: per-position decode latency learnt from total decode latencies."""

from ._estimator import LatencyEstimator

__version__ = "0.1.0"

__all__ = ["LatencyEstimator", "__version__"]
