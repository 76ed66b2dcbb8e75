"""``sklat train``: train from a folder of profiling results.

It reads a results folder (see :mod:`sklat.io`), holds out a seeded
validation split of the requests, trains a :class:`~sklat.LatencyEstimator`
and writes to ``--output_dir``:

- ``model.safetensors``: the model (load it with :func:`sklat.load`);
- ``metrics.json``: prefill / total-decode MAPE and MAE on the training and
  validation requests, positioned MAPE where per-step data exists, the
  coverage and mean width of the calibrated decode-total intervals (80, 90
  and 95%) on the validation requests, the number of requests outside the
  training domain, the command line and the versions used;
- ``latency_curves.png``, ``total_decode.png`` and ``coverage.png`` (with
  ``sklat[plot]``).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from .._constants import (
    AUTO_LOAD_FEATURES,
    AUTO_PREFILL_LOAD_FEATURES,
    DEFAULT_FEATURES,
    MODEL_FILE,
)
from .._params import DEFAULTS
from .._splits import held_out_rows, measurement_groups
from .._version import library_versions
from ..io import load_results
from ..metrics import evaluate
from ..plotting import save_report_figures
from ._io import check_output_dir, select_datasets
from ._options import (
    ESTIMATOR_ARGUMENTS,
    ESTIMATOR_OPTIONS,
    add_option,
    add_options,
    csv_list,
)

METRICS_FILE = "metrics.json"
# Nominal coverages of the intervals reported by sklat train (those the model
# has enough calibration requests for).
_REPORTED_CONFIDENCES = (0.8, 0.9, 0.95)
# Share of the requests that sklat train holds out for its validation metrics.
_HOLDOUT_FRACTION = 0.2


def _train_options():
    """The options of ``sklat train`` before the estimator's: ``(name, aliases,
    argparse arguments)``."""
    return [
        (
            "output_dir",
            (),
            dict(
                type=Path,
                required=True,
                help="folder to write the model, metrics and plots to (created; an existing "
                "non-empty folder needs --overwrite)",
            ),
        ),
        (
            "features",
            (),
            dict(
                type=csv_list,
                default=None,
                help=f"comma-separated feature columns (default: {','.join(DEFAULT_FEATURES)})",
            ),
        ),
        (
            "holdout_fraction",
            ("val_fraction",),
            dict(
                type=float,
                default=_HOLDOUT_FRACTION,
                help="share of the requests held out of training entirely, to report the "
                f"validation metrics of metrics.json ({_HOLDOUT_FRACTION}); not to be "
                "confused with --validation_fraction",
            ),
        ),
        (
            "seed",
            (),
            dict(
                type=int,
                default=0,
                help="seed of the hold-out split, initialisation and shuffling (0)",
            ),
        ),
    ]


def add_train_parser(sub):
    train = sub.add_parser(
        "train",
        help="train a model from a folder of profiling results",
        description="Train a LatencyEstimator from a folder of profiling results and "
        "write the model, metrics.json and plots to --output_dir. "
        "Options also accept dashed spellings (--results-dir); each "
        "estimator option has the LatencyEstimator parameter's name and "
        "default.",
    )
    add_option(
        train,
        "results_dir",
        type=Path,
        default=None,
        help="folder of results (<dataset>/*.csv|*.jsonl|*.parquet, or files at the "
        "top); default: the synthetic demo results shipped with sklat",
    )
    which = train.add_mutually_exclusive_group()
    add_option(
        which, "use_all_datasets", action="store_true", help="read every dataset of --results_dir"
    )
    add_option(
        which, "datasets", type=csv_list, default=None, help="comma-separated dataset names to read"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="write into an existing, non-empty --output_dir"
    )
    add_options(train, _train_options())
    est = train.add_argument_group(
        "estimator", "LatencyEstimator parameters (see its documentation)"
    )
    defaults = DEFAULTS
    for name, (aliases, kwargs) in ESTIMATOR_ARGUMENTS.items():
        add_option(est, name, *aliases, default=defaults[name], **kwargs)
    train.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no per-epoch progress (the final metrics are still printed)",
    )
    train.set_defaults(func=cmd_train)


def _split(res, fraction, seed):
    """``(train_rows, held_out_rows)`` of the results ``res``: the held-out
    requests are whole measurements (a repeat of a training request would
    flatter the validation metrics) where there are enough of them."""

    n = len(res.X)
    if not 0 <= fraction < 1:
        raise ValueError(f"--holdout_fraction must be in [0, 1); got {fraction}.")
    order = np.random.RandomState(seed).permutation(n)
    n_val = int(round(fraction * n))
    groups = measurement_groups(res.X.to_numpy(np.float64), res.output_tokens)
    train_rows, val_rows = held_out_rows(n, n_val, order, groups)
    if n_val and (n - n_val < 2 or len(train_rows) < 2):
        raise ValueError(
            f"--holdout_fraction {fraction} leaves too few training requests out of {n}."
        )
    return train_rows, val_rows


def _metrics(est, res, rows, *, intervals=False):
    """``metrics.evaluate`` on the requests ``rows`` (None when there are none);
    with ``intervals`` (held-out requests only) the decode-total coverage too."""

    if len(rows) == 0:
        return None
    return evaluate(
        est,
        res.X.iloc[rows],
        res.y.iloc[rows],
        output_tokens=res.output_tokens[rows],
        positioned_latencies=[res.positioned_latencies[i] for i in rows],
        decode_segments=[res.decode_segments[i] for i in rows],
        groups=res.dataset[rows],
        confidences=_REPORTED_CONFIDENCES if intervals else None,
    )


def _write_plots(est, res, rows, output_dir, *, held_out):

    try:
        return save_report_figures(
            est,
            res.X.iloc[rows],
            res.y.iloc[rows],
            output_tokens=res.output_tokens[rows],
            output_dir=output_dir,
            positioned_latencies=[res.positioned_latencies[i] for i in rows],
            names=[f"{res.dataset[i]} row {i + 1}" for i in rows],
            coverage=held_out,
        )
    except ImportError:
        print(
            "sklat train: plots not written: matplotlib is missing (pip install 'sklat[plot]')",
            file=sys.stderr,
        )
        return []


def cmd_train(args, argv):

    check_output_dir(args.output_dir, args.overwrite)
    results_dir, datasets = select_datasets(args)
    res = load_results(results_dir, datasets=datasets, features=args.features)
    _check_load_columns(args, res.frame.columns)
    train_rows, val_rows = _split(res, args.holdout_fraction, args.seed)
    if not args.quiet:
        print(
            f"sklat train: {len(train_rows)} training / {len(val_rows)} held-out "
            f"requests from {sorted(set(res.dataset))} in {results_dir}"
        )
    start = time.perf_counter()
    est = _fit(args, res, train_rows)
    fit_seconds = time.perf_counter() - start
    metrics = _write_outputs(args, argv, est, res, (train_rows, val_rows), results_dir)
    metrics["fit_seconds"] = fit_seconds
    # Written last: its presence marks a completed run.
    (args.output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    print(_summary(metrics, fit_seconds, est.device_))
    if not args.quiet:
        print(
            f"sklat train: wrote {args.output_dir}/"
            f"{{{', '.join(metrics['files'] + [METRICS_FILE])}}}"
        )
    return 0


def _check_load_columns(args, columns):
    """Load columns that the results hold and ``--features`` leaves out: an
    error where ``--load_features`` or ``--prefill_load_features`` names one, a
    note where ``auto`` would have found one (the model then ignores that
    load)."""
    features = list(DEFAULT_FEATURES if args.features is None else args.features)
    for option, auto_columns, what in (
        ("load_features", AUTO_LOAD_FEATURES, "the load"),
        ("prefill_load_features", AUTO_PREFILL_LOAD_FEATURES, "the queue each request joined"),
    ):
        value = getattr(args, option)
        auto = value == "auto"
        named = auto_columns if auto else (value or [])
        left_out = [c for c in named if c in columns and c not in features]
        if not left_out:
            continue
        if not auto:
            raise ValueError(
                f"--{option} names {left_out[0]!r}, a column of the results that --features "
                f"({','.join(features)}) leaves out: add it to --features."
            )
        held = ", ".join(repr(c) for c in left_out)
        columns_text = f"load column {held}" if len(left_out) == 1 else f"load columns {held}"
        print(
            f"sklat train: note: the results hold the {columns_text} that --features "
            f"({','.join(features)}) leaves out, so the model ignores {what}; add "
            f"{'it' if len(left_out) == 1 else 'them'} to --features to learn latency under "
            "load.",
            file=sys.stderr,
        )


def _fit(args, res, rows):
    # The model (torch, skorch) loads only for the commands that use one, so that
    # `sklat --help` and the measuring commands stay light.
    from .. import LatencyEstimator

    est = LatencyEstimator(
        **{name: getattr(args, name) for name in ESTIMATOR_OPTIONS},
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    return est.fit(
        res.X.iloc[rows],
        res.y.iloc[rows],
        output_tokens=res.output_tokens[rows],
        positioned_latencies=[res.positioned_latencies[i] for i in rows],
        decode_segments=[res.decode_segments[i] for i in rows],
    )


def _write_outputs(args, argv, est, res, splits, results_dir):
    """Save the model and the figures; the metrics (written by the caller)."""
    # The model (torch, skorch) loads only for the commands that use one, so that
    # `sklat --help` and the measuring commands stay light.
    from .. import save

    train_rows, val_rows = splits
    args.output_dir.mkdir(parents=True, exist_ok=True)
    save(est, args.output_dir / MODEL_FILE)
    held_out = len(val_rows) > 0
    plots = _write_plots(
        est, res, val_rows if held_out else train_rows, args.output_dir, held_out=held_out
    )
    return {
        "train": _metrics(est, res, train_rows),
        "validation": _metrics(est, res, val_rows, intervals=True),
        "epochs_run": len(est.history_),
        "epochs_run_per_net": [len(net.history) for net in est.nets_],
        "fit_seconds": None,
        "device": est.device_,
        "results_dir": str(results_dir),
        "datasets": sorted(set(res.dataset)),
        "command": "sklat " + " ".join(argv),
        "versions": library_versions(),
        "files": [MODEL_FILE] + plots,
    }


def _summary(metrics, fit_seconds, device):
    """The line ``sklat train`` ends with."""
    split = "validation" if metrics["validation"] else "train"
    val = metrics[split]
    parts = [
        f"sklat train: done in {fit_seconds:.1f} s on {device}; {split} "
        f"total-decode MAPE {val['total_decode_mape_pct']:.2f}%",
        f"prefill MAPE {val['prefill_mape_pct']:.2f}%",
    ]
    for key, name in (("positioned_mape_pct", "positioned"), ("segment_mape_pct", "segment")):
        if key in val:
            parts.append(f"{name} MAPE {val[key]:.2f}%")
    coverage = val.get("decode_interval", {}).get("0.9")
    if coverage is not None:
        parts.append(f"90% interval coverage {coverage['coverage']:.1%}")
    return ", ".join(parts)
