"""The torch module behind :class:`sklat.LatencyEstimator`.

The decode latency of configuration ``c`` at position ``p`` is a sum of positive
cost terms, the way a decode step's time is (weights read, KV cache read,
start-up effects)::

    f(c, p) = A(c)                          flat cost per step
            + B(c) * (context_0(c) + p) / S  cost growing with the running context
            + sum_k h_k(c) * phi_k(p)        learnt shape (start-up, saturation)

``A`` and ``B`` are each a sum of ``n_cost_terms`` positive power laws of the
features, ``exp(theta_m . z(c))`` with ``z`` the standardised (log-)features, so
that costs such as ``layers x experts + layers`` or ``layers x context`` are
expressed exactly; ``h`` is a positive scale times softmax mixture weights of
``K`` positive basis curves ``phi_k`` that a position encoder learns. Every
per-configuration quantity is a linear map of ``z`` plus an MLP correction
(regularised separately), computed once per request; the basis curves once per
distinct position, held constant past the longest training request so that
only the physical context term extrapolates. The context features reach the
decode curve only through ``context_0 + p`` (and the linear map of the shape's
mixture weights). The prefill is a sum of ``n_cost_terms`` power laws as well.

Load features (the requests in flight beside this one, a KV-cache usage) shape
the costs the way a shared batch does: a step's time grows with the batch's
work, and the time to first token with the queue ahead of it. They enter only
the exponents of the power laws (flat, context, shape scale, prefill), with
non-negative weights, and neither MLP nor the shape's mixture: every cost is a
sum of terms ``a(c) * load^b`` with ``b >= 0``, smooth and non-decreasing in the
load, and a sum of such terms (a constant and a linear one, a concave and a
convex one) keeps its trend past the largest trained load. A load measured over
the decode (the requests in flight beside it) may reach the decode's costs only,
and one measured when the request was sent (the requests still waiting for their
first token, the queue its prefill joins) the prefill only.

The totals need no per-(sample, position) work::

    sum_{p<=N} f(c, p) = A N + B (context_0 N + N (N + 1) / 2) / S + h . Phi[N]

with ``Phi`` the cumulative sum of the basis table, so a batch costs
``O(B + max(N))``.

Everything here works in standardised units (latencies divided by scales fitted
on the training data, context lengths divided by ``S``); :mod:`sklat._estimator`
converts to the user's units.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

# softplus(_UNIT_BIAS) == 1: the basis curves start flat at one.
_UNIT_BIAS = math.log(math.expm1(1.0))
# Share of the initial (flat, per-token average) latency given to each part; the
# context term starts small (at a context of S).
_INITIAL_SHARES = {"flat": 0.6, "context": 0.05, "shape": 0.35}
# Standard deviation of the initial exponents of the power laws: small, but not
# zero, so that the terms of one sum do not move in lockstep.
_EXPONENT_INIT_STD = 0.1


def _mlp(n_in, hidden_size, n_out):
    return nn.Sequential(
        nn.Linear(n_in, hidden_size),
        nn.GELU(),
        nn.Linear(hidden_size, hidden_size),
        nn.GELU(),
        nn.Linear(hidden_size, n_out),
    )


class CostTermsLatencyModule(nn.Module):
    """Config encoder, position encoder, decode and prefill heads.

    Parameters
    ----------
    n_features : int
        Number of (standardised) configuration features.
    hidden_size : int
        Width of the hidden layers of both encoders.
    n_basis : int
        Number of position basis curves ``K``.
    n_cost_terms : int
        Power laws summed in the flat cost, the context cost and the prefill.
    with_prefill : bool
        Whether to build the prefill head.
    position_scale : float
        The longest training request. Positions are encoded as
        ``log1p(min(p, position_scale)) / log1p(position_scale)``.
    context_scale : float
        ``S``: context lengths (in tokens) are divided by it.
    context_features : sequence of int
        Feature columns whose sum is the context at the first decode step.
    load_features : sequence of int
        Feature columns that measure the load (see the module's description);
        disjoint from ``context_features``.
    decode_load_features, prefill_load_features : sequence of int or None
        The load features that reach the decode curve's costs and the
        prefill's (``None``: all of them). A load is measured over a stretch
        of the request (the requests in flight over its decode, or at its
        sending, before the prefill): each head sees the loads of its own
        stretch, and a load feature that reaches neither head is ignored.
    initial_fit : dict, optional
        ``{"decode": (coef, intercept), "prefill": (coef, intercept) or None}``:
        linear fits of the log per-token latency and of the log prefill on the
        features, where the power laws start (instead of a flat average).
    """

    def __init__(
        self,
        n_features,
        hidden_size=64,
        n_basis=8,
        n_cost_terms=3,
        with_prefill=True,
        position_scale=1024.0,
        context_scale=1024.0,
        context_features=(),
        load_features=(),
        initial_fit=None,
        decode_load_features=None,
        prefill_load_features=None,
    ):
        super().__init__()
        self.n_basis = n_basis
        self.n_cost_terms = n_cost_terms
        self.with_prefill = with_prefill
        self.register_buffer(
            "position_scale", torch.tensor(float(position_scale), dtype=torch.float32)
        )
        self.register_buffer(
            "context_scale", torch.tensor(float(context_scale), dtype=torch.float32)
        )
        m = n_cost_terms
        # Output layout of the config encoder: flat terms, context terms (none
        # without context features: the curve then has no term that grows past
        # the trained lengths), log shape scale, K mixture logits, prefill terms.
        widths = {
            "flat": m,
            "context": m if len(context_features) else 0,
            "shape": 1,
            "mixture": n_basis,
            "prefill": m if with_prefill else 0,
        }
        self._slices, start = {}, 0
        for part, width in widths.items():
            self._slices[part] = slice(start, start + width)
            start += width
        n_decode = self._slices["prefill"].start
        n_in = max(n_features, 1)
        self.config_linear = nn.Linear(n_in, start)
        # MLP corrections, regularised separately (LatencyEstimator's
        # config_mlp_weight_decay): one for the decode curve, one for the prefill.
        self.decode_mlp = _mlp(n_in, hidden_size, n_decode)
        self.prefill_mlp = _mlp(n_in, hidden_size, m) if with_prefill else None
        # The context features reach the decode curve only through the running
        # context ``context_0 + p`` of the context term (and the linear map of the
        # shape's mixture weights): the flat cost does not grow with the prompt,
        # and the KV read per cached token does not grow with the context itself.
        # Without this the slope of the context term is not identified from the
        # totals, and the curve past the trained lengths follows no physics.
        linear_mask = torch.ones_like(self.config_linear.weight)
        decode_input = torch.ones(n_in)
        for col in context_features:
            for part in ("flat", "context", "shape"):
                linear_mask[self._slices[part], col] = 0.0
            decode_input[col] = 0.0
        # Load features: out of both MLPs and the mixture weights, and with
        # weights >= 0 in the exponents of every cost (see the module's
        # description). These two masks follow from load_features, which a
        # model file stores, so they are not saved with the weights (files
        # written before load features load unchanged).
        prefill_input = torch.ones(n_in)
        nonnegative = torch.zeros_like(linear_mask, dtype=torch.bool)
        reaches = load_reach(load_features, decode_load_features, prefill_load_features)
        for col, parts in reaches.items():
            linear_mask[self._slices["mixture"], col] = 0.0
            for part in ("flat", "context", "shape", "prefill"):
                if part not in parts:
                    linear_mask[self._slices[part], col] = 0.0
            # The first term of the flat cost and of the prefill is the idle
            # cost (the weights read per step, the prompt's own prefill): it
            # does not see the load, so that the others add to it.
            if n_cost_terms > 1:
                for part in ("flat", "prefill"):
                    rows = self._slices[part]
                    if rows.stop > rows.start:  # no prefill terms without a prefill head
                        linear_mask[rows.start, col] = 0.0
            for part in parts:
                nonnegative[self._slices[part], col] = True
            decode_input[col] = 0.0
            prefill_input[col] = 0.0
        self.register_buffer("linear_mask", linear_mask)
        self.register_buffer("decode_input_mask", decode_input)
        self.register_buffer("prefill_input_mask", prefill_input, persistent=False)
        self.register_buffer("nonnegative_mask", nonnegative, persistent=False)
        self.position_encoder = _mlp(1, hidden_size, n_basis)
        self._initialise(initial_fit, reaches)

    def __setstate__(self, state):
        super().__setstate__(state)
        # Modules pickled by 0.14 and earlier: no load features.
        if "nonnegative_mask" not in self._buffers:
            weight = self.linear_mask
            self.register_buffer(
                "prefill_input_mask", torch.ones(weight.shape[1]), persistent=False
            )
            self.register_buffer(
                "nonnegative_mask", torch.zeros_like(weight, dtype=torch.bool), persistent=False
            )

    def _initialise(self, initial_fit, reaches):
        # Start from a flat curve at the per-token average (1 in standardised
        # units) and the median prefill, or, with ``initial_fit``, at the
        # closed-form log-linear fit of each configuration's per-token average and
        # prefill: the data has to earn every other departure from it.
        for mlp in (self.decode_mlp, self.prefill_mlp):
            if mlp is not None:
                nn.init.zeros_(mlp[-1].weight)
                nn.init.zeros_(mlp[-1].bias)
        with torch.no_grad():
            weight, bias = self.config_linear.weight, self.config_linear.bias
            weight.normal_(0.0, _EXPONENT_INIT_STD)
            weight[self._slices["shape"]] = 0.0
            weight[self._slices["mixture"]] = 0.0
            m = self.n_cost_terms
            has_context = self._slices["context"].stop > self._slices["context"].start
            # Without a context term its share goes to the flat cost.
            flat_share = _INITIAL_SHARES["flat"] + (
                0.0 if has_context else _INITIAL_SHARES["context"]
            )
            bias[self._slices["flat"]] = math.log(flat_share / m)
            bias[self._slices["context"]] = math.log(_INITIAL_SHARES["context"] / m)
            bias[self._slices["shape"]] = math.log(_INITIAL_SHARES["shape"])
            bias[self._slices["mixture"]] = 0.0
            bias[self._slices["prefill"]] = math.log(1.0 / m)
            for part, key in (
                ("flat", "decode"),
                ("context", "decode"),
                ("shape", "decode"),
                ("prefill", "prefill"),
            ):
                if initial_fit is None or initial_fit.get(key) is None:
                    continue
                coef, intercept = initial_fit[key]
                rows = self._slices[part]
                if len(coef) == weight.shape[1]:
                    weight[rows] += torch.as_tensor(coef, dtype=weight.dtype)
                    if part in ("flat", "prefill"):
                        loads = [col for col, parts in reaches.items() if part in parts]
                        _spread_load(weight, rows, coef, loads)
                bias[rows] += float(intercept)
        last_position = self.position_encoder[-1]
        nn.init.constant_(last_position.bias, _UNIT_BIAS)
        # Symmetry breaking between basis curves comes from small random
        # output weights rather than exactly zero ones.
        with torch.no_grad():
            last_position.weight.normal_(0.0, 1e-2)

    def encode(self, x):
        """Per-sample coefficients of the decode curve, and the prefill.

        Returns
        -------
        dict with ``flat`` (B,), ``slope`` (B,) (the context cost per unit of
        ``(context_0 + p) / S``), ``shape`` (B, K) and ``prefill`` (B,) or None.
        """
        x = _at_least_one_column(x)
        out = F.linear(x, self.linear_weight(), self.config_linear.bias)
        correction = [self.decode_mlp(x * self.decode_input_mask)]
        if self.prefill_mlp is not None:
            correction.append(self.prefill_mlp(x * self.prefill_input_mask))
        return self.heads(out + torch.cat(correction, dim=1))

    def linear_weight(self):
        """The config encoder's linear map as it is applied: masked, and with
        the load features' weights taken as their absolute values."""
        weight = self.config_linear.weight * self.linear_mask
        return torch.where(self.nonnegative_mask, weight.abs(), weight)

    def heads(self, out):
        """The coefficients of :meth:`encode` from the config encoder's raw
        outputs ``out`` (..., n_outputs): any leading dimensions."""
        s = self._slices
        shape = torch.exp(out[..., s["shape"]]) * torch.softmax(out[..., s["mixture"]], dim=-1)
        prefill_terms = torch.exp(out[..., s["prefill"]]) if self.with_prefill else None
        prefill = prefill_terms.sum(dim=-1) if self.with_prefill else None
        return {
            "flat": torch.exp(out[..., s["flat"]]).sum(dim=-1),
            "slope": torch.exp(out[..., s["context"]]).sum(dim=-1),
            "shape": shape,
            "prefill": prefill,
            "prefill_terms": prefill_terms,
        }

    def basis(self, positions):
        """Positive basis curves ``phi`` at ``positions`` (1-D), shape (P, K)."""
        p = positions.to(self.position_scale.dtype)
        p = torch.minimum(p, self.position_scale)
        u = (torch.log1p(p) / torch.log1p(self.position_scale)).unsqueeze(1)
        return F.softplus(self.position_encoder(u))

    def forward(
        self,
        x,
        output_tokens,
        context=None,
        segment_sample=None,
        segment_start=None,
        segment_end=None,
    ):
        """Summed decode totals, prefill and (optionally) decode segment sums.

        Parameters
        ----------
        x : Tensor of shape (B, n_features)
        output_tokens : LongTensor of shape (B,)
            ``N`` of each request (>= 1).
        context : Tensor of shape (B,), optional
            ``context_0 / S`` of each request; zeros when omitted.
        segment_sample, segment_start, segment_end : LongTensor of shape (M,), optional
            Batch row, first and last position (``1 <= start <= end <= N``) of
            each timed decode segment; a per-step measurement is a segment of
            one position.

        Returns
        -------
        dict with ``total`` (B,), ``prefill`` (B,) or None, ``segments`` (M,)
        (the predicted sum over each segment's positions) or None.
        """
        coef = self.encode(x)
        if context is None:
            context = x.new_zeros(x.shape[0])
        max_n = int(output_tokens.max())
        phi = self.basis(torch.arange(1, max_n + 1, device=x.device))
        cumulative = torch.cumsum(phi, dim=0)
        n = output_tokens.to(x.dtype)
        context_sum = context * n + n * (n + 1) / (2 * self.context_scale.to(x.dtype))
        total = (
            coef["flat"] * n
            + coef["slope"] * context_sum
            + (coef["shape"] * cumulative[output_tokens - 1]).sum(dim=1)
        )
        segments = None
        if segment_sample is not None and segment_sample.numel() > 0:
            segments = self._segment_sums(
                coef, context, phi, segment_sample, segment_start, segment_end
            )
        return {"total": total, "prefill": coef["prefill"], "segments": segments}

    def _segment_sums(self, coef, context, phi, sample, start, end):
        """``sum_{p=start..end} f(c, p)`` per segment, in closed form: the
        work is per segment, whatever its number of positions."""
        dtype = phi.dtype
        # Differences of cumulative sums in float64: a one-step segment late in
        # a long request is a small difference of two large sums. The leading
        # zero row makes cumulative[n] the sum over positions 1..n.
        cumulative = torch.cumsum(phi.to(torch.float64), dim=0)
        cumulative = torch.cat([cumulative.new_zeros((1, phi.shape[1])), cumulative])
        basis_sum = (cumulative[end] - cumulative[start - 1]).to(dtype)
        a, b = start.to(dtype), end.to(dtype)
        k = b - a + 1
        # sum_{p=a..b} (context_0 + p / S) = k context_0 + k (a + b) / (2 S)
        context_sum = k * context[sample] + k * (a + b) / (2 * self.context_scale.to(dtype))
        shape = (coef["shape"][sample] * basis_sum).sum(dim=1)
        return coef["flat"][sample] * k + coef["slope"][sample] * context_sum + shape


def _spread_load(weight, rows, coef, load_features):
    """Start term ``k`` of the ``m`` terms of a cost at ``2k / (m - 1)``
    times the fitted load exponent: an idle term, one that grows as the
    fit does and one that grows twice as fast, so that the sum can bend
    either way (a batch's step time is concave in the load where the
    weights read dominates, a queue's wait convex) rather than moving as
    one power law."""
    m = rows.stop - rows.start
    if m < 2:
        return
    for k in range(m):
        for col in load_features:
            weight[rows.start + k, col] = max(float(coef[col]), 0.0) * 2 * k / (m - 1)


def load_reach(load_features, decode_load_features, prefill_load_features):
    """``{column: parts}``: the costs each load feature reaches, the decode's
    (flat, context, shape) where it is a decode load and the prefill where it
    is a prefill load (``None``: every load feature is)."""
    decode = load_features if decode_load_features is None else decode_load_features
    prefill = load_features if prefill_load_features is None else prefill_load_features
    decode, prefill = {int(c) for c in decode}, {int(c) for c in prefill}
    return {
        int(col): ("flat", "context", "shape") * (int(col) in decode)
        + ("prefill",) * (int(col) in prefill)
        for col in load_features
    }


def _at_least_one_column(x):
    # Without features the encoders read one constant zero input.
    return x.new_zeros((x.shape[0], 1)) if x.shape[1] == 0 else x


class StackedEncoder:
    """The config encoders of several modules of one architecture (the nets
    of a cross-fitted ensemble), evaluated in one pass: each layer is one
    batched matrix product over the modules instead of one product per
    module, so a small call costs about what one module's does.

    Parameters
    ----------
    modules : list of CostTermsLatencyModule
        Modules built with the same arguments (their masks are equal).
    """

    def __init__(self, modules):
        self.head = modules[0]
        with torch.no_grad():
            self.linear = (
                torch.stack([m.linear_weight() for m in modules]),
                torch.stack([m.config_linear.bias for m in modules]),
            )
            self.decode_mlp = _stacked_layers([m.decode_mlp for m in modules])
            self.prefill_mlp = (
                None
                if modules[0].prefill_mlp is None
                else _stacked_layers([m.prefill_mlp for m in modules])
            )

    def encode(self, x):
        """:meth:`CostTermsLatencyModule.encode` of every module: the same
        keys, each with a leading dimension over the modules."""
        x = _at_least_one_column(x)
        with torch.no_grad():
            out = _linear(x, *self.linear)
            correction = [_run_layers(self.decode_mlp, x * self.head.decode_input_mask)]
            if self.prefill_mlp is not None:
                correction.append(_run_layers(self.prefill_mlp, x * self.head.prefill_input_mask))
            return self.head.heads(out + torch.cat(correction, dim=-1))


def _stacked_layers(sequentials):
    """The layers of equal ``nn.Sequential`` s: ``(weights, biases)`` stacked
    over the modules for a linear layer, the layer itself otherwise."""
    layers = []
    for parts in zip(*sequentials):
        if isinstance(parts[0], nn.Linear):
            layers.append(
                (torch.stack([p.weight for p in parts]), torch.stack([p.bias for p in parts]))
            )
        else:
            layers.append(parts[0])
    return layers


def _linear(x, weight, bias):
    """``x @ weight[k].T + bias[k]`` for every module ``k``: (K, B, out);
    ``x`` is (B, in) or (K, B, in)."""
    if x.dim() == 2:
        x = x.expand(weight.shape[0], -1, -1)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _run_layers(layers, x):
    for layer in layers:
        x = _linear(x, *layer) if isinstance(layer, tuple) else layer(x)
    return x
