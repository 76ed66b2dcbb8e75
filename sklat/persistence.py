"""Safe model files: weights in safetensors, everything else as JSON.

:func:`save` writes one ``.safetensors`` file. Its tensors are the torch
module's weights; its header metadata holds, as JSON, the estimator's
parameters, fitted attributes, training history and the versions that wrote
it, plus a SHA-256 digest of all of it. :func:`load` parses that header and the
raw tensor bytes only: nothing is unpickled, so a file from someone else cannot
run code, and every value is checked before the model is built. The digest
detects accidents (truncation, bit flips, edits by hand); it has no key, so it
does not prove who wrote a file. Use these for models you exchange or keep;
``joblib`` (pickle) remains fine for your own, trusted files.
"""

import hashlib
import json
import os

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._constants import MODEL_FILE
from ._estimator import LatencyEstimator
from ._state import export_state, restore_state
from ._version import library_versions
from .exceptions import ModelFileError
from .io import model_file

FORMAT = "sklat-latency-estimator"
FORMAT_VERSION = 8
# Versions this sklat reads: 6 added the nets of a cross-fitted ensemble
# (weights "member<k>.module.*", their histories in "member_histories"); 7
# the point factors (attribute "point_factors_", parameter "point"); 8 the
# recalibration's slopes (attribute "scale_slopes_"). An older reader would
# ignore each and so predict other values.
READABLE_VERSIONS = (5, 6, 7, 8)
# JSON metadata nested deeper than this is refused before parsing (sklat
# writes at most 4 levels).
_MAX_JSON_DEPTH = 32


def _digest(metadata, tensors):
    h = hashlib.sha256(metadata.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        # Raw bytes whatever the dtype (numpy has no bfloat16).
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _jsonable_params(est):
    params = {}
    for key, value in est.get_params(deep=False).items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (list, tuple, np.ndarray)):
            # A list of column names or indices (context_features).
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
            if all(isinstance(v, (int, str)) for v in value):
                params[key] = value
                continue
        if not (value is None or isinstance(value, (bool, int, float, str))):
            # A RandomState instance cannot be stored; a loaded model is
            # already trained, so only refits would see the difference.
            value = None
        params[key] = value
    return params


def save(estimator, path):
    """Save a fitted :class:`~sklat.LatencyEstimator` to a safe model file.

    Parameters
    ----------
    estimator : LatencyEstimator
        A fitted estimator (trained on any device).
    path : str or path-like
        File to write; ``.safetensors`` is the conventional suffix.

    Examples
    --------
    >>> import tempfile, os
    >>> import sklat
    >>> from sklat.datasets import make_positioned_latency
    >>> data = make_positioned_latency(60, random_state=0)
    >>> est = sklat.LatencyEstimator(max_epochs=2, random_state=0).fit(
    ...     data.X, data.y, output_tokens=data.output_tokens)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> sklat.save(est, path)
    >>> loaded = sklat.load(path)
    >>> bool((loaded.predict_total(data.X, 8) == est.predict_total(data.X, 8)).all())
    True
    """
    attrs, tensors, histories = export_state(estimator)
    histories = json.loads(json.dumps(histories, default=_json_default))
    body = json.dumps(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "versions": library_versions(),
            "params": _jsonable_params(estimator),
            "attributes": attrs,
            "history": histories[0],
            "member_histories": histories[1:],
        },
        allow_nan=False,
    )
    metadata = {"sklat": body, "sha256": _digest(body, tensors)}
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path} is a folder: give the file to write, such as {os.path.join(path, MODEL_FILE)}."
        )
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the folder {folder} of the model file {path} does not exist.")
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as exc:
        # safetensors reports a file it cannot write (a read-only place, a
        # full disk) as its own error, not as an OSError.
        if "I/O error" not in str(exc):
            raise
        raise OSError(f"cannot write the model file {path}: {exc}") from None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _json_depth(text):
    """Deepest nesting of brackets in JSON ``text`` (strings skipped), without
    parsing it: a file nested 100,000 deep is refused before ``json.loads``
    recurses into it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load(path, device="cpu"):
    """Load a model written by :func:`save` without unpickling anything.

    Every part of the file is checked before the model is built: the
    parameters pass the estimator's own checks, the fitted attributes are
    checked for type, shape, range and finiteness, the weights must have the
    shapes the parameters imply and be finite. A file that fails any check
    raises :class:`~sklat.ModelFileError`, quickly and without allocating
    more than the file holds.

    The SHA-256 digest stored in the file detects accidents (a truncated
    copy, a flipped bit, an edit by hand); it has no key, so it does not
    prove who wrote the file. Loading never runs code from the file.

    Parameters
    ----------
    path : str or path-like
        The model file, or a ``sklat train`` output folder (its
        ``model.safetensors``).
    device : str, default="cpu"
        Where to place the weights: ``"cpu"``, ``"cuda"`` or ``"auto"``. A
        model trained on CUDA loads on a CPU-only machine.

    Returns
    -------
    estimator : LatencyEstimator
        The fitted estimator.

    Raises
    ------
    ModelFileError
        If the file is not a sklat model (a pickle, say), was altered or
        truncated, holds values out of range, or was written by an
        incompatible format version.
    """
    path = os.fspath(model_file(path))
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ModelFileError(
            f"{path} is not a readable sklat model file (expected the safetensors "
            f"format written by sklat.save): {exc}"
        ) from None
    body = metadata.get("sklat")
    if body is None:
        raise ModelFileError(
            f"{path} is a safetensors file but not a sklat model (no 'sklat' metadata)."
        )
    if _digest(body, tensors) != metadata.get("sha256"):
        raise ModelFileError(
            f"{path} failed its integrity check: the weights or "
            "metadata were modified after sklat.save wrote them."
        )
    if _json_depth(body) > _MAX_JSON_DEPTH:
        raise ModelFileError(
            f"{path} has metadata nested deeper than "
            f"{_MAX_JSON_DEPTH} levels; sklat does not write such files."
        )
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path} has unreadable metadata: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelFileError(
            f"{path}: the metadata must be a JSON object, not {type(doc).__name__}."
        )
    if doc.get("format") != FORMAT:
        raise ModelFileError(f"{path} holds {doc.get('format')!r}, not {FORMAT!r}.")
    if doc.get("format_version") not in READABLE_VERSIONS:
        versions = doc.get("versions")
        writer = versions.get("sklat") if isinstance(versions, dict) else None
        raise ModelFileError(
            f"{path} was written in sklat model format version "
            f"{doc.get('format_version')} (by sklat {writer}); this sklat reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Re-save it with a matching sklat version."
        )
    missing = [k for k in ("params", "attributes", "history") if k not in doc]
    if missing:
        raise ModelFileError(f"{path}: the metadata lacks {missing}.")
    try:
        histories = [doc["history"], *doc.get("member_histories", [])]
        return restore_state(
            LatencyEstimator(), doc["params"], doc["attributes"], tensors, histories, device
        )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path} holds an invalid model: {exc}") from None
