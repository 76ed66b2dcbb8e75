"""The fitted decode curve evaluated in the user's units.

The torch module gives, per configuration, the coefficients of its curve
(:func:`encode`); positions, totals and expectations over output lengths are
then closed-form numpy on those coefficients and on the position basis, which
is tabulated once at fit time (:func:`tabulate_basis`) so that a single
budget check does not run the position encoder.
"""

import numpy as np
import torch
from sklearn.utils import Bunch

from ._distribution import survival

# Rows / positions evaluated at once: bounds the intermediate memory whatever
# the number of configurations or the length.
ROW_CHUNK = 8192
POSITION_CHUNK = 65536
# Longest position whose basis values are tabulated at fit time.
BASIS_TABLE_MAX = 65536


def module_and_device(est):
    # net_.device follows the weights, also after unpickling a CUDA-trained
    # net on a CPU-only machine (skorch maps it to "cpu").
    return est.net_.module_, torch.device(est.net_.device)


def encode(est, x, context):
    """The decode curve's coefficients for standardised features ``x`` (at
    least one row: the estimator's input checks refuse empty input).

    Returns a Bunch in milliseconds: ``flat`` (n,), ``slope`` (n,) (per unit of
    ``(context_0 + p) / S``), ``shape`` (n, K), ``context`` (n,)
    (``context_0 / S``) and ``prefill`` (n,) or None.
    """
    module, device = module_and_device(est)
    n = len(x)
    parts = []
    with torch.no_grad():
        for start in range(0, n, ROW_CHUNK):
            chunk = torch.from_numpy(x[start : start + ROW_CHUNK]).to(device)
            parts.append(module.encode(chunk))
    coef = {
        key: torch.cat([p[key] for p in parts]).double().cpu().numpy()
        for key in ("flat", "slope", "shape", "prefill")
        if parts[0][key] is not None
    }
    step = est.step_scale_
    return Bunch(
        flat=step * coef["flat"],
        slope=step * coef["slope"],
        shape=step * coef["shape"].reshape(n, module.n_basis),
        context=context / est.context_scale_,
        prefill=(est.prefill_scale_ * coef["prefill"] if "prefill" in coef else None),
    )


def tabulate_basis(est):
    """The basis curves at positions ``1..min(max_output_tokens_, BASIS_TABLE_MAX)``."""
    n = min(est.max_output_tokens_, BASIS_TABLE_MAX)
    return run_basis(est, np.arange(1, n + 1))


def run_basis(est, positions):
    """The position encoder on ``positions``, a chunk at a time."""
    module, device = module_and_device(est)
    parts = []
    with torch.no_grad():
        for start in range(0, len(positions), POSITION_CHUNK):
            chunk = torch.from_numpy(positions[start : start + POSITION_CHUNK])
            parts.append(module.basis(chunk.to(device)).double().cpu().numpy())
    return np.concatenate(parts, axis=0)


def basis(est, positions):
    """Basis curves at ``positions`` (int array), float64 of shape (P, K);
    constant past the longest training request."""
    positions = np.minimum(positions, est.max_output_tokens_)
    table = est.position_basis_
    if positions.max() <= len(table):
        return table[positions - 1]
    out = np.empty((len(positions), table.shape[1]))
    known = positions <= len(table)
    out[known] = table[positions[known] - 1]
    out[~known] = run_basis(est, positions[~known])
    return out


def curve(est, coef, positions):
    """Per-token latency (n, P) at ``positions`` (int array)."""
    phi = basis(est, positions)
    growth = positions / est.context_scale_
    n = len(coef.flat)
    out = np.empty((n, len(phi)))
    # Written in place, a chunk of rows at a time: no temporary of the
    # output's size, however many rows and positions.
    for start in range(0, n, ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        chunk = out[rows]
        np.matmul(coef.shape[rows], phi.T, out=chunk)
        chunk += (coef.flat[rows] + coef.slope[rows] * coef.context[rows])[:, None]
        chunk += coef.slope[rows, None] * growth[None, :]
    return out


def total(est, coef, output_tokens):
    """``sum_{p<=N} f(p)`` per row, in closed form (exact sums of the basis
    over ``1..N``, shared by all rows)."""
    cumulative = np.cumsum(basis(est, np.arange(1, output_tokens.max() + 1)), axis=0)
    n = output_tokens.astype(np.float64)
    return (
        coef.flat * n
        + coef.slope * (coef.context * n + n * (n + 1) / (2 * est.context_scale_))
        + np.einsum("ik,ik->i", coef.shape, cumulative[output_tokens - 1])
    )


def expected_total(est, coef, dist):
    """Total decode latency with ``N`` drawn from ``dist``: ``sum_p f(p) P(N >= p)``."""
    surv = survival(dist)
    values = dist["values"].astype(np.float64)
    mean_n = float(np.dot(dist["probabilities"], values))
    mean_triangle = float(np.dot(dist["probabilities"], values * (values + 1) / 2))
    basis_sum = basis(est, np.arange(1, len(surv) + 1)).T @ surv
    return (
        coef.flat * mean_n
        + coef.slope * (coef.context * mean_n + mean_triangle / est.context_scale_)
        + coef.shape @ basis_sum
    )


def totals_at(est, coef, lengths):
    """``sum_{p<=N} f(p)`` for every row and every ``N`` in ``lengths``: (n, J)."""
    cumulative = np.cumsum(basis(est, np.arange(1, lengths.max() + 1)), axis=0)[lengths - 1]
    n = lengths.astype(np.float64)[None, :]
    return (
        coef.flat[:, None] * n
        + coef.slope[:, None] * (coef.context[:, None] * n + n * (n + 1) / (2 * est.context_scale_))
        + coef.shape @ cumulative.T
    )


def max_curve(est, coef, last):
    """Maximum of each row's curve over positions ``1..last``, a block of rows
    at a time (no (n, last) matrix)."""
    positions = np.arange(1, last + 1)
    out = np.empty(len(coef.flat))
    step = max(1, ROW_CHUNK * 64 // last)
    for start in range(0, len(out), step):
        rows = slice(start, start + step)
        part = {k: v[rows] for k, v in coef.items() if k in ("flat", "slope", "shape", "context")}
        out[rows] = curve(est, Bunch(**part), positions).max(axis=1)
    return out


def check_finite(coef):
    """Raise ``ValueError`` if a coefficient overflowed (a model whose weights
    cannot give a finite latency for some input)."""
    for key in ("flat", "slope", "shape", "prefill"):
        row = None if coef[key] is None else first_non_finite(coef[key])
        if row is not None:
            raise ValueError(
                f"the model's {key} latency for sample {row} is not finite: its weights "
                "overflow for this input."
            )


def first_non_finite(values):
    """The first row of ``values`` holding NaN or inf, or None."""
    bad = ~np.isfinite(values)
    return int(np.argwhere(bad)[0][0]) if bad.any() else None
