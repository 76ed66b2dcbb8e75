"""torch's CPU thread count around sklat's own work.

A model of this size gains nothing from torch's default of one thread per
core, and loses 3-5x as soon as another process competes for a core; the
policy below is shared by training, prediction and the profiler.
"""

import contextlib

import torch

# Multiply-adds of one step below which one CPU thread is fastest.
ONE_THREAD_WORK = 2e8


def auto_threads(n_threads, work):
    """The CPU thread count for ``work`` multiply-adds per step.

    ``n_threads`` is the estimator's parameter: an int is kept, ``"auto"``
    picks one thread for small work and torch's own default otherwise.
    """
    if n_threads != "auto":
        return int(n_threads)
    return 1 if work < ONE_THREAD_WORK else torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n):
    """Run with ``n`` torch CPU threads (``None``: unchanged), restoring the
    caller's setting."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
