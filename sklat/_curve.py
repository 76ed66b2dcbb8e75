"""The fitted decode curve, evaluated in the user's units.

:class:`Curve` holds what a fitted model needs to predict: the trained net,
the feature transform and the training domain, the scales of its outputs and
the position basis tabulated once, so that a single budget check does not run
the position encoder. :meth:`Curve.encode` gives per configuration the
:class:`Coefficients` of its curve; positions, totals, expectations over
output lengths and maxima are then closed-form numpy on those coefficients::

    f(p) = flat + slope * (context + p / S) + shape . phi(p)
"""

import copy
import dataclasses

import numpy as np
import torch

from ._distribution import survival
from ._domain import clip, extended_range, outside, warn_outside
from ._features import check_load, context_lengths
from ._module import StackedEncoder
from ._threads import auto_threads, torch_threads
from ._validation import feature_label, first_non_finite

# Rows / positions evaluated at once: bounds the intermediate memory whatever
# the number of configurations or the length.
ROW_CHUNK = 8192
POSITION_CHUNK = 65536
# Longest position whose basis values are tabulated at construction.
BASIS_TABLE_MAX = 65536


@dataclasses.dataclass(frozen=True)
class CheckedFeatures:
    """Features that :meth:`Curve.check` accepted: the values given (``raw``,
    (n, d) float64), the same held within the extended training range
    (``clipped``, what the net sees) and the context length of each row
    (``context``, tokens, from ``clipped``). :meth:`Curve.encode` works on
    them and checks nothing again."""

    raw: np.ndarray
    clipped: np.ndarray
    context: np.ndarray


@dataclasses.dataclass(frozen=True)
class Coefficients:
    """Per configuration, the coefficients of its curve, in milliseconds.

    ``flat`` (n,), ``slope`` (n,) (per unit of ``(context_0 + p) / S``),
    ``shape`` (n, K), ``context`` (n,) (``context_0 / S``), ``prefill`` (n,)
    or None, ``z`` (n, d), the standardised features they came from, and
    ``prefill_terms`` (n, M) or None, the prefill's cost terms (its sum).
    """

    flat: np.ndarray
    slope: np.ndarray
    shape: np.ndarray
    context: np.ndarray
    prefill: np.ndarray | None
    z: np.ndarray
    prefill_terms: np.ndarray | None = None

    def __len__(self):
        return len(self.flat)

    def take(self, rows):
        """The coefficients of ``rows`` (an index array or a slice)."""
        return Coefficients(
            **{
                field.name: None
                if getattr(self, field.name) is None
                else getattr(self, field.name)[rows]
                for field in dataclasses.fields(self)
            }
        )

    def check_finite(self):
        """Raise ``ValueError`` if a coefficient overflowed (weights that
        cannot give a finite latency for some input)."""
        for key in ("flat", "slope", "shape", "prefill"):
            values = getattr(self, key)
            row = None if values is None else first_non_finite(values)
            if row is not None:
                raise ValueError(
                    f"the model's {key} latency for sample {row} is not finite: its weights "
                    "overflow for this input."
                )


class Curve:
    """A trained decode curve and prefill, with its training domain.

    Parameters
    ----------
    nets : list of skorch.NeuralNet
        The trained nets (held rather than their modules: skorch maps a
        CUDA-trained module to the CPU when unpickled where there is no CUDA).
        Several nets (the members of a cross-fitted ensemble) make one curve,
        their average: flat and context coefficients and the prefill are
        averaged, and their basis curves are concatenated (each shape weighted
        by ``1 / len(nets)``), so that every closed form below still holds.
    transform : sklat._features.FeatureTransform
        The fitted feature transform.
    feature_range : ndarray of shape (2, d)
        Training minimum and maximum of each feature.
    context_features : ndarray of int
        Features whose sum is the context length at the first decode step.
    context_scale : float
        ``S``, the unit of the context term.
    step_scale, prefill_scale : float, float or None
        Units of the module's decode and prefill outputs, in milliseconds.
    lengths : dict
        ``{"values", "probabilities"}``: the training output lengths.
    feature_names : ndarray or None
        Names of the features, for messages.
    hidden_size : int
        Width of the module's layers (sizes the thread policy's work).
    load_features : ndarray of int, default=()
        Features that measure the load.
    decode_load_features, prefill_load_features : ndarray of int, default=None
        Those of them that the decode's and the prefill's costs see (None:
        all of them).
    scales : ndarray of shape (3 + M,), default=None
        Multipliers of the flat, context and shape terms of the decode and of
        the M cost terms of the prefill, set by a recalibration (``None``:
        all 1).
    slopes : ndarray of shape (n_outputs, d), default=None
        Slopes of the log of a recalibration's multiplier on the standardised
        features, per output (decode, then prefill): a request with features
        ``z`` has its decode terms multiplied by ``exp(z @ slopes[0])`` and
        its prefill by ``exp(z @ slopes[1])`` (``None``: all 0).
    """

    def __init__(
        self,
        nets,
        *,
        transform,
        feature_range,
        context_features,
        context_scale,
        step_scale,
        prefill_scale,
        lengths,
        feature_names,
        hidden_size,
        load_features=(),
        scales=None,
        slopes=None,
        decode_load_features=None,
        prefill_load_features=None,
    ):
        self.nets = list(nets)
        self._stacked = None
        n_prefill_terms = self.nets[0].module_.n_cost_terms if prefill_scale is not None else 0
        self.scales = (
            np.ones(3 + n_prefill_terms) if scales is None else np.asarray(scales, dtype=np.float64)
        )
        self.slopes = (
            _no_slopes(prefill_scale, transform)
            if slopes is None
            else np.asarray(slopes, dtype=np.float64)
        )
        self.transform = transform
        self.feature_range = feature_range
        self.context_features = context_features
        self.load_features = np.asarray(load_features, dtype=np.int64)
        self.decode_load_features, self.prefill_load_features = (
            self.load_features if cols is None else np.asarray(cols, dtype=np.int64)
            for cols in (decode_load_features, prefill_load_features)
        )
        self.context_scale = context_scale
        self.step_scale = step_scale
        self.prefill_scale = prefill_scale
        self.lengths = lengths
        self.feature_names = feature_names
        self.hidden_size = hidden_size
        self.max_output_tokens = int(lengths["values"].max())
        self.extended_range = extended_range(feature_range, transform.log_mask, transform.log_shift)
        self.basis_table = self._run_basis(
            np.arange(1, min(self.max_output_tokens, BASIS_TABLE_MAX) + 1)
        )
        self.cumulative_table = np.cumsum(self.basis_table, axis=0)

    def rescaled(self, scales, slopes):
        """This curve with the recalibration multipliers ``scales`` and slopes
        ``slopes`` (the nets and the tables shared)."""
        other = copy.copy(self)
        other.scales = np.asarray(scales, dtype=np.float64)
        other.slopes = np.asarray(slopes, dtype=np.float64)
        return other

    def member(self, k):
        """The curve of the ensemble's member ``k`` alone (tables shared)."""
        other = copy.copy(self)
        other.nets = [self.nets[k]]
        other._stacked = None
        n_basis = self.basis_table.shape[1] // len(self.nets)
        columns = slice(k * n_basis, (k + 1) * n_basis)
        other.basis_table = self.basis_table[:, columns]
        other.cumulative_table = self.cumulative_table[:, columns]
        return other

    def label(self, col):
        """Feature ``col`` as messages name it."""
        return feature_label(self.feature_names, col)

    def _modules(self):
        """``(module, device)`` of each net. ``net.device`` follows the
        weights, also after unpickling a CUDA-trained net on a CPU-only
        machine (skorch maps it to "cpu")."""
        return [(net.module_, torch.device(net.device)) for net in self.nets]

    # ------------------------------------------------------------ encoding
    def check(self, X_arr):
        """:class:`CheckedFeatures` of finite float64 features ``X_arr`` (at
        least one row): raises ``ValueError`` for a value a log-scaled column
        cannot take or a negative context length, naming the sample. Features
        beyond their extended training range are held at its edge, so that
        every output is finite."""
        self.transform.check(X_arr, self.label, strict=False)
        context_lengths(X_arr, self.context_features, self.label)
        check_load(X_arr, self.load_features, self.label, self.feature_names)
        clipped = clip(X_arr, self.extended_range)
        # The raw values passed the context check and clipping only raises
        # a value to the range's lower edge, so this sum is of valid counts.
        context = (
            clipped[:, self.context_features].sum(axis=1)
            if len(self.context_features)
            else np.zeros(len(clipped))
        )
        return CheckedFeatures(raw=X_arr, clipped=clipped, context=context)

    def encode(self, X_arr, *, n_threads="auto", warn=True, scaled=True):
        """:class:`Coefficients` of finite float64 features ``X_arr``, checked
        once (:meth:`check`) and then only read in their checked form.
        ``warn``: an ExtrapolationWarning for features beyond the training
        range. ``scaled=False``: without the recalibration's multipliers and
        slopes."""
        features = self.check(X_arr)
        if warn:
            warn_outside(features.raw, self.feature_range, self.extended_range, self.label)
        z = self.transform.transform(features.clipped, self.label, checked=True)
        context = features.context
        with torch_threads(auto_threads(n_threads, len(z) * self.hidden_size**2 * 4)):
            raw = self._run_encoder(z)
        scales = self.scales if scaled else np.ones_like(self.scales)
        # Per request: the recalibration's multiplier of each output.
        rows = np.exp(z @ self.slopes.T) if scaled else np.ones((len(z), len(self.slopes)))
        flat, slope, shape = scales[:3, None] * rows[:, 0]
        prefill, prefill_terms = None, None
        if raw["prefill"] is not None:
            prefill_terms = self.prefill_scale * raw["prefill_terms"]
            prefill = rows[:, 1] * (
                self.prefill_scale * raw["prefill"]
                if (scales[3:] == 1).all()
                else prefill_terms @ scales[3:]
            )
        coef = Coefficients(
            flat=flat * self.step_scale * raw["flat"],
            slope=slope * self.step_scale * raw["slope"],
            shape=shape[:, None] * self.step_scale * raw["shape"].reshape(len(z), -1),
            context=context / self.context_scale,
            prefill=prefill,
            z=z,
            prefill_terms=prefill_terms,
        )
        coef.check_finite()
        return coef

    def _run_encoder(self, z):
        """The members' coefficients in module units, averaged (shapes
        concatenated and divided by the number of members)."""
        if len(self.nets) == 1:
            module, device = self._modules()[0]
            return _encoded(module.encode, device, z)
        members = _encoded(self._stacked_encoder().encode, self._modules()[0][1], z, row_dim=1)
        k = len(self.nets)
        out = {}
        for key in ("flat", "slope", "prefill", "prefill_terms"):
            out[key] = None if members[key] is None else members[key].mean(axis=0)
        # (K, n, B) -> (n, K * B): member k's basis weights in block k.
        shape = members["shape"]
        out["shape"] = shape.transpose(1, 0, 2).reshape(shape.shape[1], -1) / k
        return out

    def _stacked_encoder(self):
        # Built once per curve (the weights do not change after training),
        # not pickled (see __getstate__).
        if self._stacked is None:
            self._stacked = StackedEncoder([module for module, _ in self._modules()])
        return self._stacked

    def __getstate__(self):
        state = dict(vars(self))
        state["_stacked"] = None
        return state

    def __setstate__(self, state):
        if "net" in state:  # pickled by 0.7: one net
            state["nets"] = [state.pop("net")]
        state.setdefault("_stacked", None)
        if "slopes" not in state:  # pickled before 0.10: no slopes
            state["slopes"] = _no_slopes(state["prefill_scale"], state["transform"])
        state.setdefault("load_features", np.zeros(0, dtype=np.int64))  # before 0.15
        # Before 0.18 both heads saw every load feature.
        state.setdefault("decode_load_features", state["load_features"])
        state.setdefault("prefill_load_features", state["load_features"])
        vars(self).update(state)

    def inside(self, X_arr):
        """(n,) bool: every feature within its training range."""
        return ~outside(X_arr, self.feature_range).any(axis=1)

    # ------------------------------------------------------------ positions
    def _run_basis(self, positions):
        """The members' position encoders on ``positions``, a chunk at a time,
        their basis curves side by side."""
        parts = []
        with torch.no_grad():
            for start in range(0, len(positions), POSITION_CHUNK):
                chunk = torch.from_numpy(positions[start : start + POSITION_CHUNK])
                parts.append(
                    np.concatenate(
                        [
                            module.basis(chunk.to(device)).double().cpu().numpy()
                            for module, device in self._modules()
                        ],
                        axis=1,
                    )
                )
        return np.concatenate(parts, axis=0)

    def basis(self, positions):
        """Basis curves at ``positions`` (int array), float64 of shape (P, K);
        constant past the longest training request."""
        positions = np.minimum(positions, self.max_output_tokens)
        table = self.basis_table
        if positions.max() <= len(table):
            return table[positions - 1]
        out = np.empty((len(positions), table.shape[1]))
        known = positions <= len(table)
        out[known] = table[positions[known] - 1]
        out[~known] = self._run_basis(positions[~known])
        return out

    def at(self, coef, positions):
        """Per-token latency (n, P) at ``positions`` (int array)."""
        phi = self.basis(positions)
        growth = positions / self.context_scale
        n = len(coef)
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

    def max_over(self, coef, last):
        """Maximum of each row's curve over positions ``1..last``, a block of
        rows at a time (no (n, last) matrix)."""
        positions = np.arange(1, last + 1)
        out = np.empty(len(coef))
        step = max(1, ROW_CHUNK * 64 // last)
        for start in range(0, len(out), step):
            rows = slice(start, start + step)
            out[rows] = self.at(coef.take(rows), positions).max(axis=1)
        return out

    # --------------------------------------------------------------- totals
    def _terms(self, coef, n, triangle, shape_sums):
        """The flat, context and shape terms of a sum of the curve over
        positions: ``n`` positions whose sum is ``triangle``, the basis summed
        over them giving ``shape_sums`` (already contracted with ``coef.shape``)."""
        return (
            coef.flat * n,
            coef.slope * (coef.context * n + triangle / self.context_scale),
            shape_sums,
        )

    def _summed(self, coef, n, triangle, shape_sums):
        """The closed form of a sum of the curve over positions (see :meth:`_terms`)."""
        flat, context, shape = self._terms(coef, n, triangle, shape_sums)
        return flat + context + shape

    def _cumulative_at(self, lengths):
        """Sums of the basis over ``1..N`` for each ``N`` of ``lengths``: (J, K).
        Past the longest training request the basis is constant (positions
        are held there), so a sum past the table is its last entry plus a
        multiple of the last basis row: no work per position."""
        table = self.cumulative_table
        if lengths.max() <= len(table):
            return table[lengths - 1]
        if len(table) < self.max_output_tokens:
            # The table stops short of the constant part (BASIS_TABLE_MAX).
            return np.cumsum(self.basis(np.arange(1, lengths.max() + 1)), axis=0)[lengths - 1]
        past = np.maximum(lengths - len(table), 0).astype(np.float64)
        return table[np.minimum(lengths, len(table)) - 1] + past[:, None] * self.basis_table[-1]

    def _over_lengths(self, coef, output_tokens):
        """``(n, triangle, shape_sums)`` of each row's sum over ``1..N``."""
        cumulative = self._cumulative_at(output_tokens)
        n = output_tokens.astype(np.float64)
        return n, n * (n + 1) / 2, np.einsum("ik,ik->i", coef.shape, cumulative)

    def total(self, coef, output_tokens):
        """``sum_{p<=N} f(p)`` per row (exact sums of the basis over ``1..N``,
        shared by all rows)."""
        return self._summed(coef, *self._over_lengths(coef, output_tokens))

    def total_terms(self, coef, output_tokens):
        """(n, 3): the flat, context and shape terms of each row's total, which
        :meth:`total` adds up."""
        return np.column_stack(self._terms(coef, *self._over_lengths(coef, output_tokens)))

    def totals_at(self, coef, lengths):
        """``sum_{p<=N} f(p)`` for every row and every ``N`` in ``lengths``: (n, J),
        one matrix product: the closed form of :meth:`_terms` is linear in
        ``(N, N (N + 1) / 2, Phi[N])`` with per-row coefficients
        ``(flat + slope context, slope / S, shape)``."""
        n = lengths.astype(np.float64)
        per_length = np.column_stack([n, n * (n + 1) / 2, self._cumulative_at(lengths)])
        per_row = np.column_stack(
            [coef.flat + coef.slope * coef.context, coef.slope / self.context_scale, coef.shape]
        )
        return per_row @ per_length.T

    def expected_total(self, coef, dist):
        """Total decode latency with ``N`` drawn from ``dist``: ``sum_p f(p) P(N >= p)``."""
        surv = survival(dist)
        values = dist["values"].astype(np.float64)
        mean_n = float(np.dot(dist["probabilities"], values))
        mean_triangle = float(np.dot(dist["probabilities"], values * (values + 1) / 2))
        basis_sum = self.basis(np.arange(1, len(surv) + 1)).T @ surv
        return self._summed(coef, mean_n, mean_triangle, coef.shape @ basis_sum)


def _no_slopes(prefill_scale, transform):
    """The recalibration slopes of a curve that has none: 0 per output (the
    decode, and the prefill where there is one) and feature."""
    n_outputs = 1 if prefill_scale is None else 2
    return np.zeros((n_outputs, len(transform.mean)))


def _encoded(encode, device, z, row_dim=0):
    """``encode`` (a module's, or a stacked encoder's, whose outputs have
    their rows in dimension ``row_dim=1``) of standardised features ``z``,
    float64 numpy, a chunk of rows at a time."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(z), ROW_CHUNK):
            parts.append(encode(torch.from_numpy(z[start : start + ROW_CHUNK]).to(device)))
    return {
        key: None
        if parts[0][key] is None
        else torch.cat([p[key] for p in parts], dim=row_dim).double().cpu().numpy()
        for key in ("flat", "slope", "shape", "prefill", "prefill_terms")
    }
