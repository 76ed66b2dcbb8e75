""":class:`~sklat.LatencyEstimator`'s parameter constraints, declared for
scikit-learn's validation, and the checks a table cannot express. Run by
``fit`` and by :func:`sklat.load` (a model file's parameters pass the same
checks)."""

from ._constants import LOSS_KINDS, MAX_OUTPUT_TOKENS, POINTS
from ._features import LOG_FEATURES
from ._sklearn_compat import (
    Integral,
    NumberInterval,
    Real,
    StrOptions,
    validate_parameter_constraints,
)

# Upper bounds that keep a typo from asking for terabytes: the widest model
# allowed holds about 34 M weights (a few hundred MB).
MAX_HIDDEN_SIZE = 4096
MAX_N_BASIS = 256
MAX_N_COST_TERMS = 64

# LatencyEstimator's defaults, for the command line, whose help shows them without
# loading torch; tests/test_structure.py keeps them equal to the signature's.
DEFAULTS = {
    "prefill_weight": 2.0,
    "decode_total_weight": 1.0,
    "positioned_weight": 0.5,
    "loss": "log",
    "point": "relative",
    "hidden_size": 64,
    "n_basis": 8,
    "n_cost_terms": 3,
    "context_features": "auto",
    "load_features": "auto",
    "prefill_load_features": "auto",
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "config_mlp_weight_decay": 0.1,
    "weight_averaging": 0.98,
    "max_epochs": 200,
    "batch_size": 64,
    "validation_fraction": 0.1,
    "calibration_fraction": 0.2,
    "n_folds": "auto",
    "n_iter_no_change": 20,
    "log_features": "auto",
    "output_tokens_col": "output_tokens",
    "default_output_tokens": None,
    "length_groups": 128,
    "device": "auto",
    "n_threads": "auto",
    "random_state": None,
    "verbose": 0,
}

_WEIGHT = [NumberInterval(Real, 0, None, closed="left")]
_FRACTION = [NumberInterval(Real, 0, 1, closed="left")]
_COUNT = [NumberInterval(Integral, 1, None, closed="left")]

PARAMETER_CONSTRAINTS = {
    "prefill_weight": _WEIGHT,
    "decode_total_weight": _WEIGHT,
    "positioned_weight": _WEIGHT,
    "loss": [StrOptions(set(LOSS_KINDS))],
    "point": [StrOptions(set(POINTS))],
    "hidden_size": [NumberInterval(Integral, 1, MAX_HIDDEN_SIZE, closed="both")],
    "n_basis": [NumberInterval(Integral, 1, MAX_N_BASIS, closed="both")],
    "n_cost_terms": [NumberInterval(Integral, 1, MAX_N_COST_TERMS, closed="both")],
    # Names or indices are checked against X's features at fit time.
    "context_features": [StrOptions({"auto"}), None, "array-like"],
    "load_features": [StrOptions({"auto"}), None, "array-like"],
    "prefill_load_features": [StrOptions({"auto"}), None, "array-like"],
    "lr": _WEIGHT,
    "weight_decay": _WEIGHT,
    "config_mlp_weight_decay": _WEIGHT,
    "weight_averaging": _FRACTION,
    "max_epochs": _COUNT,
    "batch_size": _COUNT,
    "validation_fraction": _FRACTION,
    "calibration_fraction": _FRACTION,
    "n_folds": [StrOptions({"auto"}), None, NumberInterval(Integral, 2, None, closed="left")],
    "n_iter_no_change": _COUNT,
    "log_features": [StrOptions(set(LOG_FEATURES))],
    "output_tokens_col": [str],
    "default_output_tokens": [None, NumberInterval(Integral, 1, MAX_OUTPUT_TOKENS, closed="both")],
    "length_groups": [None, NumberInterval(Integral, 1, None, closed="left")],
    # "auto", "cpu", "cuda" or "cuda:<index>": resolved (and checked) at fit.
    "device": [str],
    "n_threads": [StrOptions({"auto"}), NumberInterval(Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
    "verbose": [NumberInterval(Integral, 0, None, closed="left")],
}


def check_params(est):
    """Raise ``InvalidParameterError`` (a ``ValueError``) naming the first
    parameter of ``est`` out of its declared constraints, ``ValueError`` for
    a combination that cannot train."""
    validate_parameter_constraints(
        PARAMETER_CONSTRAINTS, est.get_params(deep=False), caller_name=type(est).__name__
    )
    if est.decode_total_weight == 0 and est.positioned_weight == 0:
        raise ValueError(
            "decode_total_weight and positioned_weight are both 0: nothing "
            "would train the decode head."
        )
