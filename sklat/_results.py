"""The results folder's files as the profilers write them and :mod:`sklat.io`
reads them: one ``requests.csv`` per dataset, its column names, and the
append-as-you-go writing that lets an interrupted profile resume.

Used by :mod:`sklat.io` and by both profilers (:mod:`sklat.acquire`), so the
column names live here once. Imports neither torch nor the estimator.
"""

import re
import sys

import numpy as np
import pandas as pd

from ._constants import OUTPUT_TOKENS_COL

RESULTS_FILE = "requests.csv"
# What makes two runs comparable: rows appended to an existing file must match.
SETUP_COLUMNS = (
    "model",
    "random_weights",
    "device",
    "dtype",
    "attn_implementation",
    "threads",
    "seed",
)
# Descriptive columns written by ``sklat profile``: the setup, then what the
# run found out about the machine and the libraries.
PROFILE_COLUMNS = (
    "repeat",
    *SETUP_COLUMNS,
    "device_name",
    "torch_version",
    "transformers_version",
    "sklat_version",
    "python_version",
    "run_id",
)
# One request of the grid; a resumed run skips the keys already in the file.
KEY_COLUMNS = (
    "text_tokens",
    OUTPUT_TOKENS_COL,
    "top_k",
    "num_active_blocks",
    "repeat",
    "tier_idx",
    "concurrency",
)


def first_repeated(values):
    """The first entry of ``values`` that an earlier one equals, or None."""
    return next((v for i, v in enumerate(values) if v in values[:i]), None)


def check_lengths(values, name):
    try:
        arr = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be integers >= 1; got {values!r}.") from None
    if not arr or any(v < 1 or v != float(w) for v, w in zip(arr, values)):
        raise ValueError(f"{name} must be a non-empty list of integers >= 1; got {list(values)!r}.")
    twice = first_repeated(arr)
    if twice is not None:
        # A slip (16,16 for 16,64, say): the grid would silently be smaller.
        raise ValueError(f"{name} lists {twice} twice; got {list(values)!r}.")
    return sorted(arr)


def read_done(path, setup, columns, keys=KEY_COLUMNS):
    """Keys (``keys`` columns) of the requests already in ``path``; refuses a
    file of another setup or with other columns."""
    if not path.exists():
        return set()
    text = path.read_text()
    if text and not text.endswith("\n"):
        # A write cut short (the process was killed mid-row): drop the partial row.
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    if not text.strip():
        return set()
    header = text.split("\n", 1)[0].split(",")
    if header != columns:
        raise ValueError(
            f"{path} has the columns {header}, but this grid writes {columns}; write "
            "to another --dataset or --output_dir."
        )
    wanted = set(keys) | set(setup)
    frame = pd.read_csv(path, usecols=lambda c: c in wanted, keep_default_na=False)
    for col, value in setup.items():
        seen = set(frame[col].astype(str)) if col in frame.columns else {"<missing>"}
        if seen != {str(value)}:
            raise ValueError(
                f"{path} holds requests measured with {col}={sorted(seen)}, not "
                f"{value!r}; write to another --dataset or --output_dir."
            )
    done = set()
    for row in frame.itertuples(index=False):
        done.add(tuple(_key_part(getattr(row, c, "")) for c in keys))
    return done


def _key_part(value):
    """A key column's value as the grid names it: None where empty, an int
    where whole (a count), else a float (a request rate)."""
    if value in ("", None) or (isinstance(value, float) and np.isnan(value)):
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def safe_name(text):
    """``text`` as a folder name: runs of other characters than letters,
    digits, ``.``, ``_`` and ``-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def append_csv_row(path, columns, row, float_format=None):
    """Append one request's row to a results CSV (the header first when the
    file is new). One write per row: an interruption loses at most the row in
    flight."""
    frame = pd.DataFrame([row], columns=columns)
    new = not path.exists() or path.stat().st_size == 0
    text = frame.to_csv(index=False, header=new, float_format=float_format)
    with open(path, "a", newline="") as f:
        f.write(text)
        f.flush()


def progress_bar(total, enabled):
    # tqdm (a dependency of skorch) costs a noticeable import; only a
    # profile run draws a bar.
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        disable=not enabled,
        desc="sklat profile",
        unit="request",
        file=sys.stderr,
        dynamic_ncols=True,
    )
