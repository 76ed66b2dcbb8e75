"""``sklat profile --endpoint``: the options and the command (see
:func:`sklat.acquire.profile_endpoint`)."""

import json
import sys
from pathlib import Path

from ..acquire import profile_endpoint
from ..acquire._endpoint import APIS, ENGINE_FIELDS, FAILED_LOG, dataset_name
from ._options import float_list, int_list
from .importing import parse_set

# In-process options that mean nothing for a running engine, with their defaults.
IN_PROCESS = {
    "random_weights": False,
    "top_k": None,
    "num_active_blocks": None,
    "device": "auto",
    "dtype": "float32",
    "attn_implementation": "sdpa",
    "threads": None,
    "image_sizes": None,
    "batch_sizes": None,
}
ENDPOINT_ONLY = {
    "api": "completions",
    "engine": "openai",
    "set": [],
    "concurrency": None,
    "request_rate": None,
    "retries": 3,
    "timeout": 60.0,
    "prompt_mismatch": "record",
    "extra_body": None,
}


def add_endpoint_arguments(prof, add):

    add(
        prof,
        "endpoint",
        default=None,
        help="profile a running OpenAI-compatible streaming server at this base URL "
        "(e.g. http://127.0.0.1:8000) instead of a model in this process; --model is "
        "then the served model's name",
    )
    add(prof, "api", choices=sorted(APIS), default="completions", help="(completions)")
    add(
        prof,
        "engine",
        choices=sorted(ENGINE_FIELDS),
        default="openai",
        help="how to ask the server for exact lengths and token counts (openai: max_tokens only)",
    )
    prof.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="COLUMN=VALUE",
        help="with --endpoint: constant configuration columns, e.g. --set top_k=2 gpu=h100",
    )
    add(
        prof,
        "concurrency",
        type=int_list,
        default=None,
        help="closed-loop load levels: requests in flight at once, e.g. 1,2,4,8; the grid "
        "is measured at each (1 unless --request_rate is given)",
    )
    add(
        prof,
        "request_rate",
        type=float_list,
        default=None,
        help="open-loop load levels: requests per second sent at seeded Poisson arrivals, "
        "e.g. 2,4,8; the grid is measured at each (after the --concurrency levels)",
    )
    add(
        prof,
        "retries",
        type=int,
        default=3,
        help="times a request refused with HTTP 429 or 503 is sent again (3)",
    )
    add(prof, "timeout", type=float, default=60.0, help="seconds without a token = stalled (60)")
    add(
        prof,
        "prompt_mismatch",
        choices=["record", "refuse"],
        default="record",
        help="when the server counts a prompt differently: record its count, or stop",
    )
    add(
        prof,
        "extra_body",
        type=json.loads,
        default=None,
        help="JSON object of more request fields",
    )


def check_modes(args):
    """Refuse options of the other mode."""
    if args.endpoint is None:
        given = [k for k, v in ENDPOINT_ONLY.items() if getattr(args, k) != v]
        if given:
            raise ValueError(f"--{given[0]} applies to --endpoint profiling only.")
        return
    given = [k for k, v in IN_PROCESS.items() if getattr(args, k) != v]
    if given:
        raise ValueError(
            f"--{given[0]} applies to a model profiled in this process, not to --endpoint."
        )


def run_endpoint(args):

    before = _lines(args, FAILED_LOG)
    # Ctrl-C is reported by cmd_profile, as for a model profiled in this process.
    path = profile_endpoint(
        args.endpoint,
        args.output_dir,
        model=args.model,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        repeats=args.repeats,
        api=args.api,
        engine=args.engine,
        set_columns=parse_set(args.set),
        concurrency=(args.concurrency if args.concurrency is not None or args.request_rate else 1),
        request_rate=args.request_rate,
        retries=args.retries,
        timeout=args.timeout,
        prompt_mismatch=args.prompt_mismatch,
        extra_body=args.extra_body,
        dataset=args.dataset,
        seed=args.seed,
        warmup=args.warmup,
        progress=not args.quiet,
    )
    failed = _lines(args, FAILED_LOG, path.parent) - before
    rows = sum(1 for _ in open(path)) - 1 if path.exists() else 0
    if path.exists():
        print(f"sklat profile: {rows} requests in {path}")
    else:
        print(f"sklat profile: no request measured; {path} was not written", file=sys.stderr)
    if failed:
        print(
            f"sklat profile: {failed} request(s) failed this run, logged in "
            f"{path.parent / FAILED_LOG}; run the same command again to retry them",
            file=sys.stderr,
        )
    return 0 if rows else 2


def _lines(args, name, folder=None):
    if folder is None:
        folder = Path(args.output_dir) / (args.dataset or dataset_name(args.model))
    log = folder / name
    return sum(1 for _ in open(log)) if log.exists() else 0
