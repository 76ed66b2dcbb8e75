"""Reading folders of profiling results.

A results folder holds one row per request, in CSV, JSONL or Parquet files,
either in one sub-folder per dataset or directly at the top::

    results_dir/
      <dataset>/   *.csv | *.jsonl | *.parquet
      (or the files directly in results_dir: each file is then a dataset)

Columns (latencies in milliseconds): the configuration features (by default
``vision_tokens, text_tokens, tier_idx, top_k, num_active_blocks``),
``output_tokens``, ``T_prefill_total``, ``T_LLM_decode``; optionally
``T_decode_per_token_avg`` (must equal ``T_LLM_decode / output_tokens``) and
``T_decode_per_step`` (the per-step latencies: a list, or JSON text in CSV).
Other columns (``run_id``, ``sample_id``...) are kept out of the features.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ._validation import DECODE_COL, PREFILL_COL

DEFAULT_FEATURES = ["vision_tokens", "text_tokens", "tier_idx", "top_k",
                    "num_active_blocks"]
OUTPUT_TOKENS_COL = "output_tokens"
PER_STEP_COL = "T_decode_per_step"
AVG_COL = "T_decode_per_token_avg"
SUFFIXES = (".csv", ".jsonl", ".parquet")
# Descriptive columns written by ``sklat profile`` (see :mod:`sklat.profile`).
PROFILE_COLUMNS = ("repeat", "model", "random_weights", "device", "dtype",
                   "attn_implementation", "threads", "seed", "device_name", "torch_version",
                   "transformers_version", "sklat_version", "python_version", "run_id")
# Columns a results file may hold that are never configuration features.
NON_FEATURE_COLUMNS = {OUTPUT_TOKENS_COL, PREFILL_COL, DECODE_COL, PER_STEP_COL, AVG_COL,
                       "sample_id", *PROFILE_COLUMNS}


class ResultsFormatError(ValueError):
    """A results file that breaks the format: names the file, row and column."""


def _read_file(path):
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise ImportError(
            f"reading {path} needs a Parquet engine: pip install 'sklat[parquet]' "
            f"({exc})") from None


def discover_datasets(results_dir):
    """``{dataset name: [files]}`` of a results folder."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist.")
    found = {}
    for path in sorted(root.iterdir()):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
            if files:
                found[path.name] = files
        elif path.suffix in SUFFIXES:
            found.setdefault(path.stem, []).append(path)
    if not found:
        raise ResultsFormatError(
            f"{root} holds no {', '.join(SUFFIXES)} files, neither at the top nor in "
            "dataset sub-folders.")
    return found


def _where(path, row, column):
    return f"{path}, row {row + 1}, column {column!r}"


def _parse_steps(value, path, row):
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except ValueError:
            raise ResultsFormatError(
                f"{_where(path, row, PER_STEP_COL)}: expected a JSON list of "
                f"per-step latencies, got {value[:40]!r}.") from None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ResultsFormatError(
            f"{_where(path, row, PER_STEP_COL)}: expected a list of numbers.") from None
    if arr.ndim != 1:
        raise ResultsFormatError(
            f"{_where(path, row, PER_STEP_COL)}: expected a flat list, got shape "
            f"{arr.shape}.")
    return arr


def _check_frame(frame, path, features, rtol):
    required = features + [OUTPUT_TOKENS_COL, PREFILL_COL, DECODE_COL]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = ""
        if set(missing) & set(features):
            hint = (" Choose the feature columns with --features (sklat train) or "
                    "features= (load_results); this file has "
                    f"{[c for c in frame.columns if c not in NON_FEATURE_COLUMNS]}.")
        raise ResultsFormatError(
            f"{path}: missing column(s) {missing}; a results file needs "
            f"{required}.{hint}")
    for col in required + ([AVG_COL] if AVG_COL in frame.columns else []):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ResultsFormatError(
                f"{_where(path, row, col)}: expected a finite number, got "
                f"{frame[col].iloc[row]!r}.")
        if col in (PREFILL_COL, DECODE_COL, AVG_COL) and (values <= 0).any():
            row = int(np.flatnonzero(values <= 0)[0])
            raise ResultsFormatError(
                f"{_where(path, row, col)}: latencies must be > 0, got {values[row]}.")
        frame[col] = values
    n = frame[OUTPUT_TOKENS_COL].to_numpy()
    bad = (n < 1) | (n != np.round(n))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ResultsFormatError(
            f"{_where(path, row, OUTPUT_TOKENS_COL)}: expected an integer >= 1, got "
            f"{n[row]}.")
    frame[OUTPUT_TOKENS_COL] = n.astype(np.int64)
    total = frame[DECODE_COL].to_numpy()
    if AVG_COL in frame.columns:
        avg = frame[AVG_COL].to_numpy()
        bad = ~np.isclose(avg * n, total, rtol=rtol, atol=0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ResultsFormatError(
                f"{_where(path, row, AVG_COL)}: {avg[row]} x output_tokens {n[row]} = "
                f"{avg[row] * n[row]:.6g} disagrees with {DECODE_COL} = {total[row]:.6g} "
                f"(rtol {rtol}).")
    steps = [None] * len(frame)
    if PER_STEP_COL in frame.columns:
        for row, value in enumerate(frame[PER_STEP_COL].tolist()):
            arr = _parse_steps(value, path, row)
            if arr is None:
                continue
            if len(arr) != n[row]:
                raise ResultsFormatError(
                    f"{_where(path, row, PER_STEP_COL)}: {len(arr)} per-step latencies "
                    f"but output_tokens is {n[row]}.")
            if not np.isfinite(arr).all() or (arr <= 0).any():
                step = int(np.flatnonzero(~np.isfinite(arr) | (arr <= 0))[0])
                raise ResultsFormatError(
                    f"{_where(path, row, PER_STEP_COL)}: step {step + 1} is {arr[step]}; "
                    "per-step latencies must be finite and > 0.")
            if not np.isclose(arr.sum(), total[row], rtol=rtol, atol=0):
                raise ResultsFormatError(
                    f"{_where(path, row, PER_STEP_COL)}: per-step latencies sum to "
                    f"{arr.sum():.6g} but {DECODE_COL} is {total[row]:.6g} (rtol {rtol}).")
            steps[row] = arr
    return steps


def load_results(results_dir, datasets=None, features=None, rtol=0.01):
    """Read a folder of profiling results into training inputs.

    Parameters
    ----------
    results_dir : str or path-like
        The results folder (see the module docstring for the layout).
    datasets : list of str, default=None
        Datasets to read (sub-folder names, or file stems for files at the
        top); ``None`` reads all of them.
    features : list of str, default=None
        Configuration feature columns; ``None`` uses :data:`DEFAULT_FEATURES`.
    rtol : float, default=0.01
        Relative tolerance of the consistency checks (per-step sums and
        per-token averages against ``T_LLM_decode``).

    Returns
    -------
    results : :class:`~sklearn.utils.Bunch`
        ``X`` (features), ``y`` (``[T_prefill_total, T_LLM_decode]``),
        ``output_tokens``, ``positioned_latencies`` (list, ``None`` where a
        request has no per-step data), ``dataset`` (name per request) and
        ``frame`` (all columns read, with ``dataset``).

    Raises
    ------
    ResultsFormatError
        Naming the file, row and column of the first bad value.

    Examples
    --------
    >>> from sklat.io import load_results, demo_results_dir
    >>> res = load_results(demo_results_dir())
    >>> sorted(set(res.dataset))
    ['text_moe', 'vision_tiers']
    >>> list(res.y.columns)
    ['T_prefill_total', 'T_LLM_decode']
    """
    features = list(DEFAULT_FEATURES if features is None else features)
    found = discover_datasets(results_dir)
    if datasets is not None:
        unknown = [d for d in datasets if d not in found]
        if unknown:
            raise ValueError(f"dataset(s) {unknown} not found in {results_dir}; "
                             f"available: {sorted(found)}.")
        found = {d: found[d] for d in datasets}
    frames, steps = [], []
    for name, files in found.items():
        for path in files:
            frame = _read_file(path)
            if frame.empty:
                raise ResultsFormatError(f"{path}: no rows.")
            steps.extend(_check_frame(frame, path, features, rtol))
            frames.append(frame.assign(dataset=name))
    frame = pd.concat(frames, ignore_index=True)
    return Bunch(
        X=frame[features].copy(),
        y=frame[[PREFILL_COL, DECODE_COL]].copy(),
        output_tokens=frame[OUTPUT_TOKENS_COL].to_numpy(dtype=np.int64),
        positioned_latencies=steps,
        dataset=frame["dataset"].to_numpy(),
        frame=frame,
    )


def demo_results_dir():
    """The demo results folder shipped with sklat.

    Two synthetic datasets made by :func:`sklat.datasets.write_demo_results`
    (the design document's saturating curve, 5% noise): ``vision_tiers``
    (CSV, per-step data for a fifth of the requests) and ``text_moe`` (JSONL,
    totals only). They are not measurements of real hardware.
    """
    return Path(__file__).resolve().parent / "demo_data"
