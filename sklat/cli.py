"""The ``sklat`` command line's entry point (the commands: :mod:`sklat._cli`)."""

from ._cli import build_parser, main

__all__ = ["build_parser", "main"]
