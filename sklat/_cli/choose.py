"""``sklat choose``: the candidate configuration that best meets latency
objectives (see :func:`sklat.control.choose`). The chosen row goes to stdout;
every candidate's attainment to ``--output`` when asked. Exit status 1 when no
candidate reaches ``--min_attainment``, so that a scheduled caller notices."""

import sys
from pathlib import Path

from .._domain import quiet_extrapolation
from ..control import choose
from ._io import check_output_file, columns_at_load, load_model, read_configs
from ._options import OBJECTIVE_OPTIONS, add_model_option, add_options, load_argument

OPTIONS = [
    *OBJECTIVE_OPTIONS,
    (
        "min_attainment",
        (),
        dict(
            type=float,
            default=0.9,
            help="probability of meeting every objective a candidate must reach (0.9)",
        ),
    ),
    (
        "load",
        (),
        dict(
            type=load_argument,
            default=None,
            help="for a model with a load feature: the load every candidate is decided "
            "at (a number, or name=value pairs such as concurrency=8); CANDIDATES then "
            "leaves the load columns out (default: they are columns of CANDIDATES)",
        ),
    ),
    (
        "prefer",
        (),
        dict(
            default=None,
            help="a column of CANDIDATES to maximise among those that qualify (e.g. a "
            "quality score); default: the file's order",
        ),
    ),
    (
        "output",
        (),
        dict(
            type=Path,
            default=None,
            help="also write every candidate with its attainment to this CSV (default: "
            "only the chosen row, on stdout)",
        ),
    ),
]


def add_choose_parser(sub):
    parser = sub.add_parser(
        "choose",
        help="choose the configuration that best meets latency objectives",
        description="Print the candidate of CANDIDATES that meets every objective given "
        "with at least --min_attainment probability and is best by --prefer. When none "
        "does, print the most likely to meet them (the closest to its objectives among "
        "equally likely ones) and exit with status 1.",
    )
    parser.add_argument(
        "candidates",
        type=Path,
        help="CSV / JSONL / Parquet file of candidate configurations: the model's feature "
        "columns, optionally output_tokens and other columns",
    )
    add_model_option(parser)
    add_options(parser, OPTIONS)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file"
    )
    parser.set_defaults(func=cmd_choose)


def cmd_choose(args, argv):

    if args.output is not None:
        check_output_file(args.output)
        if args.output.exists() and not args.overwrite:
            raise ValueError(f"{args.output} exists; pass --overwrite to replace it.")
    est = load_model(args.model, device=args.device)
    names, advice, refused = columns_at_load(est, args.load, "every candidate is decided at")
    extra = [args.prefer] if args.prefer else []
    frame, n = read_configs(args.candidates, names, extra, advice, refused)
    if args.output_tokens is not None:
        n = args.output_tokens
    with quiet_extrapolation():
        choice = choose(
            est,
            frame,
            ttft_ms=args.ttft_ms,
            tpot_ms=args.tpot_ms,
            e2e_ms=args.e2e_ms,
            output_tokens=n,
            min_attainment=args.min_attainment,
            prefer=args.prefer,
            load=args.load,
        )
    table = frame.assign(attainment=choice.attainment, chosen=False)
    table.loc[table.index[choice.index], "chosen"] = True
    if args.output is not None:
        table.to_csv(args.output, index=False, float_format="%.6g")
        print(f"sklat choose: wrote {len(table)} attainments to {args.output}", file=sys.stderr)
    chosen = table.iloc[[choice.index]].drop(columns="chosen").assign(met=choice.met)
    chosen.insert(0, "row", choice.index + 1)
    chosen.to_csv(sys.stdout, index=False, float_format="%.6g")
    if not choice.met:
        print(
            f"sklat choose: no candidate reaches attainment {args.min_attainment:g}; row "
            f"{choice.index + 1} is the most likely ({choice.attainment[choice.index]:.3g})",
            file=sys.stderr,
        )
        return 1
    return 0
