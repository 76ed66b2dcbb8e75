"""Safe model files: weights in safetensors, everything else as JSON.

:func:`save` writes one ``.safetensors`` file. Its tensors are the torch
module's weights; its header metadata holds, as JSON, the estimator's
parameters, fitted attributes, training history and the versions that wrote
it, plus a SHA-256 digest of all of it. :func:`load` parses that header and the
raw tensor bytes only: nothing is unpickled, so a file from someone else cannot
run code. Use these for models you exchange or keep; ``joblib`` (pickle)
remains fine for your own, trusted files.
"""

import hashlib
import json
import os
import platform

import numpy as np

from .exceptions import ModelFileError

FORMAT = "sklat-latency-estimator"
FORMAT_VERSION = 3

# Fitted attributes stored as JSON (arrays as lists), with their numpy dtypes.
_ARRAY_ATTRS = {"feature_log_mask_": bool, "feature_log_shift_": np.float64,
                "feature_mean_": np.float64, "feature_scale_": np.float64,
                "context_features_": np.int64}
_SCALAR_ATTRS = ("n_features_in_", "n_outputs_", "step_scale_", "prefill_scale_",
                 "max_output_tokens_", "context_scale_")


def _versions():
    import sklearn
    import skorch
    import torch

    from . import __version__
    return {"sklat": __version__, "torch": torch.__version__,
            "scikit-learn": sklearn.__version__, "skorch": skorch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _digest(metadata, tensors):
    h = hashlib.sha256(metadata.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
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
    from safetensors.torch import save_file
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    net = estimator.net_
    tensors = {f"module.{k}": v.detach().cpu().contiguous()
               for k, v in net.module_.state_dict().items()}
    attrs = {a: getattr(estimator, a) for a in _SCALAR_ATTRS}
    attrs.update({a: getattr(estimator, a).tolist() for a in _ARRAY_ATTRS})
    attrs["n_features_in_"] = int(attrs["n_features_in_"])
    if hasattr(estimator, "feature_names_in_"):
        attrs["feature_names_in_"] = [str(c) for c in estimator.feature_names_in_]
    dist = estimator.output_tokens_distribution_
    attrs["output_tokens_distribution_"] = {
        "values": dist["values"].tolist(), "probabilities": dist["probabilities"].tolist()}
    attrs["device_"] = estimator.device_
    body = json.dumps({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "params": _jsonable_params(estimator),
        "attributes": attrs,
        "total_norm": float(net.criterion_.total_norm),
        "history": json.loads(json.dumps(list(net.history), default=_json_default)),
    }, allow_nan=False)
    metadata = {"sklat": body, "sha256": _digest(body, tensors)}
    save_file(tensors, os.fspath(path), metadata=metadata)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def load(path, device="cpu"):
    """Load a model written by :func:`save` without unpickling anything.

    Parameters
    ----------
    path : str or path-like
        The model file.
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
        truncated, or was written by an incompatible format version.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from skorch.history import History

    from ._device import resolve_device
    from ._estimator import LatencyEstimator

    path = os.fspath(path)
    try:
        tensors = load_file(path, device="cpu")
        from safetensors import safe_open
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ModelFileError(
            f"{path} is not a readable sklat model file (expected the safetensors "
            f"format written by sklat.save): {exc}") from None
    body = metadata.get("sklat")
    if body is None:
        raise ModelFileError(f"{path} is a safetensors file but not a sklat model "
                             "(no 'sklat' metadata).")
    if _digest(body, tensors) != metadata.get("sha256"):
        raise ModelFileError(f"{path} failed its integrity check: the weights or "
                             "metadata were modified after sklat.save wrote them.")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ModelFileError(f"{path} has unreadable metadata: {exc}") from None
    if doc.get("format") != FORMAT:
        raise ModelFileError(f"{path} holds {doc.get('format')!r}, not {FORMAT!r}.")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written in sklat model format version "
            f"{doc.get('format_version')} (by sklat "
            f"{doc.get('versions', {}).get('sklat')}); this sklat reads version "
            f"{FORMAT_VERSION}. Re-save it with a matching sklat version.")

    est = LatencyEstimator(**doc["params"])
    attrs = doc["attributes"]
    for name in _SCALAR_ATTRS:
        setattr(est, name, attrs[name])
    for name, dtype in _ARRAY_ATTRS.items():
        setattr(est, name, np.asarray(attrs[name], dtype=dtype))
    if "feature_names_in_" in attrs:
        est.feature_names_in_ = np.asarray(attrs["feature_names_in_"], dtype=object)
    dist = attrs["output_tokens_distribution_"]
    est.output_tokens_distribution_ = {
        "values": np.asarray(dist["values"], dtype=np.int64),
        "probabilities": np.asarray(dist["probabilities"], dtype=np.float64)}
    est.device_ = resolve_device(device)

    net = est._make_net(seed=0, total_norm=doc["total_norm"])
    net.initialize()
    state = {k[len("module."):]: v for k, v in tensors.items()}
    try:
        net.module_.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the model: {exc}") from None
    net.module_.to(torch.device(est.device_)).eval()
    net.history = History(doc["history"])
    est.net_ = net
    est.history_ = net.history
    est._tabulate_basis()
    return est
