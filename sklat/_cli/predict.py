"""``sklat predict``: load a model and print per-position latencies, totals,
prefill, a per-token budget, optionally calibrated intervals (``--interval``)
and an ``in_domain`` column for the configurations of a CSV / JSONL / Parquet
file."""

import sys
from pathlib import Path

import numpy as np

from .._conformal import check_confidence
from .._constants import (
    BUDGET_STRATEGIES,
    DECODE_COL,
    OUTPUT_TOKENS_COL,
    PREFILL_COL,
    PROBE_POSITIONS,
)
from .._domain import quiet_extrapolation
from .._validation import check_output_tokens
from .._load_input import with_load
from ._io import check_output_file, columns_at_load, load_model, read_configs
from ._options import (
    add_model_option,
    add_options,
    distinct_int_list,
    load_argument,
)


def _predict_options():
    """The options of ``sklat predict``: ``(name, aliases, argparse arguments)``."""
    return [
        (
            "positions",
            (),
            dict(
                type=distinct_int_list,
                default=list(PROBE_POSITIONS),
                help="comma-separated positions (%(default)s)",
            ),
        ),
        (
            "output_tokens",
            (),
            dict(
                type=int,
                default=None,
                help="output length for the totals; default: the file's output_tokens "
                "column, else the expectation over the training output lengths (said "
                "on stderr)",
            ),
        ),
        (
            "budget_strategy",
            (),
            dict(
                choices=BUDGET_STRATEGIES,
                default="max",
                help="how the budget column summarises the curve: its maximum over the "
                "positions up to the 95th percentile of the training output lengths, its "
                "value at the expected position, or the expected per-token latency "
                "(%(default)s)",
            ),
        ),
        (
            "interval",
            (),
            dict(
                type=float,
                default=None,
                metavar="CONFIDENCE",
                help="add calibrated prediction intervals of this confidence, e.g. 0.9: "
                "columns <target>_lower_ms and <target>_upper_ms",
            ),
        ),
        (
            "load",
            (),
            dict(
                type=load_argument,
                default=None,
                help="for a model with a load feature: the load every configuration is "
                "predicted at (a number, or name=value pairs such as concurrency=8); CONFIGS "
                "then leaves the load columns out, and the output holds them (default: they "
                "are columns of CONFIGS)",
            ),
        ),
        ("output", (), dict(type=Path, default=None, help="write CSV here instead of printing it")),
    ]


def add_predict_parser(sub):
    pred = sub.add_parser(
        "predict",
        help="predict latencies for configurations with a trained model",
        description="Print (or write) per-position decode latencies, total decode "
        "latency, prefill and a per-token budget for each configuration "
        "of CONFIGS.",
    )
    add_model_option(pred)
    pred.add_argument(
        "configs",
        type=Path,
        help="CSV / JSONL / Parquet file with the model's feature "
        "columns (and optionally output_tokens)",
    )
    add_options(pred, _predict_options())
    pred.set_defaults(func=cmd_predict)


def cmd_predict(args, argv):

    check_output_file(args.output)
    if args.interval is not None:
        check_confidence(args.interval, "--interval")
    est = load_model(args.model, device=args.device)
    names, advice, refused = columns_at_load(est, args.load, "every configuration is predicted at")
    X, n = read_configs(args.configs, names, advice=advice, refused=refused)
    # The load set as the model's column(s): the table printed shows it.
    X = with_load(est, X, args.load)
    if args.output_tokens is not None:
        n = check_output_tokens(args.output_tokens, len(X), "--output_tokens")
    if n is None:
        dist = est.output_tokens_distribution_
        mean_n = float(np.dot(dist["values"], dist["probabilities"]))
        print(
            f"sklat predict: no output_tokens given; {DECODE_COL}_ms is the expected "
            f"total over the training output lengths (mean N = {mean_n:.1f})",
            file=sys.stderr,
        )
    # The in_domain column says which rows extrapolate; one line on stderr
    # replaces a warning per feature.
    with quiet_extrapolation():
        out = _predictions(est, X, n, args)
    outside = int((~out["in_domain"]).sum())
    if outside:
        print(
            f"sklat predict: {outside} of {len(out)} rows lie outside the training range "
            "of a feature or past the longest training output (in_domain=False): their "
            "predictions are extrapolations",
            file=sys.stderr,
        )
    if args.output is None:
        out.to_csv(sys.stdout, index=False, float_format="%.4f")
    else:
        out.to_csv(args.output, index=False, float_format="%.6f")
        print(f"sklat predict: wrote {len(out)} rows to {args.output}")
    return 0


def _predictions(est, X, n, args):
    """The output table of ``sklat predict``."""
    out = X.copy()
    curve = est.predict_positions(X, args.positions)
    for j, p in enumerate(args.positions):
        out[f"latency_p{p}_ms"] = curve[:, j]
    if n is not None:
        out[OUTPUT_TOKENS_COL] = n
    out[f"{DECODE_COL}_ms"] = est.predict_total(X, n)
    if est.prefill_scale_ is not None:
        out[f"{PREFILL_COL}_ms"] = est.predict_prefill(X)
    out[f"budget_{args.budget_strategy}_ms_per_token"] = est.predict_budget(X, args.budget_strategy)
    if args.interval is not None:
        targets = [(DECODE_COL, "total")]
        if est.prefill_scale_ is not None:
            targets.append((PREFILL_COL, "prefill"))
        for column, target in targets:
            bounds = est.predict_interval(X, n, target=target, confidence=args.interval)
            out[f"{column}_lower_ms"], out[f"{column}_upper_ms"] = bounds.T
    out["in_domain"] = est.in_domain(X, n)
    return out
