"""Checks of :class:`~sklat.LatencyEstimator`'s parameters, run by ``fit`` and
by :func:`sklat.load` (a model file's parameters pass the same checks)."""

import numbers

import numpy as np

from ._features import LOG_FEATURES
from ._loss import LOSS_KINDS
from ._validation import check_output_tokens

# Upper bounds that keep a typo from asking for terabytes: the widest model
# allowed holds about 34 M weights (a few hundred MB).
MAX_HIDDEN_SIZE = 4096
MAX_N_BASIS = 256
MAX_N_COST_TERMS = 64


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def check_params(est):
    """Raise ``ValueError`` naming the first parameter of ``est`` that is out of
    range or of the wrong type."""
    for name in (
        "prefill_weight",
        "decode_total_weight",
        "positioned_weight",
        "lr",
        "weight_decay",
        "config_mlp_weight_decay",
    ):
        value = getattr(est, name)
        if not _is_real(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    if est.decode_total_weight == 0 and est.positioned_weight == 0:
        raise ValueError(
            "decode_total_weight and positioned_weight are both 0: nothing "
            "would train the decode head."
        )
    if not isinstance(est.loss, str) or est.loss not in LOSS_KINDS:
        raise ValueError(f"loss must be one of {LOSS_KINDS}; got {est.loss!r}.")
    limits = {
        "hidden_size": MAX_HIDDEN_SIZE,
        "n_basis": MAX_N_BASIS,
        "n_cost_terms": MAX_N_COST_TERMS,
    }
    for name in (
        "hidden_size",
        "n_basis",
        "n_cost_terms",
        "max_epochs",
        "batch_size",
        "n_iter_no_change",
    ):
        value = getattr(est, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
        if name in limits and value > limits[name]:
            raise ValueError(f"{name} must be <= {limits[name]}; got {value!r}.")
    for name in ("weight_averaging", "validation_fraction", "calibration_fraction"):
        value = getattr(est, name)
        if not (_is_real(value) and 0 <= value < 1):
            raise ValueError(f"{name} must be in [0, 1); got {value!r}.")
    if not isinstance(est.log_features, str) or est.log_features not in LOG_FEATURES:
        raise ValueError(f"log_features must be 'auto', 'all' or 'none'; got {est.log_features!r}.")
    if not isinstance(est.output_tokens_col, str):
        raise ValueError(
            f"output_tokens_col must be a column name (str); got {est.output_tokens_col!r}."
        )
    if est.default_output_tokens is not None:
        if not _is_int(est.default_output_tokens):
            raise ValueError(
                "default_output_tokens must be None or an integer >= 1; "
                f"got {est.default_output_tokens!r}."
            )
        check_output_tokens([est.default_output_tokens], 1, "default_output_tokens")
    if not _is_int(est.verbose) or est.verbose < 0:
        raise ValueError(f"verbose must be an integer >= 0; got {est.verbose!r}.")
    if not (est.n_threads == "auto" or (_is_int(est.n_threads) and est.n_threads >= 1)):
        raise ValueError(f"n_threads must be 'auto' or an integer >= 1; got {est.n_threads!r}.")
