"""Synthetic profiling data with known per-position decode curves.

The ground truth follows the shape of the design document: about 25 ms per
token at position 1, 35 at 5, 41 at 10 and 45 from 21 on, scaled by the
configuration. Two more families test other shapes: KV-cache growth linear in
the context length, and a mix of both.
"""

import functools
import json
import numbers
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from ._constants import DEFAULT_FEATURES
from ._validation import check_positions

FEATURES = list(DEFAULT_FEATURES)
CURVES = ("saturating", "linear", "mixed")
_VISION_TOKENS_BY_TIER = np.array([0, 64, 256, 576])


def _config_scale(X):
    blocks = X["num_active_blocks"].to_numpy(dtype=np.float64)
    top_k = X["top_k"].to_numpy(dtype=np.float64)
    tier = X["tier_idx"].to_numpy(dtype=np.float64)
    return (0.5 + 0.5 * blocks / 32) * (1 + 0.08 * (top_k - 1)) * (1 + 0.1 * tier)


def _saturating(positions):
    # 25 ms at p=1, 34.7 at 5, 40.5 at 10, 44.3 at 21, 45 in the limit.
    return 45.0 - 20.0 * np.exp(-(positions - 1.0) / 6.0)


def _linear(context):
    # KV-cache growth: +10 ms per 1,000 tokens of context.
    return 25.0 + 0.01 * context


def true_decode_curve(X, positions, curve="saturating"):
    """Noiseless per-token decode latency (ms) of configurations at positions.

    Parameters
    ----------
    X : DataFrame with the columns of :data:`FEATURES`
        Configurations.
    positions : array-like of int
        Positions (>= 1).
    curve : {"saturating", "linear", "mixed"}, default="saturating"
        The curve family.

    Returns
    -------
    latencies : ndarray of shape (n_samples, n_positions)
        Milliseconds per token.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklat.datasets import true_decode_curve
    >>> X = pd.DataFrame({"vision_tokens": [0], "text_tokens": [0], "tier_idx": [0],
    ...                   "top_k": [1], "num_active_blocks": [32]})
    >>> true_decode_curve(X, [1, 5, 10, 21]).round(1)
    array([[25. , 34.7, 40.5, 44.3]])
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES}; got {curve!r}.")
    p = check_positions(positions).astype(np.float64)[None, :]
    scale = _config_scale(X)[:, None]
    context = (
        X["vision_tokens"].to_numpy(dtype=np.float64) + X["text_tokens"].to_numpy(dtype=np.float64)
    )[:, None]
    saturating = np.broadcast_to(_saturating(p), (len(scale), p.shape[1]))
    if curve == "saturating":
        return scale * saturating
    linear = _linear(context + p)
    if curve == "linear":
        return scale * linear
    return scale * 0.5 * (saturating + linear)


def true_prefill(X):
    """Noiseless prefill latency (ms) of configurations.

    Parameters
    ----------
    X : DataFrame with the columns of :data:`FEATURES`
        Configurations.

    Returns
    -------
    prefill : ndarray of shape (n_configs,)
        Milliseconds.
    """
    context = X["vision_tokens"].to_numpy(dtype=np.float64) + X["text_tokens"].to_numpy(
        dtype=np.float64
    )
    return _config_scale(X) * (20.0 + 0.05 * context)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def make_positioned_latency(
    n_samples=1000,
    *,
    noise=0.05,
    positioned_fraction=0.0,
    curve="saturating",
    max_output_tokens=1024,
    median_output_tokens=64,
    random_state=None,
):
    """Synthetic requests whose per-step latencies come from known curves.

    Each request draws a configuration (vision tier and tokens, text tokens,
    MoE ``top_k``, active blocks) and a long-tailed output length ``N``
    (log-normal around ``median_output_tokens``, within
    ``1..max_output_tokens``). Its ``N`` per-step latencies are the true curve
    times a per-request factor and a per-step factor, both log-normal with
    standard deviation ``noise``; ``T_LLM_decode`` is their exact sum.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of requests.
    noise : float, default=0.05
        Log-normal noise level of requests, steps and prefill.
    positioned_fraction : float, default=0.0
        Fraction of requests whose per-step latencies are returned.
    curve : {"saturating", "linear", "mixed"}, default="saturating"
        The curve family (see :func:`true_decode_curve`).
    max_output_tokens : int, default=1024
        Longest output length.
    median_output_tokens : int, default=64
        Median output length.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        - ``X``: DataFrame of the five configuration features;
        - ``y``: DataFrame ``[T_prefill_total, T_LLM_decode]`` (ms);
        - ``output_tokens``: int ndarray of shape (n_samples,);
        - ``positioned_latencies``: list of per-step arrays or ``None``;
        - ``frame``: all of the above as one DataFrame (per-step lists in
          ``T_decode_per_step``), the layout of a profiling results file;
        - ``true_curve(X, positions)`` and ``true_prefill(X)``: the noiseless
          ground truth.

    Examples
    --------
    >>> from sklat.datasets import make_positioned_latency
    >>> data = make_positioned_latency(n_samples=5, positioned_fraction=1.0,
    ...                                random_state=0)
    >>> data.X.shape, data.y.shape
    ((5, 5), (5, 2))
    >>> bool(abs(data.positioned_latencies[0].sum()
    ...          - data.y["T_LLM_decode"].iloc[0]) < 1e-9)
    True
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES}; got {curve!r}.")
    if not 0 <= positioned_fraction <= 1:
        raise ValueError(f"positioned_fraction must be in [0, 1]; got {positioned_fraction!r}.")
    if not _is_real(noise) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be >= 0 and finite; got {noise!r}.")
    for name, value in (("n_samples", n_samples), ("max_output_tokens", max_output_tokens)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    if (
        not _is_real(median_output_tokens)
        or not np.isfinite(median_output_tokens)
        or median_output_tokens <= 0
    ):
        raise ValueError(
            f"median_output_tokens must be a finite number > 0; got {median_output_tokens!r}."
        )
    rng = check_random_state(random_state)
    tier = rng.randint(0, len(_VISION_TOKENS_BY_TIER), n_samples)
    X = pd.DataFrame(
        {
            "vision_tokens": _VISION_TOKENS_BY_TIER[tier],
            "text_tokens": np.round(
                np.exp(rng.uniform(np.log(16), np.log(2048), n_samples))
            ).astype(np.int64),
            "tier_idx": tier,
            "top_k": rng.choice([1, 2, 4, 8], n_samples),
            "num_active_blocks": rng.randint(8, 33, n_samples),
        }
    )
    n_tokens = np.exp(rng.normal(np.log(median_output_tokens), 1.2, n_samples))
    n_tokens = np.clip(np.round(n_tokens), 1, max_output_tokens).astype(np.int64)

    # Per-step latencies of all requests at once, packed request after request.
    owner = np.repeat(np.arange(n_samples), n_tokens)
    offsets = np.concatenate(([0], np.cumsum(n_tokens)))
    position = np.arange(offsets[-1]) - offsets[owner] + 1
    curve_fn = functools.partial(true_decode_curve, curve=curve)
    truth = _packed_truth(X, owner, position, curve)
    request_factor = np.exp(noise * rng.standard_normal(n_samples))
    steps = truth * request_factor[owner] * np.exp(noise * rng.standard_normal(len(truth)))
    decode_total = np.bincount(owner, weights=steps, minlength=n_samples)
    prefill = true_prefill(X) * np.exp(noise * rng.standard_normal(n_samples))

    has_steps = rng.uniform(size=n_samples) < positioned_fraction
    positioned = [
        steps[offsets[i] : offsets[i + 1]].copy() if has_steps[i] else None
        for i in range(n_samples)
    ]
    y = pd.DataFrame({"T_prefill_total": prefill, "T_LLM_decode": decode_total})
    frame = X.assign(
        output_tokens=n_tokens,
        **y,
        T_decode_per_token_avg=decode_total / n_tokens,
        T_decode_per_step=positioned,
    )
    return Bunch(
        X=X,
        y=y,
        output_tokens=n_tokens,
        positioned_latencies=positioned,
        frame=frame,
        true_curve=curve_fn,
        true_prefill=true_prefill,
    )


def _packed_truth(X, owner, position, curve):
    """The true curve at each (request, position) pair of a packed layout."""
    scale = _config_scale(X)[owner]
    context = (
        X["vision_tokens"].to_numpy(dtype=np.float64) + X["text_tokens"].to_numpy(dtype=np.float64)
    )[owner]
    p = position.astype(np.float64)
    if curve == "saturating":
        return scale * _saturating(p)
    if curve == "linear":
        return scale * _linear(context + p)
    return scale * 0.5 * (_saturating(p) + _linear(context + p))


def write_demo_results(results_dir):
    """Write the demo results folder that ships in ``sklat/demo_data``.

    ``vision_tiers/requests.csv``: 600 requests of
    :func:`make_positioned_latency` (``random_state=0``, 5% noise), a fifth of
    them with ``T_decode_per_step`` as JSON text; ``text_moe/requests.jsonl``:
    400 requests (``random_state=1``), totals only.

    Parameters
    ----------
    results_dir : str or path-like
        Folder to create (it may exist).
    """
    root = Path(results_dir)
    vision = make_positioned_latency(600, noise=0.05, positioned_fraction=0.2, random_state=0).frame
    text = make_positioned_latency(400, noise=0.05, random_state=1).frame
    text = text.drop(columns="T_decode_per_step")
    for frame in (vision, text):
        frame.insert(0, "sample_id", np.arange(len(frame)))
    vision["T_decode_per_step"] = [
        None if s is None else json.dumps(np.round(s, 6).tolist())
        for s in vision["T_decode_per_step"]
    ]
    (root / "vision_tiers").mkdir(parents=True, exist_ok=True)
    (root / "text_moe").mkdir(parents=True, exist_ok=True)
    vision.to_csv(root / "vision_tiers" / "requests.csv", index=False, float_format="%.6f")
    text.to_json(
        root / "text_moe" / "requests.jsonl", orient="records", lines=True, double_precision=10
    )
