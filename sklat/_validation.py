"""Input checks shared by the estimator, the results reader and the CLI.

Every error names the column or sample at fault and what was expected; nothing
is dropped, clipped or guessed. Callers say where values come from with
``where``, a function from an index to its location: ``"sample 3"`` for arrays
passed to the estimator (indices from 0, as in numpy), ``"row 4"`` for rows of
a file (counted from 1, as a spreadsheet does).
"""

import functools
import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_consistent_length, validate_data

from ._constants import DECODE_COL, MAX_OUTPUT_TOKENS, PREFILL_COL
from ._requests import Segments


def sample_at(i):
    """Location of entry ``i`` of an array (from 0)."""
    return f"sample {i}"


def row_at(i):
    """Location of row ``i`` (from 0) of a file, counted from 1."""
    return f"row {i + 1}"


def first_true(mask):
    """Index of the first ``True`` of ``mask`` in row-major order (an int for
    a 1-D mask, a tuple of ints otherwise), or None: the entry an error
    message names."""
    mask = np.asarray(mask)
    flat = np.flatnonzero(mask)
    if not len(flat):
        return None
    if mask.ndim == 1:
        return int(flat[0])
    return tuple(int(i) for i in np.unravel_index(flat[0], mask.shape))


def first_non_finite(values):
    """The first row of ``values`` holding NaN or inf, or None."""
    first = first_true(~np.isfinite(values))
    return first if first is None or np.ndim(values) == 1 else first[0]


def feature_label(names, col):
    """Feature ``col`` as messages name it: its quoted name, or its index when
    ``X`` had no column names (``names`` None)."""
    return repr(str(names[col])) if names is not None else f"{col}"


def feature_labeller(est):
    """``label(col)``: the features of estimator ``est`` as messages name them."""
    return functools.partial(feature_label, getattr(est, "feature_names_in_", None))


def _reject(bad, values, message, where):
    """Raise ``ValueError`` for the first flagged entry: ``message`` ends with
    ``; <where(i)> is <value>.``"""
    i = first_true(bad)
    if i is not None:
        raise ValueError(f"{message}; {where(i)} is {_show(values[i])}.")


def _show(value):
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str):
        return str(float(value))
    return repr(value)


def as_float_array(values, name):
    """``values`` as float64; complex, boolean and non-numeric input is refused
    rather than silently converted."""
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.DataFrame)) else values
    arr = np.asarray(arr)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real numbers; got complex values.")
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must be numbers, not booleans (True / False).")
    # "0.5" is text, not a number: astype would parse it silently.
    text = []
    if arr.dtype.kind in "USO":  # numeric arrays hold no text: not scanned
        text = [
            str(v) if isinstance(v, str) else bytes(v)
            for v in arr.ravel()
            if isinstance(v, (str, bytes))
        ]
    if text:
        # numpy turns [0, "x"] into ["0", "x"]: show the entry that is not a number.
        shown = next((v for v in text if not _parses(v)), text[0])
        raise TypeError(f"{name} must be numeric, not text (strings); got {shown!r}.")
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric; got {exc}") from None


def _parses(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_finite(values, name, where=sample_at, shown=None):
    """Raise if ``values`` (1-D float) holds NaN or inf."""
    _reject(
        ~np.isfinite(values),
        values if shown is None else shown,
        f"{name} must be finite (no NaN or inf)",
        where,
    )


def check_finite_positive(values, name, where=sample_at, shown=None):
    """Raise if ``values`` (1-D float) holds NaN, inf or anything <= 0."""
    check_finite(values, name, where, shown)
    _reject(values <= 0, values, f"{name} must be positive latencies (> 0)", where)


def check_token_counts(values, name, where=sample_at, shown=None):
    """Raise unless ``values`` (1-D float) are integers in ``1..MAX_OUTPUT_TOKENS``;
    return them as int64."""
    check_finite(values, name, where, shown)
    _reject(values != np.round(values), values, f"{name} must be integers", where)
    _reject(values < 1, values, f"{name} must be >= 1", where)
    _reject(
        values > MAX_OUTPUT_TOKENS,
        values,
        f"{name} must be <= {MAX_OUTPUT_TOKENS} (sklat.MAX_OUTPUT_TOKENS)",
        where,
    )
    return values.astype(np.int64)


def check_output_tokens(
    output_tokens, n_samples, name="output_tokens", where=sample_at, against="X has {} samples"
):
    """Validate ``N`` per request: 1-D, length ``n_samples``, integers >= 1.
    ``against`` says what holds the ``n_samples`` (formatted with it)."""
    if isinstance(output_tokens, numbers.Number) and not isinstance(output_tokens, bool):
        output_tokens = np.full(n_samples, output_tokens)
    arr = as_float_array(output_tokens, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    if len(arr) != n_samples:
        raise ValueError(f"{name} has {len(arr)} entries but {against.format(n_samples)}.")
    return check_token_counts(arr, name, where)


def check_threshold(value, n_samples, name):
    """A latency objective: one positive number, or one per sample."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        value = np.full(n_samples, value)
    arr = as_float_array(value, name)
    if arr.ndim != 1 or len(arr) != n_samples:
        raise ValueError(
            f"{name} must be a number or have one entry per sample ({n_samples}); "
            f"got shape {arr.shape}."
        )
    check_finite_positive(arr, name)
    return arr


def _sequence(values, name):
    """``values`` as a non-empty 1-D float64 array (one number is one entry)."""
    arr = as_float_array(values, name)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence; got shape {arr.shape}.")
    return arr


def check_levels(quantiles):
    """Quantile levels: one number or a non-empty 1-D sequence, each in (0, 1]."""
    arr = _sequence(quantiles, "quantiles")
    _reject(
        ~np.isfinite(arr) | (arr <= 0) | (arr > 1),
        arr,
        "quantiles must be levels in (0, 1]",
        "entry {}".format,
    )
    return arr


def check_positions(positions):
    """Validate the positions of :meth:`predict_positions`: integers >= 1."""
    arr = _sequence(positions, "positions")
    entry = "entry {}".format
    _reject(~np.isfinite(arr) | (arr != np.round(arr)), arr, "positions must be integers", entry)
    _reject(arr < 1, arr, "positions must be >= 1 (position 1 is the first decode step)", entry)
    _reject(
        arr > MAX_OUTPUT_TOKENS,
        arr,
        f"positions must be <= {MAX_OUTPUT_TOKENS} (sklat.MAX_OUTPUT_TOKENS)",
        entry,
    )
    if arr.size > MAX_OUTPUT_TOKENS:
        raise ValueError(
            f"positions holds {arr.size} entries; at most "
            f"{MAX_OUTPUT_TOKENS} (sklat.MAX_OUTPUT_TOKENS) are allowed."
        )
    return arr.astype(np.int64)


def select_targets(y):
    """``y`` with its columns in the order ``[T_prefill_total, T_LLM_decode]``.

    A DataFrame is matched by column names, never by position: its columns
    must be ``T_LLM_decode`` alone or ``T_prefill_total`` and ``T_LLM_decode``.
    Arrays are taken as they come.
    """
    if not isinstance(y, pd.DataFrame):
        return y
    cols = [str(c) for c in y.columns]
    if sorted(cols) == sorted([PREFILL_COL, DECODE_COL]):
        return y[[PREFILL_COL, DECODE_COL]]
    if cols == [DECODE_COL]:
        return y[DECODE_COL]
    raise ValueError(
        f"a DataFrame y must have the columns [{DECODE_COL!r}] or [{PREFILL_COL!r}, "
        f"{DECODE_COL!r}] (matched by name); got {cols}. Rename its columns, or pass "
        "a numpy array ordered [T_prefill_total, T_LLM_decode]."
    )


def check_targets(y):
    """Return ``(decode_total, prefill_or_None, y_was_2d)`` from ``y``.

    ``y`` is 1-D ``T_LLM_decode`` or two columns ``[T_prefill_total,
    T_LLM_decode]``; a DataFrame is matched by these names.
    """
    arr = as_float_array(select_targets(y), "y")
    if arr.ndim == 2 and arr.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please "
            "change the shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        arr = arr[:, 0]
    if arr.ndim == 1:
        check_finite_positive(arr, f"y ({DECODE_COL})")
        return arr, None, False
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"y must have 1 column ({DECODE_COL}) or 2 columns ({PREFILL_COL}, "
            f"{DECODE_COL}); got shape {arr.shape}."
        )
    check_finite_positive(arr[:, 0], f"y column 0 ({PREFILL_COL})")
    check_finite_positive(arr[:, 1], f"y column 1 ({DECODE_COL})")
    return arr[:, 1], arr[:, 0], True


def check_target_rows(y, n_samples):
    """:func:`check_targets` for ``y`` measured on the ``n_samples`` rows of an
    ``X``: ``(decode_total, prefill_or_None)``."""
    decode, prefill, _ = check_targets(y)
    if len(decode) != n_samples:
        raise ValueError(f"y has {len(decode)} rows but X has {n_samples} samples.")
    return decode, prefill


def report_key(value):
    """The key a quantile or a confidence is reported under (``0.9`` -> ``"0.9"``)."""
    return f"{value:g}"


def check_distinct_keys(values, name, verb):
    """Raise if two of ``values`` (quantiles, confidences) would be reported
    under one :func:`report_key`: the second would replace the first."""
    seen = {}
    for value in values:
        key = report_key(value)
        if key in seen:
            raise ValueError(
                f"{name} {seen[key]!r} and {value!r} both {verb} under the key {key!r}; "
                f"give each of the {name} once."
            )
        seen[key] = value
    return values


def n_rows(X):
    """The number of rows of an array-like or DataFrame ``X``."""
    return X.shape[0] if hasattr(X, "shape") else len(X)


def check_steps(steps, n_tokens, name):
    """One request's per-step latencies: 1-D, ``n_tokens`` of them, finite, > 0."""
    arr = as_float_array(steps, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    if len(arr) != n_tokens:
        raise ValueError(
            f"{name} has {len(arr)} steps but output_tokens is {n_tokens}; a per-step "
            "list must have one latency per output token."
        )
    _reject(
        ~np.isfinite(arr) | (arr <= 0),
        arr,
        f"{name} must hold positive finite latencies",
        lambda j: f"step {j + 1}",
    )
    return arr


def check_segment(tokens, ms, n_tokens, name):
    """One request's decode segments: ``tokens`` (integers >= 1 that sum to
    ``n_tokens``: the segments cover positions ``1..N`` in order) and ``ms``
    (positive finite times), of equal length. Returns them as int64 / float64."""
    counts = as_float_array(tokens, f"{name} tokens")
    times = as_float_array(ms, f"{name} ms")
    if counts.ndim != 1 or times.ndim != 1:
        raise ValueError(
            f"{name} must hold two 1-D lists (tokens, ms); got shapes {counts.shape} "
            f"and {times.shape}."
        )
    if len(counts) != len(times):
        raise ValueError(
            f"{name} has {len(counts)} token counts but {len(times)} times; each "
            "segment needs both."
        )
    if not len(counts):
        raise ValueError(f"{name} has no segments; use None for a request without them.")
    where = lambda j: f"segment {j + 1}"  # noqa: E731
    check_finite(counts, f"{name} tokens", where)
    _reject(counts != np.round(counts), counts, f"{name} tokens must be integers", where)
    _reject(counts < 1, counts, f"{name} tokens must be >= 1", where)
    if counts.sum() != n_tokens:
        raise ValueError(
            f"{name} tokens sum to {int(counts.sum())} but output_tokens is {n_tokens}; "
            "the segments must cover positions 1..output_tokens in order."
        )
    check_finite_positive(times, f"{name} ms", where)
    return counts.astype(np.int64), times


def check_entries(values, argument, n):
    """The per-sample entries of a list argument, checked for type and length."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(
            f"{argument} must be a list with one entry per sample; got {type(values).__name__}."
        )
    if len(values) != n:
        raise ValueError(f"{argument} has {len(values)} entries but X has {n} samples.")
    return list(values.values if isinstance(values, pd.Series) else values)


def split_output_tokens(X, column):
    """``(features, output_tokens or None)``: a DataFrame ``X``'s ``column``
    split off; any other ``X`` is all features. A DataFrame without feature
    columns is refused here: scikit-learn's validation of one fails on
    finding no column dtype, with a message that names neither X nor what
    is missing."""
    features, tokens = X, None
    if isinstance(X, pd.DataFrame) and column in X.columns:
        features, tokens = X.drop(columns=column), X[column]
    if isinstance(features, pd.DataFrame) and features.shape[1] == 0:
        besides = f" besides {column!r}" if tokens is not None else ""
        raise ValueError(
            f"X has no feature columns{besides}; give at least one (a configuration "
            "measured on its own can be a constant column)."
        )
    return features, tokens


def is_missing(entry):
    """``None`` or a scalar NaN: an absent list cell."""
    return entry is None or (np.isscalar(entry) and pd.isna(entry))


def check_decode_segments(segments, positioned, output_tokens):
    """Flatten decode segments and per-step lists into
    :class:`~sklat._requests.Segments` (CSR layout): a per-step list is a run
    of one-token segments.

    ``segments[i]`` is ``None`` or a pair ``(tokens, ms)``; ``positioned[i]``
    is ``None`` or ``output_tokens[i]`` per-step latencies. A request may have
    one or the other, not both.
    """
    n = len(output_tokens)
    steps = (
        [None] * n if positioned is None else check_entries(positioned, "positioned_latencies", n)
    )
    pairs = [None] * n if segments is None else check_entries(segments, "decode_segments", n)
    tokens, values = [], []
    lengths = np.zeros(n, dtype=np.int64)
    for i in range(n):
        step, pair = steps[i], pairs[i]
        if not is_missing(step) and not is_missing(pair):
            raise ValueError(
                f"sample {i} has both positioned_latencies and decode_segments; give one "
                "(per-step latencies are one-token segments)."
            )
        if not is_missing(step):
            arr = check_steps(step, output_tokens[i], f"positioned_latencies[{i}]")
            counts = np.ones(len(arr), dtype=np.int64)
        elif not is_missing(pair):
            if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
                raise TypeError(
                    f"decode_segments[{i}] must be None or a pair (tokens, ms); got "
                    f"{type(pair).__name__}."
                )
            counts, arr = check_segment(pair[0], pair[1], output_tokens[i], f"decode_segments[{i}]")
        else:
            continue
        lengths[i] = len(arr)
        tokens.append(counts)
        values.append(arr)
    return Segments(
        np.concatenate(values) if values else np.zeros(0),
        np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int64),
        np.concatenate(([0], np.cumsum(lengths))),
    )


# ------------------------------------------------------ the estimator's input
def check_no_text(X):
    """Raise ``ValueError`` naming the column and sample of the first entry of
    the features ``X`` (a DataFrame or an array) that is text and not a
    number: scikit-learn's own error (``could not convert string to float``)
    names neither. Text that parses as a number is left to it, as before."""
    if isinstance(X, pd.DataFrame):
        names, columns = [str(c) for c in X.columns], [X[c].to_numpy() for c in X.columns]
    elif isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind in "USO":
        names, columns = None, list(X.T)
    else:
        return
    for col, values in enumerate(columns):
        if values.dtype.kind not in "USO":  # numeric columns hold no text
            continue
        for row, value in enumerate(values):
            if isinstance(value, (str, bytes)) and not _parses(value):
                raise ValueError(
                    f"X column {feature_label(names, col)} must be numeric, not text; "
                    f"sample {row} is {value!r}."
                )


def check_finite_features(X_arr, label):
    """Raise ``ValueError`` naming the first NaN or inf of the features."""
    first = first_true(~np.isfinite(X_arr))
    if first is not None:
        row, col = first
        raise ValueError(
            f"X column {label(col)} must be finite (no NaN or inf); "
            f"sample {row} is {X_arr[row, col]}."
        )


def _check_given_once(est, output_tokens, from_column):
    """An argument and a column of output lengths: one of them would be
    silently dropped."""
    if output_tokens is not None and from_column is not None:
        raise ValueError(
            f"output_tokens was given both as an argument and as the column "
            f"{est.output_tokens_col!r} of X; give it once."
        )


def resolve_output_tokens(est, output_tokens, from_column, n):
    """The checked output lengths of a fit: the argument, else the column,
    else ``est.default_output_tokens``; given twice or not at all is an error."""
    _check_given_once(est, output_tokens, from_column)
    if output_tokens is None:
        output_tokens = from_column
    if output_tokens is None:
        if est.default_output_tokens is None:
            raise ValueError(
                "output_tokens is required to fit: pass output_tokens=... (one "
                f"integer >= 1 per sample), add a column {est.output_tokens_col!r} "
                "to the DataFrame X, or set default_output_tokens."
            )
        output_tokens = est.default_output_tokens
    return check_output_tokens(output_tokens, n)


def _known_features(est, X):
    """``X`` as float64 when it is exactly what ``fit`` saw (a DataFrame
    with the fitted columns in order, or a numeric array without names
    when fitted without names), else None. scikit-learn's validate_data
    then has nothing to check or warn about; skipping it keeps a one-row
    budget check within a small multiple of the network's own time."""
    names = getattr(est, "feature_names_in_", None)
    if not isinstance(X, (pd.DataFrame, np.ndarray)) or X.ndim != 2 or X.shape[0] < 1:
        return None  # validate_data raises the usual errors (e.g. 0 samples)
    if isinstance(X, pd.DataFrame):
        if names is None or list(X.columns) != list(names):
            return None
        try:
            return X.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            return None
    if names is None and X.shape[1] == est.n_features_in_ and X.dtype.kind in "iuf":
        return X.astype(np.float64, copy=False)
    return None


def check_features(est, X, output_tokens):
    """``X`` as the fitted estimator ``est``'s features (float64, finite) and
    ``output_tokens`` (argument, else ``est.output_tokens_col``; checked, or
    None)."""
    X_features, from_column = split_output_tokens(X, est.output_tokens_col)
    X_arr = _known_features(est, X_features)
    if X_arr is None:
        check_no_text(X_features)
        X_arr = validate_data(
            est, X_features, reset=False, dtype=np.float64, ensure_all_finite=False
        )
    check_finite_features(X_arr, feature_labeller(est))
    _check_given_once(est, output_tokens, from_column)
    if output_tokens is None:
        output_tokens = from_column
    n_tokens = None if output_tokens is None else check_output_tokens(output_tokens, len(X_arr))
    return X_arr, n_tokens


def check_measured(est, X, y, output_tokens, method):
    """Measured requests of the fitted features: ``(X, decode, prefill or
    None, output_tokens)``, all checked; ``method`` names the caller."""
    X_arr, n_tokens = check_features(est, X, output_tokens)
    if n_tokens is None:
        raise ValueError(f"{method} needs output_tokens (argument or column), one per request.")
    decode, prefill, _ = check_targets(y)
    check_consistent_length(X_arr, decode)
    if len(decode) < 2:
        raise ValueError(f"{method} needs at least 2 requests; got {len(decode)}.")
    return X_arr, decode, prefill, n_tokens


def check_one_length_source(output_tokens, distribution):
    """A known ``N`` or a distribution of it, not both."""
    if output_tokens is not None and distribution is not None:
        raise ValueError(
            "give output_tokens (N known, as argument or column) or "
            "output_tokens_distribution (N unknown), not both."
        )
