"""The installed package's version, read from its metadata (pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sklat")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
