"""``sklat capacity``: per configuration, the largest load at which it still
meets latency objectives (see :func:`sklat.control.capacity`), for a model
trained with a load feature."""

import sys
from pathlib import Path

import numpy as np

from .._domain import quiet_extrapolation
from ..control import capacity, default_load_feature
from ._io import load_model, read_configs
from ._options import (
    OBJECTIVE_OPTIONS,
    add_model_option,
    add_options,
    feature_names,
    float_list,
)

OPTIONS = [
    *OBJECTIVE_OPTIONS,
    (
        "min_attainment",
        (),
        dict(
            type=float,
            default=0.9,
            help="probability of meeting every objective a load must keep (0.9)",
        ),
    ),
    (
        "load_feature",
        (),
        dict(
            type=feature_names,
            default=None,
            help="the model's load feature to sweep (default: its one load feature, or the "
            "decode's one where the prefill has loads of its own, else concurrency); several, "
            "comma-separated, are swept together (concurrency,in_flight_at_start: a closed "
            "loop's level)",
        ),
    ),
    (
        "levels",
        (),
        dict(
            type=float_list,
            default=None,
            help="increasing loads to evaluate, e.g. 1,2,4,8,16 (default: 1, 2, ... up to "
            "twice the largest load in training; for a load that stays below 2 in training, "
            "such as a KV-cache usage, 16 evenly spaced loads up to twice the largest)",
        ),
    ),
]


def add_capacity_parser(sub):
    parser = sub.add_parser(
        "capacity",
        help="the largest load at which each configuration meets latency objectives",
        description="For a model trained with a load feature (the measured concurrency), "
        "print each configuration of CONFIGS with its capacity: the last load before the "
        "first at which its probability of meeting every objective given falls below "
        "--min_attainment (0 where even the first does; bounded=False where none does: "
        "the capacity is at least the last level).",
    )
    parser.add_argument(
        "configs",
        type=Path,
        help="CSV / JSONL / Parquet file of configurations: the model's feature columns "
        "but the load, optionally output_tokens",
    )
    add_model_option(parser)
    add_options(parser, OPTIONS)
    parser.set_defaults(func=cmd_capacity)


def cmd_capacity(args, argv):
    est = load_model(args.model, device=args.device)
    # A model without the load feature is refused by capacity itself.
    names = [str(c) for c in getattr(est, "feature_names_in_", [])]
    if args.load_feature:
        swept = args.load_feature
    else:
        swept = [default_load_feature(est, names)]
    others = [c for c in names if c not in swept]
    refused = {
        name: f"column {name!r} is the load that capacity sweeps (--levels); leave it out "
        "of the file."
        for name in swept
    }
    frame, n = read_configs(args.configs, others, refused=refused)
    if args.output_tokens is not None:
        n = args.output_tokens
    with quiet_extrapolation():
        result = capacity(
            est,
            frame,
            ttft_ms=args.ttft_ms,
            tpot_ms=args.tpot_ms,
            e2e_ms=args.e2e_ms,
            output_tokens=n,
            min_attainment=args.min_attainment,
            load_feature=swept,
            levels=args.levels,
        )
    table = frame.assign(capacity=result.capacity, bounded=result.bounded)
    table.to_csv(sys.stdout, index=False, float_format="%.6g")
    print(
        f"sklat capacity: loads evaluated {_levels_text(result.levels)}; "
        "bounded=False: the capacity is at least the last of them",
        file=sys.stderr,
    )
    return 0


def _levels_text(levels):
    """The levels as a list, or a long evenly spaced run (the default sweep
    goes to twice the largest trained load) as its ends and step."""
    levels = np.asarray(levels, dtype=np.float64)
    steps = np.diff(levels)
    if len(levels) > 6 and np.allclose(steps, steps[0], rtol=1e-9, atol=0):
        return f"{levels[0]:g}, {levels[1]:g}, ..., {levels[-1]:g} (every {steps[0]:g})"
    return ", ".join(f"{v:g}" for v in levels)
