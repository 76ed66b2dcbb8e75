"""``sklat import``: serving-benchmark files to a results folder.

Each file becomes ``<output_dir>/<dataset>/<file stem>.csv`` in the results
format (see :func:`sklat.io.read_benchmark`), with the ``--set`` columns that
a benchmark file cannot know (tier, top_k, active blocks, GPU, engine ...).
One line per file accounts for every request read.
"""

import json
import math
import os
from pathlib import Path

from .._constants import DEFAULT_FEATURES
from ..acquire._import._convention import summary_line
from ..io import read_benchmark, write_beside

# Words that name no value (JSON parses NaN and Infinity as numbers, caught as
# not finite).
_NOT_VALUES = (
    "nan",
    "inf",
    "+inf",
    "-inf",
    "infinity",
    "-infinity",
    "null",
    "none",
    "true",
    "false",
)
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
    """``["top_k=2", "gpu=h100"]`` -> ``{"top_k": 2, "gpu": "h100"}``: a finite
    number, or a name (for a column that is not a configuration feature); a
    column given twice, an empty value, a boolean, NaN, an infinity, null or a
    list is refused here rather than by ``sklat train`` later."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected COLUMN=VALUE.")
        if key in out:
            raise ValueError(
                f"--set {key} is given twice ({out[key]!r} and {text!r}); give it once."
            )
        out[key] = _set_value(key, text)
    return out


def _set_value(key, text):
    where = f"--set {key}={text}"
    value = text.strip()
    if not value:
        raise ValueError(f"{where}: empty value; expected a number or a name.")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, str) and parsed.lower() in _NOT_VALUES:
        parsed = None
    if parsed is None or isinstance(parsed, (bool, list, dict)):
        raise ValueError(f"{where}: expected a finite number or a name.")
    if isinstance(parsed, (int, float)):
        if not math.isfinite(parsed):
            raise ValueError(f"{where}: expected a finite number.")
        return parsed
    if key in DEFAULT_FEATURES:
        raise ValueError(f"{where}: {key} is a configuration feature; expected a finite number.")
    return parsed


def cmd_import(args, argv):

    constants = parse_set(args.set)
    folder = args.output_dir / args.dataset
    stems = [f.stem for f in args.files]
    if len(set(stems)) != len(stems):
        raise ValueError(f"two input files share a name {sorted(stems)}; import them separately.")
    targets = [folder / f"{stem}.csv" for stem in stems]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not args.overwrite:
        raise ValueError(f"{existing[0]} exists; pass --overwrite to replace it.")
    not_files = [t for t in existing if not t.is_file()]
    if not_files:
        raise ValueError(f"{not_files[0]} exists and is not a file; it cannot be replaced.")
    # Everything is read (and checked) before anything is written.
    frames = []
    for path in args.files:
        frame = read_benchmark(path, format=args.format)
        clash = sorted(set(constants) & set(frame.columns))
        if clash:
            raise ValueError(f"--set {clash[0]}: {path} already has that column.")
        frames.append(frame.assign(**constants))
    folder.mkdir(parents=True, exist_ok=True)
    # Every file is written in full beside its target first and then renamed
    # over it, so that an interruption leaves each target as it was.
    written = {}
    try:
        for frame, target in zip(frames, targets):
            if len(frame):
                written[target] = write_beside(frame, target)
        for target, temporary in written.items():
            os.replace(temporary, target)
    finally:
        for temporary in written.values():
            temporary.unlink(missing_ok=True)
    for frame, target in zip(frames, targets):
        print(
            f"sklat import: {summary_line(frame.attrs['import_summary'])}"
            + (f" -> {target}" if len(frame) else " -> nothing written")
        )
    return 0
