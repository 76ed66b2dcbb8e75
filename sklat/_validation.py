"""Input checks shared by the estimator, the data loaders and the CLI.

Every error names the column or sample at fault and what was expected; nothing
is dropped, clipped or guessed.
"""

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import DataConversionWarning

PREFILL_COL = "T_prefill_total"
DECODE_COL = "T_LLM_decode"


def _first_bad(mask):
    return int(np.flatnonzero(mask)[0])


def _reject(bad, values, template):
    """Raise ``ValueError(template)`` for the first flagged entry; the template
    may use ``{i}`` (its index) and ``{value}``."""
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(template.format(i=i, value=values[i]))


def _as_float_vector(values, name):
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric; got {exc}") from None
    return arr


def check_finite_positive(values, name):
    """Raise if ``values`` (1-D float) holds NaN, inf or anything <= 0."""
    _reject(~np.isfinite(values), values,
            name + " must be finite (no NaN or inf); sample {i} is {value}.")
    _reject(values <= 0, values,
            name + " must be positive latencies (> 0); sample {i} is {value}.")


def check_output_tokens(output_tokens, n_samples, name="output_tokens"):
    """Validate ``N`` per request: 1-D, length ``n_samples``, integers >= 1."""
    if isinstance(output_tokens, numbers.Number):
        output_tokens = np.full(n_samples, output_tokens)
    arr = _as_float_vector(output_tokens, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    if len(arr) != n_samples:
        raise ValueError(
            f"{name} has {len(arr)} entries but X has {n_samples} samples.")
    _reject(~np.isfinite(arr), arr,
            name + " must be finite (no NaN or inf); sample {i} is {value}.")
    _reject(arr != np.round(arr), arr, name + " must be integers; sample {i} is {value}.")
    _reject(arr < 1, arr, name + " must be >= 1; sample {i} is {value:.0f}.")
    return arr.astype(np.int64)


def check_positions(positions):
    """Validate the positions of :meth:`predict_positions`: integers >= 1."""
    arr = _as_float_vector(positions, "positions")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"positions must be a non-empty 1-D sequence; got shape {arr.shape}.")
    _reject(~np.isfinite(arr) | (arr != np.round(arr)), arr,
            "positions must be integers; entry {i} is {value}.")
    _reject(arr < 1, arr, "positions must be >= 1 (position 1 is the first decode step); "
            "entry {i} is {value:.0f}.")
    return arr.astype(np.int64)


def check_targets(y):
    """Return ``(decode_total, prefill_or_None, y_was_2d)`` from ``y``.

    ``y`` is 1-D ``T_LLM_decode`` or two columns ``[T_prefill_total,
    T_LLM_decode]``; a DataFrame is matched by those names.
    """
    if isinstance(y, pd.DataFrame):
        cols = list(y.columns)
        if {PREFILL_COL, DECODE_COL} <= set(cols):
            y = y[[PREFILL_COL, DECODE_COL]]
        elif cols == [DECODE_COL]:
            y = y[DECODE_COL]
        elif y.shape[1] not in (1, 2):
            raise ValueError(
                f"y must have 1 column ({DECODE_COL}) or 2 columns "
                f"({PREFILL_COL}, {DECODE_COL}); got {y.shape[1]} columns {cols}.")
    arr = _as_float_vector(y, "y")
    if arr.ndim == 2 and arr.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please "
            "change the shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning, stacklevel=3)
        arr = arr[:, 0]
    if arr.ndim == 1:
        check_finite_positive(arr, f"y ({DECODE_COL})")
        return arr, None, False
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"y must have 1 column ({DECODE_COL}) or 2 columns ({PREFILL_COL}, "
            f"{DECODE_COL}); got shape {arr.shape}.")
    check_finite_positive(arr[:, 0], f"y column 0 ({PREFILL_COL})")
    check_finite_positive(arr[:, 1], f"y column 1 ({DECODE_COL})")
    return arr[:, 1], arr[:, 0], True


def check_positioned_latencies(positioned, output_tokens):
    """Flatten ragged per-step lists into ``(values, offsets)`` (CSR layout).

    Each entry is ``None`` (no per-step data for that request) or a 1-D
    sequence of ``output_tokens[i]`` positive finite latencies.
    """
    n = len(output_tokens)
    if positioned is None:
        return np.zeros(0), np.zeros(n + 1, dtype=np.int64)
    if isinstance(positioned, (str, bytes)) or not hasattr(positioned, "__len__"):
        raise TypeError(
            "positioned_latencies must be a list with one entry per sample "
            f"(None or a 1-D array); got {type(positioned).__name__}.")
    if len(positioned) != n:
        raise ValueError(
            f"positioned_latencies has {len(positioned)} entries but X has "
            f"{n} samples.")
    entries = list(positioned.values if isinstance(positioned, pd.Series)
                   else positioned)
    lengths = np.zeros(n, dtype=np.int64)
    arrays = []
    for i, steps in enumerate(entries):
        if steps is None or (np.isscalar(steps) and pd.isna(steps)):
            continue
        arr = _as_float_vector(steps, f"positioned_latencies[{i}]")
        if arr.ndim != 1:
            raise ValueError(
                f"positioned_latencies[{i}] must be 1-D; got shape {arr.shape}.")
        if len(arr) != output_tokens[i]:
            raise ValueError(
                f"positioned_latencies[{i}] has {len(arr)} steps but "
                f"output_tokens[{i}] is {output_tokens[i]}; a per-step list must "
                "have one latency per output token.")
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            j = _first_bad(bad)
            raise ValueError(
                f"positioned_latencies[{i}] must hold positive finite latencies; "
                f"step {j + 1} is {arr[j]}.")
        lengths[i] = len(arr)
        arrays.append(arr)
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    return values, np.concatenate(([0], np.cumsum(lengths)))
