"""``sklat profile``: its options, declared as a table, and the command (see
:func:`sklat.acquire.profile_model` and, with ``--endpoint``,
:func:`sklat.acquire.profile_endpoint`)."""

import sys
from pathlib import Path

from ..acquire import profile_model
from ..acquire._model import ATTN_IMPLEMENTATIONS, DTYPES
from ._options import add_option, add_options, csv_list, int_list
from .endpoint import add_endpoint_arguments, check_modes, run_endpoint

DESCRIPTION = (
    "Time the prefill and every decode step of greedy, KV-cached generation of a "
    "transformers causal language model over a grid of prompt and output lengths, and "
    "append one row per request to OUTPUT_DIR/DATASET/requests.csv (the format sklat "
    "train reads). Rerunning the same command resumes an interrupted run. Needs pip "
    "install 'sklat[profile]'. With --endpoint URL, stream requests to a running "
    "OpenAI-compatible engine instead and time every event (pip install "
    "'sklat[endpoint]')."
)


# The in-process options: (name, aliases, argparse arguments).
OPTIONS = [
    (
        "model",
        (),
        dict(
            required=True,
            help="a folder with a transformers config.json (weights optional), the path "
            "of a config.json, or a hub name",
        ),
    ),
    (
        "random_weights",
        (),
        dict(
            action="store_true",
            help="build the model from its configuration with seeded random weights "
            "(nothing downloaded but the configuration)",
        ),
    ),
    (
        "prompt_tokens",
        (),
        dict(
            type=int_list,
            default=[64, 256, 1024],
            help="comma-separated prompt lengths (64,256,1024)",
        ),
    ),
    (
        "output_tokens",
        (),
        dict(
            type=int_list,
            default=[16, 128, 512],
            help="comma-separated numbers of decode steps (16,128,512)",
        ),
    ),
    ("repeats", (), dict(type=int, default=3, help="measurements per grid point (3)")),
    (
        "top_k",
        (),
        dict(
            type=int_list,
            default=None,
            help="comma-separated experts per token to sweep (mixture-of-experts models)",
        ),
    ),
    (
        "num_active_blocks",
        (),
        dict(
            type=int_list,
            default=None,
            help="comma-separated numbers of decoder layers to run, swept",
        ),
    ),
    ("device", (), dict(default="auto", help="auto, cpu, cuda or cuda:<index> (auto)")),
    ("dtype", (), dict(choices=DTYPES, default="float32", help="(float32)")),
    (
        "attn_implementation",
        (),
        dict(
            choices=ATTN_IMPLEMENTATIONS,
            default="sdpa",
            help="transformers attention implementation (sdpa)",
        ),
    ),
    ("output_dir", (), dict(type=Path, required=True, help="results folder (created)")),
    (
        "dataset",
        (),
        dict(default=None, help="dataset sub-folder name (default: <model>_<attn>_<dtype>)"),
    ),
    (
        "seed",
        (),
        dict(
            type=int,
            default=0,
            help="seed of the random weights, the prompts and the order of the grid (0)",
        ),
    ),
    (
        "warmup",
        (),
        dict(
            type=int,
            default=2,
            help="untimed warm-up requests per top_k / num_active_blocks setting (2)",
        ),
    ),
    (
        "threads",
        (),
        dict(
            type=int,
            default=None,
            help="torch CPU threads while profiling (default: torch's own)",
        ),
    ),
    (
        "image_sizes",
        (),
        dict(
            type=csv_list,
            default=None,
            help="comma-separated image sizes WIDTHxHEIGHT (224x224,448x448) for a "
            "Qwen2-VL-style vision-language model: one image per request, swept as "
            "tiers (tier_idx)",
        ),
    ),
    (
        "batch_sizes",
        (),
        dict(
            type=int_list,
            default=None,
            help="comma-separated batch sizes (1,2,4,8): each measurement generates that "
            "many requests together, recorded as the load column concurrency",
        ),
    ),
]


def add_profile_parser(sub):

    prof = sub.add_parser(
        "profile",
        help="measure a transformers model, or a running serving engine, into a results folder",
        description=DESCRIPTION,
    )
    add_options(prof, OPTIONS)
    add_endpoint_arguments(prof, add_option)
    prof.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    prof.set_defaults(func=cmd_profile)


# The options of profile_model that the command passes as they are.
_PASSED = (
    "prompt_tokens",
    "output_tokens",
    "repeats",
    "top_k",
    "num_active_blocks",
    "random_weights",
    "device",
    "dtype",
    "attn_implementation",
    "dataset",
    "seed",
    "warmup",
    "threads",
    "image_sizes",
    "batch_sizes",
)


def cmd_profile(args, argv):

    check_modes(args)
    try:
        if args.endpoint is not None:
            return run_endpoint(args)
        path = profile_model(
            args.model,
            args.output_dir,
            progress=not args.quiet,
            **{name: getattr(args, name) for name in _PASSED},
        )
    except KeyboardInterrupt:
        print(
            "sklat profile: interrupted; the completed requests are kept, run the "
            "same command again to measure the rest",
            file=sys.stderr,
        )
        return 130
    with open(path) as f:
        rows = sum(1 for _ in f) - 1
    if not args.quiet:
        print(f"sklat profile: {rows} requests in {path}")
    return 0
