"""What the benchmark scripts share: the data sets and the peers.

Run a script from the repository root (``python benchmarks/accuracy.py``):
Python puts ``benchmarks/`` on the path, so ``from _common import ...`` finds
this module.

Data sets -- Benchmark data sets built from the public measurements in ../shared/data.

- :func:`vidur_requests`: requests whose per-step decode latency is built from
  Vidur's measured A100 kernel times for Llama-2-7B (README of shared/data):
  ``f(L) = 32 * (sum of token-level op medians at num_tokens=1 + attn_decode(L))``
  with ``L = prompt + position``; prefill ``32 * sum of op medians at
  num_tokens = prompt``. Measurement-like noise is added; the noiseless ``f``
  is the per-position truth.
- :func:`splitwise_requests`: Splitwise's real end-to-end runs (totals only).
- :func:`profiled_requests`: the per-step sets measured with ``sklat profile``
  under ``benchmarks/data`` (see its README).

Peers -- What a user would pick instead of sklat, written as small regressors.

Each peer has ``fit(X, y, output_tokens, positioned_latencies)`` (X a DataFrame
of configuration features, y ``[T_prefill_total, T_LLM_decode]``) and
``predict_positions(X, positions)``, ``predict_total(X, output_tokens)``,
``predict_prefill(X)``.
"""

import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch


PROFILED = Path(__file__).resolve().parent / "data"
# The gradient-boosted trees peer of the interval and load benchmarks
# (LightGBM), sized for a few hundred requests.
LGBM_PARAMS = dict(n_estimators=300, learning_rate=0.05, num_leaves=15, min_child_samples=10)
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


def median_us(fn, repeat):
    """The median time (microseconds) of ``repeat`` single calls of ``fn``,
    after one call to warm it up: a call that a neighbour slowed does not
    move it."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


def median_error(part, pred, target, keys):
    """Mean over the configurations (the groups of ``keys``) of ``|median
    prediction / measured median - 1|`` (%), the requests of one level."""
    grouped = part.assign(_pred=pred).groupby(keys)
    ratio = grouped["_pred"].median() / grouped[target].median()
    return float(100 * np.mean(np.abs(ratio - 1)))


def median_floor(part, target, keys, n_draws=500, seed=0):
    """The error (%) that :func:`median_error` gives a predictor of the true
    median of every configuration: mean over the configurations of
    ``E |resampled median / measured median - 1|``, by bootstrap of its
    requests. An error near it is as close as the level's requests can tell."""
    rng = np.random.default_rng(seed)
    errors = []
    for _, values in part.groupby(keys)[target]:
        values = values.to_numpy()
        resampled = np.median(rng.choice(values, size=(n_draws, len(values))), axis=1)
        errors.append(np.mean(np.abs(resampled / np.median(values) - 1)))
    return float(100 * np.mean(errors))


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


def _config_matrix(X):
    """Config features on a log scale where they span orders of magnitude."""
    arr = np.asarray(X, dtype=np.float64)
    ratio = (arr.max(axis=0) + 1) / (arr.min(axis=0) + 1)
    return arr, (arr >= 0).all(axis=0) & (ratio >= 10)


def _log_where(arr, mask):
    out = arr.copy()
    out[:, mask] = np.log1p(out[:, mask])
    return out


class _PrefillGBM:
    def _fit_prefill(self, X, y):
        self.prefill_ = HistGradientBoostingRegressor(random_state=0).fit(
            X, np.log(np.asarray(y)[:, 0])
        )

    def predict_prefill(self, X):
        return np.exp(self.prefill_.predict(X))


class FlatAverage(_PrefillGBM):
    """The status quo: a regressor of the mean per-token latency; flat curve."""

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        avg = np.asarray(y)[:, 1] / output_tokens
        self.model_ = HistGradientBoostingRegressor(random_state=0).fit(X, np.log(avg))
        self._fit_prefill(X, y)
        return self

    def predict_positions(self, X, positions):
        avg = np.exp(self.model_.predict(X))
        return np.repeat(avg[:, None], len(positions), axis=1)

    def predict_total(self, X, output_tokens):
        return np.exp(self.model_.predict(X)) * output_tokens


class TotalGBM(_PrefillGBM):
    """Gradient boosting on (config, N) -> total; per position S(N) - S(N-1)."""

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        Z = np.column_stack([np.asarray(X, dtype=np.float64), output_tokens])
        self.model_ = HistGradientBoostingRegressor(random_state=0).fit(Z, np.asarray(y)[:, 1])
        self._fit_prefill(X, y)
        return self

    def _totals(self, X, n):
        Z = np.column_stack([np.asarray(X, dtype=np.float64), n])
        return np.where(n > 0, self.model_.predict(Z), 0.0)

    def predict_positions(self, X, positions):
        out = np.empty((len(X), len(positions)))
        for j, p in enumerate(positions):
            n = np.full(len(X), p)
            out[:, j] = self._totals(X, n) - self._totals(X, n - 1)
        return out

    def predict_total(self, X, output_tokens):
        return self._totals(X, np.asarray(output_tokens))


def _position_basis(p, scale):
    """Simple position basis functions b_k(p)."""
    p = np.asarray(p, dtype=np.float64)
    return np.column_stack(
        [
            np.ones_like(p),
            np.log1p(p) / np.log1p(scale),
            p / scale,
            np.exp(-(p - 1) / 4.0),
            np.exp(-(p - 1) / 16.0),
        ]
    )


def _raw_products(arr, order=3):
    """The raw features and their products of up to ``order`` distinct features
    (layers x experts, layers x context, ...): physical cost terms."""
    cols = [
        arr[:, list(idx)].prod(axis=1)
        for k in range(1, order + 1)
        for idx in itertools.combinations(range(arr.shape[1]), k)
    ]
    return np.column_stack(cols)


class AggregatedLinear(_PrefillGBM):
    """Closed form: f(c, p) = sum_jk w_jk a_j(c) b_k(p), ridge on summed basis.

    ``config_basis="log"``: ``a`` = 1 and the standardised (log-)features;
    ``"products"``: 1 and the standardised raw features with their products of
    up to three features (the hand-made interactions of a physical model).
    """

    def __init__(self, config_basis="log"):
        self.config_basis = config_basis

    def _config_features(self, X):
        arr = np.asarray(X, dtype=np.float64)
        if self.config_basis == "products":
            return _raw_products(arr)
        return _log_where(arr, self.log_mask_)

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        arr, self.log_mask_ = _config_matrix(X)
        self.scaler_ = StandardScaler().fit(self._config_features(X))
        self.scale_ = float(np.max(output_tokens))
        n = np.asarray(output_tokens)
        cumulative = np.cumsum(_position_basis(np.arange(1, n.max() + 1), self.scale_), axis=0)
        design = self._design(X, cumulative[n - 1])
        # Relative error: divide each row by its total, as sklat's loss does.
        t = np.asarray(y)[:, 1]
        self.model_ = RidgeCV(alphas=np.logspace(-6, 2, 17), fit_intercept=False).fit(
            design / t[:, None], np.ones_like(t)
        )
        self._fit_prefill(X, y)
        return self

    def _config_basis(self, X):
        a = self.scaler_.transform(self._config_features(X))
        return np.column_stack([np.ones(len(a)), a])

    def _design(self, X, b):
        a = self._config_basis(X)
        return (a[:, :, None] * b[:, None, :]).reshape(len(a), -1)

    def predict_positions(self, X, positions):
        b = _position_basis(positions, self.scale_)
        a = self._config_basis(X)
        return a @ self.model_.coef_.reshape(a.shape[1], b.shape[1]) @ b.T

    def predict_total(self, X, output_tokens):
        n = np.asarray(output_tokens)
        cumulative = np.cumsum(_position_basis(np.arange(1, n.max() + 1), self.scale_), axis=0)
        return self.model_.predict(self._design(X, cumulative[n - 1]))


class PerStepOracle(_PrefillGBM):
    """Gradient boosting on (config, position) fitted to every measured step:
    what direct per-step supervision achieves (the noise floor)."""

    def fit(self, X, y, output_tokens, positioned_latencies):
        arr = np.asarray(X, dtype=np.float64)
        rows = np.repeat(np.arange(len(arr)), output_tokens)
        starts = np.repeat(np.cumsum(output_tokens) - output_tokens, output_tokens)
        pos = np.arange(len(rows)) - starts + 1
        steps = np.concatenate(positioned_latencies)
        self.model_ = HistGradientBoostingRegressor(random_state=0, max_iter=300).fit(
            np.column_stack([arr[rows], np.log(pos)]), np.log(steps)
        )
        self._fit_prefill(X, y)
        return self

    def predict_positions(self, X, positions):
        arr = np.asarray(X, dtype=np.float64)
        p = np.asarray(positions, dtype=np.float64)
        Z = np.column_stack([np.repeat(arr, len(p), axis=0), np.tile(np.log(p), len(arr))])
        return np.exp(self.model_.predict(Z)).reshape(len(arr), len(p))

    def predict_total(self, X, output_tokens):
        n = np.asarray(output_tokens)
        full = self.predict_positions(X, np.arange(1, n.max() + 1))
        mask = np.arange(1, n.max() + 1)[None, :] <= n[:, None]
        return (full * mask).sum(axis=1)


class PhysicalCore(_PrefillGBM):
    """A ten-parameter physical model fitted on totals: one power law of the
    (log) features times a flat cost, a context cost and a start-up transient::

        f(c, p) = exp(w0 + w . log x) * (1 + exp(b) (context_0 + p) / S
                                        + exp(g) exp(-(p - 1) / 4))

    ``context_0`` is the sum of ``context_features`` (columns of ``X``), ``S``
    the median of ``context_0 + N``. Least squares of log totals (the sums over
    ``1..N`` are closed form).
    """

    def __init__(self, context_features=("vision_tokens", "text_tokens")):
        self.context_features = context_features

    def _parts(self, X, n):
        arr = np.asarray(X, dtype=np.float64)
        logx = np.log1p(arr)
        names = list(getattr(X, "columns", []))
        cols = [names.index(c) for c in self.context_features if c in names]
        context = arr[:, cols].sum(axis=1) if cols else np.zeros(len(arr))
        return logx, context, np.asarray(n, dtype=np.float64)

    @staticmethod
    def _sums(context, n, scale):
        transient = (1 - np.exp(-n / 4)) / (1 - np.exp(-1 / 4))
        return n, (n * context + n * (n + 1) / 2) / scale, transient

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        from scipy.optimize import least_squares

        logx, context, n = self._parts(X, output_tokens)
        self.scale_ = float(max(1.0, np.median(context + n)))
        flat, ctx, transient = self._sums(context, n, self.scale_)
        target = np.log(np.asarray(y)[:, 1])

        def residuals(params):
            w0, w, b, g = params[0], params[1:-2], params[-2], params[-1]
            inner = flat + np.exp(b) * ctx + np.exp(g) * transient
            return target - (w0 + logx @ w + np.log(inner))

        start = np.zeros(logx.shape[1] + 3)
        start[0] = float(np.mean(target - np.log(n)))
        start[-2:] = -2.0
        self.params_ = least_squares(residuals, start).x
        self._fit_prefill(X, y)
        return self

    def _power(self, X):
        logx, _, _ = self._parts(X, np.ones(len(X)))
        return np.exp(self.params_[0] + logx @ self.params_[1:-2])

    def predict_positions(self, X, positions):
        _, context, _ = self._parts(X, np.ones(len(X)))
        p = np.asarray(positions, dtype=np.float64)[None, :]
        b, g = np.exp(self.params_[-2:])
        curve = 1 + b * (context[:, None] + p) / self.scale_ + g * np.exp(-(p - 1) / 4)
        return self._power(X)[:, None] * curve

    def predict_total(self, X, output_tokens):
        _, context, n = self._parts(X, output_tokens)
        flat, ctx, transient = self._sums(context, n, self.scale_)
        b, g = np.exp(self.params_[-2:])
        return self._power(X) * (flat + b * ctx + g * transient)


class RelativePoint:
    """A peer whose decode predictions are multiplied by the factor with the
    least mean relative error on its own training totals
    (``sklat._conformal.relative_error_factor``): the point sklat predicts
    with ``point="relative"``, given to a model of a few parameters, whose
    training errors are close to out-of-sample ones."""

    def __init__(self, peer):
        self.peer = peer

    def fit(self, X, y, output_tokens, positioned_latencies=None):
        from sklat._conformal import relative_error_factor

        self.peer.fit(X, y, output_tokens, positioned_latencies)
        predicted = self.peer.predict_total(X, output_tokens)
        self.factor_ = relative_error_factor(np.log(np.asarray(y)[:, 1] / predicted))
        return self

    def predict_positions(self, X, positions):
        return self.factor_ * self.peer.predict_positions(X, positions)

    def predict_total(self, X, output_tokens):
        return self.factor_ * self.peer.predict_total(X, output_tokens)

    def predict_prefill(self, X):
        return self.peer.predict_prefill(X)


def served_model(folder, config="llama-dense-30m"):
    """Write the model of ``data/configs/<config>`` (default the dense 30M
    Llama) with random weights (seed 0) and a word-level tokenizer (one token
    per word ``w0``, ``w1``, ...) to ``folder``, for ``transformers serve``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    config = AutoConfig.from_pretrained(PROFILED / "configs" / config)
    words = [f"w{i}" for i in range(config.vocab_size - 3)]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(folder)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)


@contextlib.contextmanager
def served(port, *options, config="llama-dense-30m"):
    """``transformers serve`` of :func:`served_model`'s model of ``config`` on
    127.0.0.1:``port`` (CPU, one thread, more ``options``) while the block runs;
    yields the model's path, which is its served name."""
    import httpx

    # transformers serve names a local model by its path: a stable one.
    model = Path(tempfile.gettempdir()) / "sklat-served" / config
    if not (model / "config.json").exists():
        served_model(model, config)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *options]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield model
    finally:
        server.terminate()
        server.wait()
