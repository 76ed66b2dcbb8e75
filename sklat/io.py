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
``T_decode_per_step`` (the per-step latencies: a list, or JSON text in CSV),
or ``T_decode_segment_tokens`` with ``T_decode_segment_ms`` (timed decode
segments: the tokens each segment covered and its time, lists that cover
positions ``1..output_tokens`` in order, as streamed events do; a request has
per-step latencies or segments, not both). Other columns (``run_id``,
``sample_id``...) are kept out of the features.

Files are recognised by their suffix, whatever its case (``RUN.CSV``); hidden
files (``.name``, such as the temporaries of an interrupted write) are not read. Only
regular files are read: a folder, device or pipe named like a results file is
skipped with a warning. Every error names the file, and the row (or line)
and column where it can.
"""

import json
import numbers
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ._constants import (
    AVG_COL,
    DECODE_COL,
    DEFAULT_FEATURES,
    LIST_COLUMNS,
    MODEL_FILE,
    OUTPUT_TOKENS_COL,
    PER_STEP_COL,
    PREFILL_COL,
    SEGMENT_MS_COL,
    SEGMENT_TOKENS_COL,
    SELF_COUNTED_LOADS,
)
from ._features import COUNTS_ITSELF, WAITING_WITHIN, first_below_one, first_more_waiting
from ._results import PROFILE_COLUMNS, first_repeated
from ._validation import (
    check_finite,
    check_finite_positive,
    check_segment,
    check_steps,
    check_token_counts,
    first_true,
    is_missing,
    row_at,
)
from .acquire._import._convention import DESCRIPTIVE_COLUMNS
from .acquire._read import read_benchmark  # noqa: F401  (public here since 0.10)

SUFFIXES = (".csv", ".jsonl", ".parquet")
# Columns a results file may hold that are never configuration features.
NON_FEATURE_COLUMNS = {
    OUTPUT_TOKENS_COL,
    PREFILL_COL,
    DECODE_COL,
    PER_STEP_COL,
    SEGMENT_TOKENS_COL,
    SEGMENT_MS_COL,
    AVG_COL,
    "sample_id",
    *PROFILE_COLUMNS,
    *DESCRIPTIVE_COLUMNS,
    "image_size",
}


class ResultsFormatError(ValueError):
    """A results file that breaks the format: names the file, row and column."""


def _suffix(path):
    """The file type, whatever the case of its suffix (``UPPER.CSV``)."""
    return path.suffix.lower()


def _is_regular_file(path):
    """Regular files only: a device (``/dev/zero``), a FIFO or a socket could
    make a read never end."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_table(path):
    """One results or configuration file (CSV, JSONL or Parquet) as a DataFrame.

    Parameters
    ----------
    path : str or path-like
        The file; its suffix (any case) says the format.

    Returns
    -------
    frame : DataFrame
        The file's rows, unchecked.

    Raises
    ------
    ResultsFormatError
        If ``path`` is not a regular file, has an unknown suffix or cannot be
        parsed; the message names the file (and the line, for JSONL).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if not _is_regular_file(path):
        raise ResultsFormatError(
            f"{path} is not a regular file (a folder, device or "
            "pipe); sklat reads regular files only."
        )
    kind = _suffix(path)
    if kind not in SUFFIXES:
        raise ResultsFormatError(
            f"{path}: unknown file type {path.suffix!r}; expected one of {', '.join(SUFFIXES)}."
        )
    try:
        if kind == ".csv":
            return pd.read_csv(path)
        if kind == ".jsonl":
            return _read_jsonl(path)
        return pd.read_parquet(path)
    except ImportError as exc:
        raise ImportError(
            f"reading {path} needs a Parquet engine: pip install 'sklat[parquet]' ({exc})"
        ) from None
    except pd.errors.EmptyDataError:
        raise ResultsFormatError(f"{path}: the file is empty (no header row).") from None
    except (ValueError, OSError, RecursionError, UnicodeDecodeError) as exc:
        if isinstance(exc, ResultsFormatError):
            raise
        raise ResultsFormatError(f"{path}: cannot be read as {kind[1:].upper()}: {exc}") from None


def write_results(frame, path):
    """Write requests in the results format to a CSV, JSONL or Parquet file.

    List columns (``T_decode_per_step``, ``T_decode_segment_tokens``,
    ``T_decode_segment_ms``) are written as JSON text in CSV, as arrays in
    JSONL and as list columns in Parquet, so that :func:`load_results` reads
    them back unchanged.

    Parameters
    ----------
    frame : DataFrame
        One row per request; list cells may be lists, arrays or ``None``.
    path : str or path-like
        The file to write; its suffix (any case) says the format.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> from sklat.io import write_results, read_table
    >>> frame = pd.DataFrame({"output_tokens": [2], "T_decode_segment_tokens": [[1, 1]]})
    >>> path = write_results(frame, tempfile.mkdtemp() + "/requests.csv")
    >>> read_table(path)["T_decode_segment_tokens"].iloc[0]
    '[1, 1]'
    """
    path = Path(path)
    temporary = write_beside(frame, path)
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_beside(frame, path):
    """Write ``frame`` as :func:`write_results` would write ``path``, but whole
    to a hidden temporary file beside it, and return that file: renamed over
    ``path``, an interruption never leaves ``path`` cut short. Several files
    written so can be put in place together, after all are written."""
    kind = _suffix(path)
    if kind not in SUFFIXES:
        raise ValueError(
            f"{path}: unknown file type {path.suffix!r}; expected one of {', '.join(SUFFIXES)}."
        )
    out = frame.copy()
    lists = [c for c in LIST_COLUMNS if c in out.columns]
    for col in lists:
        out[col] = [None if is_missing(v) else np.asarray(v).tolist() for v in out[col]]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if kind == ".csv":
            for col in lists:
                out[col] = [None if v is None else json.dumps(v) for v in out[col]]
            out.to_csv(temporary, index=False)
        elif kind == ".jsonl":
            with open(temporary, "w", encoding="utf-8") as f:
                for record in out.to_dict(orient="records"):
                    clean = {k: (None if is_missing(v) else v) for k, v in record.items()}
                    # An infinite request rate is a value (written as Infinity).
                    f.write(json.dumps(clean) + "\n")
        else:
            out.to_parquet(temporary, index=False)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _read_jsonl(path):
    """JSON Lines, one object per non-blank line; a bad line is named."""
    with open(path, encoding="utf-8") as f:
        return _json_lines_frame(f, path)


def _json_lines_frame(lines, where):
    """A frame of the JSON objects of ``lines`` (text lines; blank ones are
    skipped); a bad line is named by its number among them, in ``where``."""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ResultsFormatError(
                f"{where}, line {number}: not a JSON object ({reason})."
            ) from None
        if not isinstance(record, dict):
            raise ResultsFormatError(
                f"{where}, line {number}: expected a JSON object, got {type(record).__name__}."
            )
        records.append(record)
    return pd.DataFrame.from_records(records)


def _results_files(paths):
    """The results files among ``paths``, sorted, hidden ones (``.name``) left
    out; anything else that looks like one (a folder named ``x.csv``, a pipe)
    is skipped with a warning."""
    files = []
    for path in sorted(paths):
        if _suffix(path) not in SUFFIXES or path.name.startswith("."):
            # Hidden files include the temporaries of a write cut short.
            continue
        if _is_regular_file(path):
            files.append(path)
        else:
            warnings.warn(f"skipping {path}: not a regular file.", UserWarning, stacklevel=3)
    return files


def discover_datasets(results_dir):
    """``{dataset name: [files]}`` of a results folder."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist.")
    found = {}
    for path in sorted(root.iterdir()):
        if path.is_dir():
            files = _results_files(path.iterdir())
            if files:
                found[path.name] = files
        else:
            for file in _results_files([path]):
                found.setdefault(file.stem, []).append(file)
    if not found:
        raise ResultsFormatError(
            f"{root} holds no {', '.join(SUFFIXES)} files, neither at the top nor in "
            "dataset sub-folders."
        )
    return found


def _where(path, row, column):
    return f"{path}, {row_at(row)}, column {column!r}"


def _parse_list(value, path, row, n_tokens, column=PER_STEP_COL):
    """A list cell (a list, or JSON text in CSV) as a 1-D float array, or None."""
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        if value.count(",") >= n_tokens:
            # Refused before parsing: a huge list costs memory to parse.
            raise ResultsFormatError(
                f"{_where(path, row, column)}: more than {n_tokens} "
                f"{'per-step latencies' if column == PER_STEP_COL else 'segments'} but "
                f"output_tokens is {n_tokens}."
            )
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ResultsFormatError(
                f"{_where(path, row, column)}: expected a JSON list of numbers, got {value[:40]!r}."
            ) from None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RecursionError):
        raise ResultsFormatError(
            f"{_where(path, row, column)}: expected a list of numbers."
        ) from None
    if arr.ndim != 1:
        raise ResultsFormatError(
            f"{_where(path, row, column)}: expected a flat list, got shape {arr.shape}."
        )
    return arr


def _check_columns(frame, path, features):
    required = list(features) + [OUTPUT_TOKENS_COL, PREFILL_COL, DECODE_COL]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = ""
        if set(missing) & set(features):
            hint = (
                " Choose the feature columns with --features (sklat train) or "
                "features= (load_results); this file has "
                f"{[c for c in frame.columns if c not in NON_FEATURE_COLUMNS]}."
            )
        separator = _other_separator(frame.columns)
        if separator is not None:
            hint = (
                f" Its header is one column holding {separator!r}: a results file is "
                "comma-separated."
            )
        raise ResultsFormatError(
            f"{path}: missing column(s) {missing}; a results file needs {required}.{hint}"
        )
    return required


def _other_separator(columns):
    """The separator (``;``, a tab, ``|``) of a CSV file read as one column
    whose name holds them, if that is what it looks like."""
    if len(columns) != 1:
        return None
    return next((sep for sep in (";", "\t", "|") if sep in str(columns[0])), None)


def check_values(frame, path, columns):
    """Check ``columns`` of a file's ``frame`` with the estimator's own checks and
    convert them in place: ``output_tokens`` to int64 (integers in
    ``1..MAX_OUTPUT_TOKENS``), latencies to float64 > 0, anything else (features)
    to finite float64. Errors name the file, column and row (from 1)."""
    try:
        for col in columns:
            raw = frame[col].to_numpy()
            values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
            name = f"{path}: column {col!r}"
            if col == OUTPUT_TOKENS_COL:
                values = check_token_counts(values, name, row_at, shown=raw)
            elif col in (PREFILL_COL, DECODE_COL, AVG_COL):
                check_finite_positive(values, name, row_at, shown=raw)
            else:
                check_finite(values, name, row_at, shown=raw)
                # The estimator's own check of these loads, here by file row.
                row = first_below_one(values) if col in SELF_COUNTED_LOADS else None
                if row is not None:
                    raise ValueError(f"{name} {COUNTS_ITSELF}; {row_at(row)} is {values[row]:g}.")
            frame[col] = values
        if {"in_flight_at_start", "waiting_at_start"} <= set(columns):
            in_flight, waiting = frame["in_flight_at_start"], frame["waiting_at_start"]
            row = first_more_waiting(in_flight, waiting)
            if row is not None:
                raise ValueError(
                    f"{path}: column 'waiting_at_start' {WAITING_WITHIN}; {row_at(row)} has "
                    f"{waiting.iloc[row]:g} waiting and {in_flight.iloc[row]:g} in flight."
                )
    except ValueError as exc:
        raise ResultsFormatError(str(exc)) from None


def _check_frame(frame, path, features, rtol):
    """Validate (and convert in place) one results file; returns its per-step
    lists and decode segments. The checks are the estimator's own, located by
    file, row, column."""
    required = _check_columns(frame, path, features)
    check_values(frame, path, required + ([AVG_COL] if AVG_COL in frame.columns else []))
    n = frame[OUTPUT_TOKENS_COL].to_numpy()
    total = frame[DECODE_COL].to_numpy()
    if AVG_COL in frame.columns:
        avg = frame[AVG_COL].to_numpy()
        row = first_true(~np.isclose(avg * n, total, rtol=rtol, atol=0))
        if row is not None:
            raise ResultsFormatError(
                f"{_where(path, row, AVG_COL)}: {avg[row]} x output_tokens {n[row]} = "
                f"{avg[row] * n[row]:.6g} disagrees with {DECODE_COL} = {total[row]:.6g} "
                f"(rtol {rtol})."
            )
    steps = [None] * len(frame)
    if PER_STEP_COL in frame.columns:
        for row, value in enumerate(frame[PER_STEP_COL].tolist()):
            arr = _parse_list(value, path, row, n[row])
            if arr is None:
                continue
            try:
                arr = check_steps(arr, n[row], _where(path, row, PER_STEP_COL))
            except ValueError as exc:
                raise ResultsFormatError(str(exc)) from None
            _check_sum(arr, total[row], rtol, _where(path, row, PER_STEP_COL), "per-step latencies")
            steps[row] = arr
    return steps, _check_segments(frame, path, n, total, steps, rtol)


def _check_sum(values, total, rtol, where, what):
    """Timed parts of a request must add up to its ``T_LLM_decode``."""
    if not np.isclose(values.sum(), total, rtol=rtol, atol=0):
        raise ResultsFormatError(
            f"{where}: {what} sum to {values.sum():.6g} but {DECODE_COL} is {total:.6g} "
            f"(rtol {rtol})."
        )


def _check_segments(frame, path, n, total, steps, rtol):
    """The decode segments of each row: ``(tokens, ms)`` or None."""
    has = [c in frame.columns for c in (SEGMENT_TOKENS_COL, SEGMENT_MS_COL)]
    segments = [None] * len(frame)
    if not any(has):
        return segments
    if not all(has):
        present, absent = (
            (SEGMENT_TOKENS_COL, SEGMENT_MS_COL) if has[0] else (SEGMENT_MS_COL, SEGMENT_TOKENS_COL)
        )
        raise ResultsFormatError(
            f"{path}: column {present!r} without {absent!r}; decode segments need both."
        )
    pairs = zip(frame[SEGMENT_TOKENS_COL].tolist(), frame[SEGMENT_MS_COL].tolist())
    for row, (raw_tokens, raw_ms) in enumerate(pairs):
        tokens = _parse_list(raw_tokens, path, row, n[row], SEGMENT_TOKENS_COL)
        ms = _parse_list(raw_ms, path, row, n[row], SEGMENT_MS_COL)
        if tokens is None and ms is None:
            continue
        if tokens is None or ms is None:
            column = SEGMENT_TOKENS_COL if tokens is None else SEGMENT_MS_COL
            raise ResultsFormatError(
                f"{_where(path, row, column)}: empty, but the row has the other segment column."
            )
        if steps[row] is not None:
            raise ResultsFormatError(
                f"{_where(path, row, SEGMENT_TOKENS_COL)}: the row also has "
                f"{PER_STEP_COL}; a request has per-step latencies or segments, not both."
            )
        try:
            tokens, ms = check_segment(tokens, ms, n[row], _where(path, row, "decode segments"))
        except (TypeError, ValueError) as exc:
            raise ResultsFormatError(str(exc)) from None
        _check_sum(ms, total[row], rtol, _where(path, row, SEGMENT_MS_COL), "segment times")
        segments[row] = (tokens, ms)
    return segments


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
        Relative tolerance of the consistency checks (per-step and segment
        sums and per-token averages against ``T_LLM_decode``).

    Returns
    -------
    results : :class:`~sklearn.utils.Bunch`
        ``X`` (features), ``y`` (``[T_prefill_total, T_LLM_decode]``),
        ``output_tokens``, ``positioned_latencies`` (list, ``None`` where a
        request has no per-step data), ``decode_segments`` (list of
        ``(tokens, ms)`` pairs, ``None`` where a request has none),
        ``dataset`` (name per request) and ``frame`` (all columns read, with ``dataset``).

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
    features = _names(DEFAULT_FEATURES if features is None else features, "features")
    if datasets is not None:
        datasets = _names(datasets, "datasets")
        if not datasets:
            raise ValueError("datasets is empty; name at least one, or None for all of them.")
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not 0 <= rtol < np.inf:
        raise ValueError(f"rtol must be a finite number >= 0; got {rtol!r}.")
    found = discover_datasets(results_dir)
    if datasets is not None:
        unknown = [d for d in datasets if d not in found]
        if unknown:
            raise ValueError(
                f"dataset(s) {unknown} not found in {results_dir}; available: {sorted(found)}."
            )
        found = {d: found[d] for d in datasets}
    parts = [(read_table(path), path, name) for name, files in found.items() for path in files]
    return _checked_results(parts, features, rtol)


def _checked_results(parts, features, rtol=0.01):
    """:func:`load_results`' answer from ``(frame, path, dataset)`` parts:
    each frame (the rows of one file, or of a part of one named by
    ``path``) checked as a results file is, then all of them together."""
    frames, steps, segments = [], [], []
    for frame, path, name in parts:
        if frame.empty:
            raise ResultsFormatError(f"{path}: no rows.")
        file_steps, file_segments = _check_frame(frame, path, features, rtol)
        steps.extend(file_steps)
        segments.extend(file_segments)
        frames.append(frame.assign(dataset=name))
    frame = pd.concat(frames, ignore_index=True)
    return Bunch(
        X=frame[features].copy(),
        y=frame[[PREFILL_COL, DECODE_COL]].copy(),
        output_tokens=frame[OUTPUT_TOKENS_COL].to_numpy(dtype=np.int64),
        positioned_latencies=steps,
        decode_segments=segments,
        dataset=frame["dataset"].to_numpy(),
        frame=frame,
    )


def _names(values, what):
    """``values`` as a list of distinct names; a bare string is refused (it
    would be read one character at a time)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{what} must be a list of names, not one string; got {values!r}.")
    names = list(values)
    repeated = first_repeated(names)
    if repeated is not None:
        raise ValueError(f"{what} names {repeated!r} twice.")
    return names


def model_file(path):
    """The model file of ``path``: a model file, or a ``sklat train`` output
    folder holding ``model.safetensors``; ``FileNotFoundError`` if there is none."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is a folder without a {MODEL_FILE}: give a model file written by "
                "sklat.save, or a sklat train output folder."
            )
        return path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist.")
    return path


def demo_results_dir():
    """The demo results folder shipped with sklat.

    Two synthetic datasets made by :func:`sklat.datasets.write_demo_results`
    (the design document's saturating curve, 5% noise): ``vision_tiers``
    (CSV, per-step data for a fifth of the requests) and ``text_moe`` (JSONL,
    totals only). They are not measurements of real hardware.

    Returns
    -------
    path : pathlib.Path
        The folder, inside the installed package.
    """
    return Path(__file__).resolve().parent / "demo_data"
