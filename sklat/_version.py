"""The installed package's version, read from its metadata (pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sklat")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"


def library_versions():
    """Versions of sklat, the libraries its models depend on and Python, as
    recorded in model files and ``metrics.json``."""
    # Imported here, not with the module: every import of sklat reads
    # __version__, and torch and skorch take seconds to load.
    import platform

    import numpy
    import sklearn
    import skorch
    import torch

    return {
        "sklat": __version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "skorch": skorch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
