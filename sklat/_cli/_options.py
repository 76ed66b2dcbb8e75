"""Option helpers of the ``sklat`` command line, and the estimator's options of
``sklat train`` declared once (:data:`ESTIMATOR_ARGUMENTS`)."""

import argparse
from pathlib import Path

from .._constants import LOSS_KINDS, POINTS
from .._results import first_repeated


def add_option(parser, name, *aliases, **kwargs):
    """An option under its underscore and its dashed spelling (and aliases)."""
    names = []
    for spelling in (name, *aliases):
        names.append(f"--{spelling}")
        if "_" in spelling:
            names.append(f"--{spelling.replace('_', '-')}")
    parser.add_argument(*names, dest=name, **kwargs)


def add_model_option(parser, device=True):
    """``--model``: a model file or a ``sklat train`` output folder, and
    (``device``) ``--device``, where to load it."""
    add_option(
        parser,
        "model",
        type=Path,
        required=True,
        help="a model file, or a train --output_dir holding model.safetensors",
    )
    if device:
        add_option(parser, "device", choices=["auto", "cpu", "cuda"], default="cpu")


def add_results_options(parser, what):
    """``--results_dir`` (required; ``what`` says whose results) and the choice
    of its datasets."""
    add_option(
        parser,
        "results_dir",
        type=Path,
        required=True,
        help=f"folder of {what} (<dataset>/*.csv|*.jsonl|*.parquet)",
    )
    which = parser.add_mutually_exclusive_group()
    add_option(
        which, "use_all_datasets", action="store_true", help="read every dataset of --results_dir"
    )
    add_option(which, "datasets", type=csv_list, default=None, help="comma-separated dataset names")


def add_options(parser, table):
    """Every option of ``table``, a list of ``(name, aliases, argparse arguments)``."""
    for name, aliases, kwargs in table:
        add_option(parser, name, *aliases, **kwargs)


def csv_list(text, what="entries"):
    """Comma-separated entries, stripped; an empty entry (``a,,b``, a
    trailing comma, an empty text) is refused rather than dropped."""
    entries = [s.strip() for s in text.split(",")]
    if not all(entries):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {what}, got {text!r} (entry "
            f"{entries.index('') + 1} is empty)"
        )
    return entries


def _typed_list(text, cast, what):
    entries = csv_list(text, what)
    try:
        return [cast(s) for s in entries]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None


def feature_names(text):
    return csv_list(text, "feature names")


def int_list(text):
    return _typed_list(text, int, "integers")


def distinct_int_list(text):
    """Comma-separated integers, each once (a repeated position would name
    two output columns alike)."""
    values = int_list(text)
    repeated = first_repeated(values)
    if repeated is not None:
        raise argparse.ArgumentTypeError(f"{repeated} is listed twice in {text!r}")
    return values


def float_list(text):
    return _typed_list(text, float, "numbers")


def feature_columns(text):
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    return csv_list(text)


def load_argument(text):
    """``--load``: one number (the model's one load feature), or
    ``name=value`` pairs separated by commas."""
    try:
        if "=" not in text:
            return float(text)
        pairs = [part.split("=", 1) for part in text.split(",")]
        load = {name.strip(): float(value) for name, value in pairs}
        if len(load) != len(pairs) or "" in load:
            raise ValueError
        return load
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or name=value pairs separated by commas, got {text!r}"
        ) from None


def int_or(**words):
    """An argparse type: an integer, or one of ``words`` (each given the
    value it names)."""
    expected = ", ".join(repr(w) for w in words)

    def parse(text):
        if text in words:
            return words[text]
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {expected} or an integer, got {text!r}"
            ) from None

    return parse


threads = int_or(auto="auto")
folds = int_or(auto="auto", none=None)
groups = int_or(none=None)


# The estimator's options of sklat train, declared once: (aliases, argparse
# arguments); each default is the LatencyEstimator parameter's.
ESTIMATOR_ARGUMENTS = {
    "device": (
        (),
        dict(
            choices=["auto", "cpu", "cuda"],
            help="auto: CUDA if available, else CPU (%(default)s)",
        ),
    ),
    "max_epochs": (
        ("num_epochs",),
        dict(
            type=int,
            help="maximum passes over the training requests; training stops earlier when "
            "the held-out loss stops improving (%(default)s)",
        ),
    ),
    "batch_size": ((), dict(type=int, help="requests per mini-batch (%(default)s)")),
    "lr": ((), dict(type=float, help="learning rate (%(default)s)")),
    "validation_fraction": (
        (),
        dict(
            type=float,
            help="share of the TRAINING requests the estimator holds out to stop early and "
            "keep its best weights (%(default)s)",
        ),
    ),
    "calibration_fraction": (
        (),
        dict(
            type=float,
            help="share of the TRAINING requests held out of the fit to calibrate "
            "prediction intervals; 0 gives no intervals (%(default)s)",
        ),
    ),
    "length_groups": (
        (),
        dict(
            type=groups,
            help="an output-length distribution over more distinct lengths is read in at "
            "most twice as many groups of consecutive lengths (each holding under 2 / "
            "length_groups of the probability) by the intervals, probabilities and "
            "choices; none: every length (%(default)s)",
        ),
    ),
    "n_folds": (
        (),
        dict(
            type=folds,
            help="cross-fitting: train one net per fold, each stopped early on its fold, "
            "and calibrate on every request's out-of-fold error (the two fractions above "
            "are then unused); none: one net; auto: by the size of the data, the rule of "
            "LatencyEstimator's n_folds (%(default)s)",
        ),
    ),
    "prefill_weight": (
        (),
        dict(
            type=float,
            help="weight of the prefill error in the loss; 0 ignores T_prefill_total (%(default)s)",
        ),
    ),
    "decode_total_weight": (
        (),
        dict(
            type=float,
            help="weight of the error of the summed per-position curve against each "
            "request's T_LLM_decode (%(default)s)",
        ),
    ),
    "positioned_weight": (
        (),
        dict(
            type=float,
            help="weight of the per-step and per-segment error, for requests with "
            "T_decode_per_step or decode segments (%(default)s)",
        ),
    ),
    "loss": (
        (),
        dict(
            choices=list(LOSS_KINDS),
            help="error measure of every loss term (%(default)s)",
        ),
    ),
    "point": (
        (),
        dict(
            choices=list(POINTS),
            help="point predictions: relative, the least expected relative error (the "
            "curve's centre times a factor fitted on out-of-sample errors); center, the "
            "centre the loss fits (%(default)s)",
        ),
    ),
    "config_mlp_weight_decay": (
        (),
        dict(
            type=float,
            help="weight decay of the config encoder's MLP, which corrects a linear "
            "config model; raise it (e.g. 1.0) for a few hundred noisy requests, "
            "lower it for strongly interacting features (%(default)s)",
        ),
    ),
    "context_features": (
        (),
        dict(
            type=feature_columns,
            help="comma-separated feature columns whose sum is the context length at the "
            "first decode step, so that a cost term grows with context + position; "
            "'auto': vision_tokens and text_tokens where present; 'none': no such "
            "term, the curve stays flat past the longest training request "
            "(%(default)s)",
        ),
    ),
    "load_features": (
        (),
        dict(
            type=feature_columns,
            help="comma-separated feature columns that measure the load (requests in "
            "flight, a KV-cache usage): each cost grows with them as a sum of "
            "non-negative powers, also past the largest trained load; 'auto': "
            "concurrency where present; 'none': such a column is an ordinary "
            "feature (%(default)s)",
        ),
    ),
    "prefill_load_features": (
        (),
        dict(
            type=feature_columns,
            help="comma-separated feature columns that measure the load the prefill "
            "met (the requests in flight, or still waiting for a first token, when it "
            "was sent): the time to first token grows with them as the decode's costs "
            "with --load_features; 'auto': in_flight_at_start and waiting_at_start "
            "where present, else the --load_features; 'none': no load (%(default)s)",
        ),
    ),
    "n_cost_terms": (
        (),
        dict(
            type=int,
            help="positive power laws of the features summed in the flat cost, the "
            "context cost and the prefill (%(default)s)",
        ),
    ),
    "n_threads": (
        (),
        dict(type=threads, help="torch CPU threads; auto: one for small models (%(default)s)"),
    ),
}
ESTIMATOR_OPTIONS = tuple(ESTIMATOR_ARGUMENTS)

# The latency objectives and the output length of the decisions on a model
# (sklat choose, sklat capacity).
OBJECTIVE_OPTIONS = [
    ("ttft_ms", (), dict(type=float, default=None, help="time-to-first-token objective (ms)")),
    ("tpot_ms", (), dict(type=float, default=None, help="time-per-output-token objective (ms)")),
    ("e2e_ms", (), dict(type=float, default=None, help="end-to-end objective (ms)")),
    (
        "output_tokens",
        (),
        dict(
            type=int,
            default=None,
            help="output length, if known; default: the file's output_tokens column, else "
            "drawn from the training output lengths",
        ),
    ),
]
