"""The torch module behind :class:`sklat.LatencyEstimator`.

The decode latency of configuration ``c`` at position ``p`` is factorised as

    f(c, p) = exp(s(c)) * sum_k w_k(c) * phi_k(p)

where ``s`` (log scale) and ``w`` (softmax mixture weights) come from a config
encoder that runs once per sample (a linear map of the features plus an MLP
correction, so that the log-linear part of a configuration's effect is learnt
without the variance of a deep model), and the ``K`` positive basis curves ``phi``
come from a position encoder that runs once per distinct position. The
configuration sets the scale, the position shapes the curve. Because the
position part is shared, the summed loss needs no per-(sample, position) work:
``sum_{p<=N} f(c, p) = exp(s(c)) * w(c) . Phi[N]`` with ``Phi`` the cumulative
sum of the basis table, so a batch costs ``O(B * K + max(N) * K)``.

Everything here works in standardised units (latencies divided by scales fitted
on the training data); :mod:`sklat._estimator` converts to the user's units.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

# softplus(_UNIT_BIAS) == 1: the basis curves start flat at one.
_UNIT_BIAS = math.log(math.expm1(1.0))


def _mlp(n_in, hidden_size, n_out):
    return nn.Sequential(
        nn.Linear(n_in, hidden_size),
        nn.GELU(),
        nn.Linear(hidden_size, hidden_size),
        nn.GELU(),
        nn.Linear(hidden_size, n_out),
    )


class FactorizedLatencyModule(nn.Module):
    """Config encoder, position encoder, decode and prefill heads.

    Parameters
    ----------
    n_features : int
        Number of (standardised) configuration features.
    hidden_size : int
        Width of the hidden layers of both encoders.
    n_basis : int
        Number of position basis curves ``K``.
    with_prefill : bool
        Whether to build the prefill head.
    position_scale : float
        Positions are encoded as ``log1p(p) / log1p(position_scale)``, so that
        the longest request seen in training maps to 1.
    """

    def __init__(self, n_features, hidden_size=64, n_basis=8, with_prefill=True,
                 position_scale=1024.0):
        super().__init__()
        self.n_basis = n_basis
        self.with_prefill = with_prefill
        self.register_buffer(
            "log_position_scale",
            torch.tensor(math.log1p(float(position_scale)), dtype=torch.float32),
        )
        # Config encoder -> [log scale, K mixture logits, log prefill]: a
        # linear part plus an MLP correction (regularised separately, see
        # LatencyEstimator.config_mlp_weight_decay).
        n_out = 1 + n_basis + (1 if with_prefill else 0)
        self.config_linear = nn.Linear(max(n_features, 1), n_out)
        self.config_mlp = _mlp(max(n_features, 1), hidden_size, n_out)
        self.position_encoder = _mlp(1, hidden_size, n_basis)
        # Start from the flat per-token average (1 in standardised units) and
        # the median prefill: the data has to earn every departure from it.
        last_config = self.config_mlp[-1]
        last_position = self.position_encoder[-1]
        for layer in (self.config_linear, last_config):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(last_position.weight)
        nn.init.constant_(last_position.bias, _UNIT_BIAS)
        # Symmetry breaking between basis curves comes from small random
        # output weights rather than exactly zero ones.
        with torch.no_grad():
            last_position.weight.normal_(0.0, 1e-2)

    def encode(self, x):
        """Per-sample quantities: log scale, mixture weights, log prefill."""
        if x.shape[1] == 0:
            x = x.new_zeros((x.shape[0], 1))
        out = self.config_linear(x) + self.config_mlp(x)
        log_scale = out[:, 0]
        weights = torch.softmax(out[:, 1:1 + self.n_basis], dim=1)
        log_prefill = out[:, 1 + self.n_basis] if self.with_prefill else None
        return log_scale, weights, log_prefill

    def basis(self, positions):
        """Positive basis curves ``phi`` at ``positions`` (1-D), shape (P, K)."""
        u = torch.log1p(positions.to(self.log_position_scale.dtype))
        u = (u / self.log_position_scale).unsqueeze(1)
        return F.softplus(self.position_encoder(u))

    def forward(self, x, output_tokens, step_sample=None, step_position=None):
        """Summed decode totals, prefill and (optionally) per-step latencies.

        Parameters
        ----------
        x : Tensor of shape (B, n_features)
        output_tokens : LongTensor of shape (B,)
            ``N`` of each request (>= 1).
        step_sample, step_position : LongTensor of shape (M,), optional
            Batch row and position (>= 1) of each measured per-step latency.

        Returns
        -------
        dict with ``total`` (B,), ``prefill`` (B,) or None, ``steps`` (M,) or None.
        """
        log_scale, weights, log_prefill = self.encode(x)
        max_n = int(output_tokens.max())
        positions = torch.arange(1, max_n + 1, device=x.device)
        phi = self.basis(positions)
        cumulative = torch.cumsum(phi, dim=0)
        summed = (weights * cumulative[output_tokens - 1]).sum(dim=1)
        total = torch.exp(log_scale) * summed
        steps = None
        if step_sample is not None and step_sample.numel() > 0:
            per_step = (weights[step_sample] * phi[step_position - 1]).sum(dim=1)
            steps = torch.exp(log_scale[step_sample]) * per_step
        prefill = torch.exp(log_prefill) if log_prefill is not None else None
        return {"total": total, "prefill": prefill, "steps": steps}
