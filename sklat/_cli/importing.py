"""``sklat import``: serving-benchmark files to a results folder.

Each file becomes ``<output_dir>/<dataset>/<file stem>.csv`` in the results
format (see :func:`sklat.io.read_benchmark`), with the ``--set`` columns that
a benchmark file cannot know (tier, top_k, active blocks, GPU, engine ...).
One line per file accounts for every request read.
"""

import json
from pathlib import Path

from ..acquire._import._convention import summary_line
from ..io import read_benchmark, write_results

FORMAT_CHOICES = ("auto", "vllm", "sglang", "guidellm", "aiperf", "llmperf", "llama.cpp")


def add_import_parser(sub):
    imp = sub.add_parser(
        "import",
        help="import serving-benchmark files (vLLM, SGLang, GuideLLM, AIPerf, "
        "LLMPerf, llama.cpp) into a results folder",
        description="Convert serving-benchmark result files into a results folder "
        "that sklat train reads. Time to first token is the prefill, output_tokens "
        "counts the tokens after the first, decode time is end-to-end minus time to "
        "first token, and the gaps between streamed events become decode segments "
        "where their token counts are known.",
    )
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE", help="benchmark files")
    imp.add_argument("--output_dir", type=Path, required=True, help="results folder to write")
    imp.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        default="auto",
        help="the tool that wrote the files (default: recognised from the content)",
    )
    imp.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="COLUMN=VALUE",
        help="constant columns for every imported request, e.g. --set top_k=2 "
        "tier_idx=0 gpu=h100 (numbers are stored as numbers)",
    )
    imp.add_argument(
        "--dataset",
        default="imported",
        help="dataset folder name inside --output_dir (default: %(default)s)",
    )
    imp.add_argument(
        "--overwrite", action="store_true", help="replace files already in the dataset folder"
    )
    imp.set_defaults(func=cmd_import)


def parse_set(items):
    """``["top_k=2", "gpu=h100"]`` -> ``{"top_k": 2, "gpu": "h100"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected COLUMN=VALUE.")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out[key] = parsed if isinstance(parsed, (int, float, str)) else value
    return out


def cmd_import(args, argv):

    constants = parse_set(args.set)
    folder = args.output_dir / args.dataset
    stems = [f.stem for f in args.files]
    if len(set(stems)) != len(stems):
        raise ValueError(f"two input files share a name {sorted(stems)}; import them separately.")
    targets = [folder / f"{stem}.csv" for stem in stems]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise ValueError(f"{existing[0]} exists; pass --overwrite to replace it.")
    # Everything is read (and checked) before anything is written.
    frames = []
    for path in args.files:
        frame = read_benchmark(path, format=args.format)
        clash = sorted(set(constants) & set(frame.columns))
        if clash:
            raise ValueError(f"--set {clash[0]}: {path} already has that column.")
        frames.append(frame.assign(**constants))
    folder.mkdir(parents=True, exist_ok=True)
    for frame, target in zip(frames, targets):
        summary = frame.attrs["import_summary"]
        if len(frame):
            write_results(frame, target)
        print(
            f"sklat import: {summary_line(summary)}"
            + (f" -> {target}" if len(frame) else " -> nothing written")
        )
    return 0
