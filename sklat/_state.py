"""A fitted :class:`~sklat.LatencyEstimator`'s state, exported and restored in
one place.

:func:`export_state` gives the fitted attributes as JSON-ready values and the
module's weights as tensors; :func:`restore_state` checks all of it (types,
shapes, ranges, finiteness, agreement of the parameters with the weights'
shapes) before it builds anything, and rebuilds the net. A fitted attribute
that is neither stored nor rebuilt is an error at export, so a new one cannot
be silently left out of model files.
"""

import numbers

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from skorch.history import History

from ._calibrator import Calibrator
from ._conformal import TREE_NODES
from ._constants import MAX_OUTPUT_TOKENS
from ._curve import Curve
from ._device import resolve_device
from ._distribution import check_distribution
from ._features import FeatureTransform
from ._module import CostTermsLatencyModule
from ._params import MAX_N_COST_TERMS, check_params
from ._training import make_net, module_kwargs, net_kwargs

# Fitted attributes stored as JSON lists, with their numpy dtypes.
ARRAYS = {
    "feature_log_mask_": bool,
    "feature_log_shift_": np.float64,
    "feature_mean_": np.float64,
    "feature_scale_": np.float64,
    "context_features_": np.int64,
}
# Fitted matrices stored as JSON lists of rows: name -> shape from the number
# of features d and of outputs k (None: any number of rows).
MATRICES = {
    "feature_range_": lambda d, k: (2, d),
    "conformity_scores_": lambda d, k: (None, k),
    "difficulty_tree_": lambda d, k: (k, 3, TREE_NODES),
    "position_scores_": lambda d, k: (None, 2),
}
# More calibration requests than this in a file is not a file sklat wrote.
MAX_CALIBRATION_ROWS = 2**20
# Fitted scalars stored as JSON numbers ("prefill_scale_" may be null).
SCALARS = (
    "n_features_in_",
    "n_outputs_",
    "step_scale_",
    "prefill_scale_",
    "max_output_tokens_",
    "context_scale_",
    "total_norm_",
)
# Stored in their own form; cost_scales_ (recalibration multipliers, since
# 0.7.0) and point_factors_ (since 0.9.0) are all 1, scale_slopes_ (since
# 0.10.0) all 0, load_features_ (since 0.15.0) empty, decode_load_features_
# and prefill_load_features_ (since 0.18.0) the load features, when a file
# does not hold them.
HEAD_LOADS = ("decode_load_features_", "prefill_load_features_")
OTHER = (
    "feature_names_in_",
    "output_tokens_distribution_",
    "cost_scales_",
    "point_factors_",
    "scale_slopes_",
    "load_features_",
    *HEAD_LOADS,
)
# Rebuilt from the rest on restore: the net from the weights, the basis table
# from the net, the device from the caller.
REBUILT = ("nets_", "net_", "history_", "position_basis_", "device_")
# Weights of the members of a cross-fitted ensemble after the first are
# stored under this prefix and their index ("member1.module.<name>"); the
# first member's keep the names of a single net.
MEMBER_PREFIX = "member"
# More members than this in a file is not a file sklat wrote.
MAX_MEMBERS = 64
# Parameters added after model files first stored parameters, and the value
# that reproduces how an older file's model was trained.
ADDED_PARAMS = {
    "n_folds": None,
    "point": "center",
    "load_features": None,
    # 0.18.0: before, the prefill saw the load features, as "auto" does on
    # results without the columns of the instant a request was sent.
    "prefill_load_features": "auto",
    # 0.17.0: files before read every length of a distribution; they now read
    # them as a new model does.
    "length_groups": 128,
}


def fitted_attributes(est):
    """Names of ``est``'s fitted attributes (public, ending in ``_``)."""
    return sorted(k for k in vars(est) if k.endswith("_") and not k.startswith("_"))


def member_prefix(k):
    """Prefix of the weights of ensemble member ``k``."""
    return "" if k == 0 else f"{MEMBER_PREFIX}{k}."


def export_state(est):
    """``(attributes, tensors, histories)`` of a fitted estimator: JSON-ready
    attributes, the modules' weights (CPU tensors) and the training history
    of each net."""
    check_is_fitted(est)
    known = set(ARRAYS) | set(MATRICES) | set(SCALARS) | set(OTHER) | set(REBUILT)
    unknown = [a for a in fitted_attributes(est) if a not in known]
    if unknown:
        raise RuntimeError(
            f"fitted attribute(s) {unknown} have no place in the model file: list them "
            "in sklat._state (stored or rebuilt)."
        )
    attrs = {a: _json_scalar(getattr(est, a)) for a in SCALARS}
    attrs.update({a: np.asarray(getattr(est, a)).tolist() for a in ARRAYS})
    attrs.update({a: np.asarray(getattr(est, a), dtype=np.float64).tolist() for a in MATRICES})
    if hasattr(est, "feature_names_in_"):
        attrs["feature_names_in_"] = [str(c) for c in est.feature_names_in_]
    attrs["cost_scales_"] = [float(v) for v in est.cost_scales_]
    attrs["point_factors_"] = [float(v) for v in est.point_factors_]
    attrs["scale_slopes_"] = np.asarray(est.scale_slopes_, dtype=np.float64).tolist()
    for name in ("load_features_", *HEAD_LOADS):
        attrs[name] = [int(c) for c in getattr(est, name)]
    dist = est.output_tokens_distribution_
    attrs["output_tokens_distribution_"] = {
        "values": dist["values"].tolist(),
        "probabilities": dist["probabilities"].tolist(),
    }
    tensors = {
        f"{member_prefix(i)}module.{k}": v.detach().cpu().contiguous()
        for i, net in enumerate(est.nets_)
        for k, v in net.module_.state_dict().items()
    }
    return attrs, tensors, [list(net.history) for net in est.nets_]


def _json_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _number(attrs, name, *, integer=False, minimum=None, maximum=None, optional=False):
    value = attrs[name]
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, numbers.Integral)
    if ok:
        ok = bool(np.isfinite(value))
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bounds = "".join(
            [
                f" >= {minimum}" if minimum is not None else "",
                f" <= {maximum}" if maximum is not None else "",
            ]
        )
        raise ValueError(f"attribute {name} must be {kind}{bounds}; got {value!r}.")
    return value


def _array(attrs, name, length, dtype):
    values = attrs[name]
    if (
        not isinstance(values, list)
        or len(values) != length
        or any(isinstance(v, (list, dict, str)) or v is None for v in values)
    ):
        raise ValueError(f"attribute {name} must be a flat list of {length} values.")
    if dtype is bool:
        if not all(isinstance(v, bool) for v in values):
            raise ValueError(f"attribute {name} must hold true/false values.")
        return np.asarray(values, dtype=bool)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise ValueError(f"attribute {name} must hold numbers.")
    arr = np.asarray(values, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"attribute {name} must be finite.")
    return arr


def _nested(values, shape):
    """Whether ``values`` are nested lists of numbers of ``shape`` (a leading
    None: any length up to MAX_CALIBRATION_ROWS)."""
    if not shape:
        return isinstance(values, numbers.Real) and not isinstance(values, bool)
    return (
        isinstance(values, list)
        and len(values) <= MAX_CALIBRATION_ROWS
        and (shape[0] is None or len(values) == shape[0])
        and all(_nested(v, shape[1:]) for v in values)
    )


def _matrix(attrs, name, shape):
    rows = attrs[name]
    if not _nested(rows, shape):
        expected = " x ".join("any number of" if n is None else str(n) for n in shape)
        raise ValueError(f"attribute {name} must be nested lists of {expected} numbers.")
    arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), *shape[1:])
    if not np.isfinite(arr).all():
        raise ValueError(f"attribute {name} must be finite.")
    return arr


def check_attributes(attrs):
    """The stored attributes, type- and range-checked, as the estimator holds
    them. Raises ``ValueError`` naming the first bad one."""
    if not isinstance(attrs, dict):
        raise ValueError("the attributes must be a JSON object.")
    required = (*SCALARS, *ARRAYS, *MATRICES, "output_tokens_distribution_")
    missing = [a for a in required if a not in attrs]
    extra = [a for a in attrs if a not in (*SCALARS, *ARRAYS, *MATRICES, *OTHER)]
    if missing or extra:
        raise ValueError(f"attributes missing {missing}, unknown {extra}.")
    out = _scalars(attrs)
    d = out["n_features_in_"]
    out.update(_feature_arrays(attrs, d))
    out.update(_matrices(attrs, d, out["n_outputs_"]))
    out.update(_names_and_lengths(attrs, d, out["max_output_tokens_"]))
    out["point_factors_"] = _point_factors(attrs, out["n_outputs_"])
    if "scale_slopes_" in attrs:
        out["scale_slopes_"] = _matrix(attrs, "scale_slopes_", (out["n_outputs_"], d))
    load = _load_features(attrs, d, out["context_features_"])
    out["load_features_"] = load
    out.update(_head_loads(attrs, load))
    return out


def _feature_indices(attrs, name, default):
    value = attrs.get(name, default)
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"attribute {name} must be a list of feature indices.")
    return value


def _load_features(attrs, d, context):
    """The stored load feature indices (none in a file written before them)."""
    value = _feature_indices(attrs, "load_features_", [])
    load = np.asarray(value, dtype=np.int64)
    if (
        (load < 0).any()
        or (load >= d).any()
        or len(set(value)) != len(value)
        or set(value) & set(context.tolist())
    ):
        raise ValueError(
            f"attribute load_features_ must be distinct feature indices in 0..{d - 1}, "
            "none of them a context feature."
        )
    return load


def _head_loads(attrs, load):
    """The load features each head sees (all of them in a file written
    before 0.18.0): distinct load features, which together are all of them."""
    out = {}
    for name in HEAD_LOADS:
        value = _feature_indices(attrs, name, load.tolist())
        if len(set(value)) != len(value) or not set(value) <= set(load.tolist()):
            raise ValueError(f"attribute {name} must be distinct indices of load features.")
        out[name] = np.asarray(value, dtype=np.int64)
    if set(out[HEAD_LOADS[0]].tolist()) | set(out[HEAD_LOADS[1]].tolist()) != set(load.tolist()):
        raise ValueError(
            f"attributes {HEAD_LOADS[0]} and {HEAD_LOADS[1]} must hold every load feature."
        )
    return out


def _scalars(attrs):
    out = {
        "n_features_in_": _number(
            attrs, "n_features_in_", integer=True, minimum=1, maximum=100_000
        ),
        "n_outputs_": _number(attrs, "n_outputs_", integer=True, minimum=1, maximum=2),
        "max_output_tokens_": _number(
            attrs, "max_output_tokens_", integer=True, minimum=1, maximum=MAX_OUTPUT_TOKENS
        ),
    }
    for name in ("step_scale_", "total_norm_"):
        out[name] = float(_number(attrs, name, minimum=1e-300))
    out["context_scale_"] = float(_number(attrs, "context_scale_", minimum=1.0))
    prefill = _number(attrs, "prefill_scale_", minimum=1e-300, optional=True)
    out["prefill_scale_"] = None if prefill is None else float(prefill)
    if (out["n_outputs_"] == 2) != (prefill is not None):
        raise ValueError("attributes n_outputs_ and prefill_scale_ disagree.")
    return out


def _feature_arrays(attrs, d):
    out = {}
    for name, dtype in ARRAYS.items():
        length = d
        if name == "context_features_":
            if not isinstance(attrs[name], list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in attrs[name]
            ):
                raise ValueError(f"attribute {name} must be a list of feature indices.")
            length = len(attrs[name])
        out[name] = _array(attrs, name, length, dtype)
    if not np.isin(out["feature_log_shift_"], (0.0, 1.0)).all():
        raise ValueError("attribute feature_log_shift_ must hold 0 or 1.")
    if (out["feature_scale_"] <= 0).any():
        raise ValueError("attribute feature_scale_ must be > 0.")
    context = out["context_features_"]
    if (context < 0).any() or (context >= d).any() or len(set(context)) != len(context):
        raise ValueError(
            f"attribute context_features_ must be distinct feature indices in 0..{d - 1}."
        )
    return out


def _matrices(attrs, d, k):
    out = {name: _matrix(attrs, name, shape(d, k)) for name, shape in MATRICES.items()}
    if (out["feature_range_"][0] > out["feature_range_"][1]).any():
        raise ValueError("attribute feature_range_ must hold a minimum <= maximum per column.")
    weights = out["position_scores_"][:, 1]
    if (out["position_scores_"][:, 0] < 0).any() or (weights <= 0).any() or (weights > 1).any():
        raise ValueError(
            "attribute position_scores_ must hold absolute errors >= 0 and weights in (0, 1]."
        )
    inputs = out["difficulty_tree_"][:, 0]
    if (inputs != np.round(inputs)).any() or (inputs < -1).any() or (inputs > d).any():
        raise ValueError(f"attribute difficulty_tree_ must name inputs in -1..{d}.")
    return out


def _names_and_lengths(attrs, d, max_output_tokens):
    out = {}
    if "feature_names_in_" in attrs:
        names = attrs["feature_names_in_"]
        if not (
            isinstance(names, list) and len(names) == d and all(isinstance(c, str) for c in names)
        ):
            raise ValueError(f"attribute feature_names_in_ must be a list of {d} names.")
        out["feature_names_in_"] = np.asarray(names, dtype=object)
    dist = attrs["output_tokens_distribution_"]
    if not isinstance(dist, dict):
        raise ValueError("attribute output_tokens_distribution_ must be a JSON object.")
    dist = check_distribution(dist, as_stored=True)
    if dist["values"].max() != max_output_tokens:
        raise ValueError("attributes output_tokens_distribution_ and max_output_tokens_ disagree.")
    out["output_tokens_distribution_"] = dist
    scales = attrs.get("cost_scales_")
    if scales is not None:
        if not _positive_numbers(scales, 3, 3 + MAX_N_COST_TERMS):
            raise ValueError("attribute cost_scales_ must be a list of finite numbers > 0.")
        out["cost_scales_"] = np.asarray(scales, dtype=np.float64)
    return out


def _point_factors(attrs, k):
    """The stored ``point_factors_`` (one positive finite number per output),
    or None when the file predates them."""
    factors = attrs.get("point_factors_")
    if factors is None:
        return None
    if not _positive_numbers(factors, k, k):
        raise ValueError(
            f"attribute point_factors_ must be a list of {k} finite numbers > 0 (one per output)."
        )
    return np.asarray(factors, dtype=np.float64)


def _positive_numbers(value, min_length, max_length):
    """Whether a stored multiplier list ``value`` is a JSON list of
    ``min_length..max_length`` finite numbers > 0."""
    return (
        isinstance(value, list)
        and min_length <= len(value) <= max_length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(0 < v < float("inf") for v in value)
    )


def check_tensors(tensors, expected):
    """Compare the stored weights with the shapes the parameters imply
    (``expected``: name -> shape); they must all be finite float32."""
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or unexpected:
        raise ValueError(
            "the weights do not fit the model: "
            + "; ".join(
                [f"missing {sorted(missing)}"] * bool(missing)
                + [f"unexpected {sorted(unexpected)}"] * bool(unexpected)
            )
            + "."
        )
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise ValueError(f"weight {name} is {tensor.dtype}; sklat writes float32.")
        if tuple(tensor.shape) != tuple(expected[name]):
            raise ValueError(
                f"weight {name} has shape {tuple(tensor.shape)}; the "
                f"parameters imply {tuple(expected[name])}."
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"weight {name} holds NaN or inf.")


def assemble_fitted(est, fitted):
    """Give ``est`` (whose ``nets_`` are set) its fitted objects, the
    :class:`~sklat._curve.Curve` and the :class:`~sklat._calibrator.Calibrator`,
    and stored attributes from ``fitted`` (checked attributes by name)."""
    for name in ("n_features_in_", "n_outputs_", "total_norm_"):
        setattr(est, name, fitted[name])
    if fitted.get("feature_names_in_") is not None:
        est.feature_names_in_ = fitted["feature_names_in_"]
    transform = FeatureTransform(
        fitted["feature_log_mask_"],
        fitted["feature_log_shift_"],
        fitted["feature_mean_"],
        fitted["feature_scale_"],
    )
    curve = Curve(
        est.nets_,
        transform=transform,
        feature_range=fitted["feature_range_"],
        context_features=fitted["context_features_"],
        load_features=fitted.get("load_features_", ()),
        decode_load_features=fitted.get("decode_load_features_"),
        prefill_load_features=fitted.get("prefill_load_features_"),
        context_scale=fitted["context_scale_"],
        step_scale=fitted["step_scale_"],
        prefill_scale=fitted["prefill_scale_"],
        lengths=fitted["output_tokens_distribution_"],
        feature_names=fitted.get("feature_names_in_"),
        hidden_size=est.hidden_size,
        scales=fitted.get("cost_scales_"),
        slopes=fitted.get("scale_slopes_"),
    )
    est._calibrator = Calibrator(
        fitted["difficulty_tree_"],
        fitted["conformity_scores_"],
        fitted["position_scores_"],
        fitted.get("point_factors_"),
        curve,
    )


def restore_state(est, params, attrs, tensors, histories, device):
    """Fit the unfitted estimator ``est`` from checked parts (``histories``:
    one training history per net) and return it. Raises ``ValueError`` (for a model file:
    :class:`~sklat.ModelFileError`) on any inconsistency, before anything of
    the parameters' size is allocated."""
    if isinstance(params, dict):
        params = {**{k: v for k, v in ADDED_PARAMS.items() if k not in params}, **params}
    if not isinstance(params, dict) or set(params) != set(est.get_params()):
        given = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"the parameters must be exactly {sorted(est.get_params())}; got {given}.")
    est.set_params(**params)
    check_params(est)
    fitted = check_attributes(attrs)
    n_members = _count_members(tensors)
    if (
        not isinstance(histories, list)
        or len(histories) != n_members
        or not all(isinstance(h, list) and all(isinstance(e, dict) for e in h) for h in histories)
    ):
        raise ValueError(
            f"the training histories must be a list of {n_members} lists of JSON objects "
            "(one per net)."
        )
    device = resolve_device(device)
    expected_scales = 3 + (params["n_cost_terms"] if fitted["n_outputs_"] == 2 else 0)
    if "cost_scales_" in fitted and len(fitted["cost_scales_"]) != expected_scales:
        raise ValueError(
            f"attribute cost_scales_ must hold {expected_scales} multipliers (3 decode cost "
            "terms and the prefill's n_cost_terms)."
        )
    expected = _expected_shapes(params, fitted, device, n_members)
    check_tensors(tensors, expected)
    est.nets_ = [
        _restore_net(params, fitted, device, tensors, member_prefix(k), History(histories[k]))
        for k in range(n_members)
    ]
    est.net_ = est.nets_[0]
    est.history_ = est.net_.history
    est.device_ = device
    assemble_fitted(est, fitted)
    return est


def _count_members(tensors):
    """Number of nets whose weights ``tensors`` holds (checked: members
    ``1..k-1`` all present, at most MAX_MEMBERS)."""
    found = set()
    for name in tensors:
        head = name.split(".", 1)[0]
        if head.startswith(MEMBER_PREFIX) and head[len(MEMBER_PREFIX) :].isdigit():
            found.add(int(head[len(MEMBER_PREFIX) :]))
    n = max(found, default=0) + 1
    if n > MAX_MEMBERS or found != set(range(1, n)):
        raise ValueError(
            f"the weights name ensemble members {sorted(found)}; expected members 1..k-1 "
            f"of at most {MAX_MEMBERS}."
        )
    return n


def _expected_shapes(params, fitted, device, n_members):
    """Weight name -> shape that the parameters imply, from a module on the
    meta device (no memory): a file whose JSON asks for a huge model is
    refused before anything is allocated."""
    kwargs = net_kwargs(fitted, device)
    shape_kwargs = {k: v for k, v in kwargs.items() if k not in ("total_norm", "device")}
    with torch.device("meta"):
        module = CostTermsLatencyModule(**module_kwargs(params, **shape_kwargs))
    return {
        f"{member_prefix(i)}module.{k}": tuple(v.shape)
        for i in range(n_members)
        for k, v in module.state_dict().items()
    }


def _restore_net(params, fitted, device, tensors, prefix, history):
    """The net whose weights are the ``tensors`` under ``prefix``."""
    net = make_net(params, **net_kwargs(fitted, device)).initialize()
    start = f"{prefix}module."
    state = {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
    fresh = net.module_.state_dict()
    for buffer in ("linear_mask", "decode_input_mask", "position_scale", "context_scale"):
        if not torch.equal(fresh[buffer].cpu(), state[buffer]):
            raise ValueError(f"weight {start}{buffer} disagrees with the fitted attributes.")
    net.module_.load_state_dict(state, strict=True)
    net.module_.to(torch.device(device)).eval()
    net.history = history
    return net
