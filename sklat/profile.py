"""The profilers at their earlier import path; they live in :mod:`sklat.acquire`."""

from .acquire import profile_endpoint, profile_model

__all__ = ["profile_endpoint", "profile_model"]
