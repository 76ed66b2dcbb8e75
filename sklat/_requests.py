"""Checked requests and their timed decode segments, row-selectable.

Segments (per-step measurements are one-token segments) are stored flat with
offsets (CSR layout), so ragged lists of any length cost memory proportional
to what was measured, and selecting requests is vectorised numpy indexing.
"""

import numpy as np


def ragged_gather(offsets, rows):
    """Flat indices of the segments of ``rows`` of a CSR layout, and how many
    each row owns."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    new_offsets = np.concatenate(([0], np.cumsum(lengths)))
    within = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], lengths)
    return np.repeat(starts, lengths) + within, lengths


class Segments:
    """Timed decode segments of ``n`` requests.

    Parameters
    ----------
    values : ndarray of shape (m,)
        Time of every segment, concatenated request by request.
    tokens : ndarray of shape (m,), int64
        Tokens of each segment; a request's segments cover its positions
        ``1, 2, ...`` in order.
    offsets : ndarray of shape (n + 1,), int64
        Request ``i`` owns the segments ``offsets[i]:offsets[i + 1]`` (none
        when it has only its total).
    """

    def __init__(self, values, tokens, offsets):
        self.values = values
        self.tokens = tokens
        self.offsets = offsets

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def ends(self):
        """Last position of each segment: the running token count within its request."""
        running = np.cumsum(self.tokens, dtype=np.int64)
        before = np.concatenate(([0], running))[self.offsets[:-1]]
        return running - np.repeat(before, np.diff(self.offsets))

    @property
    def owner(self):
        """The request of each segment."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))

    def gather(self, rows):
        """``(flat, lengths)``: indices of the segments of ``rows`` and their counts."""
        return ragged_gather(self.offsets, np.asarray(rows, dtype=np.int64))

    def take(self, rows):
        """The segments of the requests ``rows``, in that order."""
        flat, lengths = self.gather(rows)
        return Segments(
            self.values[flat], self.tokens[flat], np.concatenate(([0], np.cumsum(lengths)))
        )

    def scaled(self, unit):
        """Values divided by ``unit``, float32 (the net's standardised units)."""
        return Segments((self.values / unit).astype(np.float32), self.tokens, self.offsets)


class Requests:
    """Checked requests in the user's units (milliseconds, raw features).

    Parameters
    ----------
    X : ndarray of shape (n, d), float64
    decode : ndarray of shape (n,)
        Total decode latency.
    prefill : ndarray of shape (n,) or None
    output_tokens : ndarray of shape (n,), int64
    segments : Segments
    """

    def __init__(self, X, decode, prefill, output_tokens, segments):
        self.X = X
        self.decode = decode
        self.prefill = prefill
        self.output_tokens = output_tokens
        self.segments = segments

    @classmethod
    def totals(cls, X, decode, prefill, output_tokens):
        """Requests with their totals only (no timed segments)."""
        offsets = np.zeros(len(output_tokens) + 1, dtype=np.int64)
        segments = Segments(np.zeros(0), np.zeros(0, dtype=np.int64), offsets)
        return cls(X, decode, prefill, output_tokens, segments)

    def __len__(self):
        return len(self.output_tokens)

    def take(self, rows):
        """The requests ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return Requests(
            self.X[rows],
            self.decode[rows],
            None if self.prefill is None else self.prefill[rows],
            self.output_tokens[rows],
            self.segments.take(rows),
        )
