"""Output-length distributions: the fitted one and the ones callers pass."""

import numpy as np

from ._validation import check_output_tokens


def empirical_distribution(output_tokens):
    """``{"values", "probabilities"}`` of the observed output lengths."""
    values, counts = np.unique(output_tokens, return_counts=True)
    return {"values": values.astype(np.int64), "probabilities": counts / counts.sum()}


def check_distribution(dist, *, as_stored=False):
    """Accept ``{"values": ..., "probabilities": ...}`` or a sample of lengths.
    ``as_stored``: a model file's own distribution, whose probabilities are
    kept to the bit (the fitted model's predictions are reproduced)."""
    if isinstance(dist, dict):
        if set(dist) != {"values", "probabilities"}:
            raise ValueError(
                "output_tokens_distribution as a dict needs exactly the keys "
                f"'values' and 'probabilities'; got {sorted(dist)}."
            )
        values = np.asarray(dist["values"])
        values = check_output_tokens(values, len(values), "output_tokens_distribution['values']")
        probs = np.asarray(dist["probabilities"], dtype=np.float64)
        if probs.shape != values.shape:
            raise ValueError(
                "output_tokens_distribution['probabilities'] must have one entry "
                f"per value; got {probs.shape} for {values.shape} values."
            )
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise ValueError("output_tokens_distribution['probabilities'] must be finite and >= 0.")
        # np.isclose(sum, 1, rtol=1e-6), without its cost per call.
        if not abs(probs.sum() - 1.0) <= 1e-6 + 1e-8:
            raise ValueError(
                "output_tokens_distribution['probabilities'] must sum to 1; "
                f"they sum to {probs.sum()}."
            )
        # Within that tolerance the sum is a rounding of 1: divided out, so
        # that a probability computed from these weights stays within [0, 1].
        return {"values": values, "probabilities": probs if as_stored else probs / probs.sum()}
    sample = np.asarray(dist)
    if sample.ndim != 1 or sample.size == 0:
        raise ValueError(
            "output_tokens_distribution must be a dict or a non-empty 1-D sample "
            f"of output lengths; got {type(dist).__name__} of shape {sample.shape}."
        )
    return empirical_distribution(
        check_output_tokens(sample, len(sample), "output_tokens_distribution")
    )


def grouped(dist, groups):
    """``dist`` on at most ``2 * groups`` lengths (sorted, each distinct),
    for the computations whose cost grows with the support; ``dist`` itself,
    its lengths sorted and repeats merged, where ``groups`` is None or not
    below its number of distinct lengths.

    The probability is cut into ``groups`` equal windows; consecutive lengths
    that start in one window form a group, at the group's mean length
    (rounded) with the group's probability, and a length holding a window's
    probability or more stays alone. A group of several lengths then holds
    less than two windows (``2 / groups``): all its lengths but the last end
    within its window, and the last holds less than one. Each window holds
    at most two groups (a lone length ends past its window)."""
    values, probs = dist["values"], dist["probabilities"]
    if not np.all(values[1:] > values[:-1]):  # sorted and distinct: as given
        values, inverse = np.unique(values, return_inverse=True)
        probs = np.bincount(inverse, weights=probs, minlength=len(values))
    if groups is None or len(values) <= groups:
        return {"values": values, "probabilities": probs}
    start = np.concatenate([[0.0], np.cumsum(probs)[:-1]])
    # Probabilities may sum to 1 + 1e-6: the last window takes what passes 1.
    window = np.minimum(np.floor(start * groups), groups - 1)
    alone = probs >= 1.0 / groups
    new = np.empty(len(values), dtype=bool)
    new[0] = True
    np.not_equal(window[1:], window[:-1], out=new[1:])
    new[1:] |= alone[1:] | alone[:-1]
    first = np.flatnonzero(new)
    mass = np.add.reduceat(probs, first)
    mean = np.add.reduceat(probs * values, first) / mass
    return {"values": np.rint(mean).astype(np.int64), "probabilities": mass}


def survival(dist):
    """``P(N >= p)`` for ``p = 1..max(N)``."""
    pmf = np.zeros(int(dist["values"].max()) + 1)
    np.add.at(pmf, dist["values"], dist["probabilities"])
    # P(N >= p) = sum_{n >= p} P(N = n)
    return np.cumsum(pmf[::-1])[::-1][1:]


def expected_position(dist):
    """Mean position of a decoded token, ``E[N (N + 1) / 2] / E[N]``, rounded."""
    v, p = dist["values"].astype(np.float64), dist["probabilities"]
    return max(1, int(round(np.dot(p, v * (v + 1) / 2) / np.dot(p, v))))


def length_quantile(dist, q):
    """The smallest output length ``L`` with ``P(N <= L) >= q``."""
    cumulative = np.cumsum(dist["probabilities"])
    # Probabilities summing to 1 - 1e-16 must still reach q = 1 - epsilon.
    i = int(np.searchsorted(cumulative, q - 1e-12, side="left"))
    return int(dist["values"][min(i, len(cumulative) - 1)])
