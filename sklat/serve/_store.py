"""The model a service answers with, and its versions.

Version 1 is the model the service was started with; each online update
writes the next version to ``<observations>/models/v<k>.safetensors`` and
the service swaps it in. A swap replaces one reference: a call reads the
current ``(version, estimator)`` once and answers from it whole, never from
two models. A restarted service serves the newest version on disk, so what
it learnt online survives it.
"""

import re
import threading
from pathlib import Path

from ..io import model_file

_VERSION_FILE = re.compile(r"^v(\d+)\.safetensors$")


class Served:
    """One model version: ``version`` (int), ``estimator``, ``path``."""

    def __init__(self, version, estimator, path):
        self.version = version
        self.estimator = estimator
        self.path = Path(path)


def load_estimator(path):
    """The estimator of a model file, set to predict on one torch thread (a
    service answers many small calls; more threads only contend)."""
    from ..persistence import load

    est = load(path, device="cpu")
    est.set_params(n_threads=1)
    return est


def versions_folder(observations):
    return Path(observations) / "models"


def newest_version(folder):
    """``(version, path)`` of the newest ``v<k>.safetensors`` in ``folder``, or None."""
    if folder is None or not Path(folder).is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in Path(folder).iterdir()
        if (m := _VERSION_FILE.match(p.name)) and p.is_file()
    ]
    return max(found) if found else None


class ModelStore:
    """The served model: :meth:`current` for a call, :meth:`swap` for an update."""

    def __init__(self, served):
        self._served = served
        self._lock = threading.Lock()

    @classmethod
    def open(cls, model, observations=None):
        path = model_file(model)
        newest = newest_version(None if observations is None else versions_folder(observations))
        if newest is not None:
            version, path = newest
        else:
            version = 1
        return cls(Served(version, load_estimator(path), path))

    def current(self):
        return self._served

    def swap(self, version, path):
        """Load ``path`` (outside the lock: calls go on meanwhile) and serve
        it as ``version``, unless a newer version is already served."""
        served = Served(version, load_estimator(path), path)
        with self._lock:
            if version > self._served.version:
                self._served = served
        return self._served
