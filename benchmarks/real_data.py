"""Benchmark data sets built from the public measurements in ../shared/data.

- :func:`vidur_requests`: requests whose per-step decode latency is built from
  Vidur's measured A100 kernel times for Llama-2-7B (README of shared/data):
  ``f(L) = 32 * (sum of token-level op medians at num_tokens=1 + attn_decode(L))``
  with ``L = prompt + position``; prefill ``32 * sum of op medians at
  num_tokens = prompt``. Measurement-like noise is added; the noiseless ``f``
  is the per-position truth.
- :func:`splitwise_requests`: Splitwise's real end-to-end runs (totals only).
- :func:`profiled_requests`: the per-step sets measured with ``sklat profile``
  under ``benchmarks/data`` (see its README).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

PROFILED = Path(__file__).resolve().parent / "data"
PROFILED_FEATURES = ["vision_tokens", "text_tokens", "tier_idx", "top_k", "num_active_blocks"]
DATA = Path(
    os.environ.get("SKLAT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
N_LAYERS = 32
TOKEN_OPS = [
    "emb",
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
]


def configurations(data):
    """An id per request of ``data`` (a dataset Bunch): requests with equal
    features and output length (repeats of one measurement) share it."""
    keys = data.X.assign(output_tokens=data.output_tokens)
    return keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()


def _vidur_tables():
    mlp = pd.read_csv(DATA / "vidur_a100_llama2_7b_mlp_tp1.csv")
    attn = pd.read_csv(DATA / "vidur_a100_llama2_7b_attn_decode_bs1_tp1.csv")
    ops = sum(mlp[f"time_stats.{op}.median"] for op in TOKEN_OPS).to_numpy()
    tokens = mlp["num_tokens"].to_numpy()
    order = np.argsort(tokens)
    # kv 1024 appears twice in the source: average the duplicates.
    kv = attn.groupby("kv_cache_size")["time_stats.attn_decode.median"].mean()
    return tokens[order], ops[order], kv.index.to_numpy(), kv.to_numpy()


def vidur_curve_fn():
    """``f(context_length)`` in ms per decode step, and the prefill function."""
    tokens, ops, kv, attn = _vidur_tables()
    step_ops = float(np.interp(1, tokens, ops))

    def decode(context):
        return N_LAYERS * (step_ops + np.interp(context, kv, attn))

    def prefill(prompt):
        return N_LAYERS * np.interp(prompt, tokens, ops)

    return decode, prefill, int(kv.max())


def vidur_requests(n, *, noise=0.05, random_state=0):
    """Requests on Llama-2-7B / A100 with per-step latencies from measured kernels."""
    decode, prefill, max_kv = vidur_curve_fn()
    rng = np.random.RandomState(random_state)
    prompt = np.round(np.exp(rng.uniform(np.log(32), np.log(2048), n))).astype(np.int64)
    n_tokens = np.round(np.exp(rng.normal(np.log(128), 1.2, n))).astype(np.int64)
    n_tokens = np.clip(n_tokens, 1, max_kv - prompt)
    owner = np.repeat(np.arange(n), n_tokens)
    offsets = np.concatenate(([0], np.cumsum(n_tokens)))
    position = np.arange(offsets[-1]) - offsets[owner] + 1
    truth = decode(prompt[owner] + position)
    steps = (
        truth
        * np.exp(noise * rng.standard_normal(n))[owner]
        * np.exp(noise * rng.standard_normal(len(truth)))
    )
    total = np.bincount(owner, weights=steps, minlength=n)
    pre = prefill(prompt) * np.exp(noise * rng.standard_normal(n))
    X = pd.DataFrame({"prompt_tokens": prompt})

    def true_curve(X, positions):
        p = np.asarray(positions)[None, :]
        return decode(X["prompt_tokens"].to_numpy()[:, None] + p)

    return Bunch(
        X=X,
        y=pd.DataFrame({"T_prefill_total": pre, "T_LLM_decode": total}),
        output_tokens=n_tokens,
        positioned_latencies=[steps[offsets[i] : offsets[i + 1]] for i in range(n)],
        true_curve=true_curve,
    )


def splitwise_requests():
    """Splitwise runs with output lengths up to 256 (longer totals are unreliable,
    see shared/data/README.md). The first output token comes from the prefill, so
    a request of ``token_size`` tokens has ``token_size - 1`` decode steps."""
    raw = pd.read_csv(DATA / "splitwise_perf_model.csv")
    raw = raw[raw["token_size"] <= 256].reset_index(drop=True)
    X = pd.DataFrame(
        {
            # The prompt is the results format's text_tokens: the context at the first
            # decode step (LatencyEstimator's context_features="auto" finds it).
            "text_tokens": raw["prompt_size"],
            "batch_size": raw["batch_size"],
            "tensor_parallel": raw["tensor_parallel"],
            "is_bloom_176b": (raw["model"] == "bloom-176b").astype(int),
            "is_h100": raw["hardware"].str.startswith("h100").astype(int),
            "is_power_capped": (raw["hardware"] == "h100-80gb-pcap").astype(int),
        }
    )
    y = pd.DataFrame(
        {
            "T_prefill_total": raw["prompt_time"],
            "T_LLM_decode": raw["e2e_time"] - raw["prompt_time"],
        }
    )
    return Bunch(
        X=X,
        y=y,
        output_tokens=(raw["token_size"] - 1).to_numpy(),
        positioned_latencies=[None] * len(raw),
        true_curve=None,
        token_size=raw["token_size"].to_numpy(),
    )


def profiled_sets():
    """Names of the measured per-step sets under benchmarks/data (those whose
    requests carry T_decode_per_step; a served set holds segments instead)."""
    return sorted(
        p.parent.name
        for p in PROFILED.glob("*/requests.csv")
        if "T_decode_per_step" in pd.read_csv(p, nrows=0).columns
    )


def profiled_requests(name):
    """A per-step set measured with ``sklat profile``: the feature columns it
    holds (of vision_tokens, text_tokens, top_k, num_active_blocks), totals and
    every request's steps."""
    from sklat.io import load_results

    path = PROFILED / name
    columns = pd.read_csv(path / "requests.csv", nrows=0).columns
    features = [c for c in PROFILED_FEATURES if c in columns]
    res = load_results(PROFILED, datasets=[name], features=features)
    return Bunch(
        X=res.X,
        y=res.y,
        output_tokens=res.output_tokens,
        positioned_latencies=res.positioned_latencies,
        true_curve=None,
    )
