"""Latency under load: a continuous-batching engine measured at several loads,
and how well today's predictors carry over from one load to another.

Run ``python benchmarks/load.py measure`` (serve the dense 30M Llama of
``benchmarks/data/configs`` with ``transformers serve --continuous-batching`` on
the CPU, random weights and a word-level tokenizer, and profile it with
``sklat profile --endpoint`` at 1, 2, 4, 8 and 16 requests in flight, closed
loop, and at 1, 2 and 4 requests per second, open loop, into
``benchmarks/data/llama_dense_load``), then ``python benchmarks/load.py
evaluate`` (and ``figure``: ``docs/_static/load_curve.png``). ``--set NAME``
measures into (and evaluates) ``benchmarks/data/NAME``; ``measure --config
mixtral-moe-8x-h512`` serves another model of ``benchmarks/data/configs``
instead of the dense Llama, ``--repeats`` sets the requests per
configuration and level (8), and ``--prompt_tokens`` and ``--output_tokens``
the lengths (64,256 and 32,96).

evaluate prints, per load level, the measured medians (time per output token =
``T_LLM_decode / output_tokens``, time to first token, the measured
``concurrency``; the median time per token of the level's requests that
decoded alone, a check of the engine's speed through the run; and the floor
of each target, the error a predictor of the true median per configuration
would show against the level's measured medians, by bootstrap) and, for two
protocols (trained on the closed-loop levels 1, 2, 4 and 8; and on 1, 2 and 8),
the error of each predictor's median time per
output token and time to first token against the measured median, per
configuration (prompt, output length), averaged over the configurations:

- isolated: sklat trained on level 1 only (what a model of an idle server says);
- plain feature: sklat with the measured ``concurrency`` as an ordinary feature
  (``load_features=None``, 0.14's model);
- load feature: sklat with ``concurrency`` as a load feature (the default);
- line: per configuration, ``a + b * concurrency`` fitted by least squares on
  the trained levels' requests;
- GBT: gradient-boosted trees (LightGBM) on (prompt, output length,
  concurrency), for each target;

and, on a set that records what each request met when it was sent
(``in_flight_at_start``, ``waiting_at_start``: ``llama_dense_load_arrivals``), a
row more for each held-out closed-loop level ``L``: its requests sent with ``L``
in flight ("closed L, L at sending"), the closed loop's steady state, without the
level's opening burst; and the predictors:

- arrival load: sklat with those columns too, which the prefill sees in place of
  ``concurrency`` (``prefill_load_features="auto"``);
- GBT at start: the trees for the time to first token given those columns too;

with the coverage of the load-feature (and arrival-load) model's calibrated 90%
intervals per level, and the capacity (the largest level at which 90% of a configuration's
requests meet a time-per-token objective) measured and predicted.

Held out: level 16 (a doubling past the largest trained level), level 4 in the
second protocol (between trained levels) and the open-loop rates (a different
way to load the server, with the measured concurrency given).

``python benchmarks/load.py positions`` prints, per closed-loop level and output
length, the mean time of each decode step in bins of 8 steps (the requests whose
stream gave one token per event): where in a request's decode the load's costs
fall.

``python benchmarks/load.py attention`` times one decode step's linear layers
and attention for the served model's shapes, at each closed-loop level as a
batch: the attention as the engine computes it on the CPU (one mask over every
request's keys), as a paged kernel would, and in a step that also prefills a
prompt; and the attention of a step that prefills as many prompts together (a
closed-loop level's opening burst), both ways.

``python benchmarks/load.py runs --set A,B,...`` compares measured runs of one
recipe: per closed-loop configuration, the growth of the median from 4 in flight
to 8 and from 8 to 16, and the error at 16 of two predictions from a run's own
level 8 (its growth from 4 to 8 carried one doubling further, and one growth
common to the runs, chosen with hindsight).

``python benchmarks/load.py smooth`` asks what the form of sklat's load costs
allows on this engine, without training noise: per configuration and protocol,
the law ``a + b * c**p + d * c**q`` (``a, b, d, p, q >= 0``: smooth and
non-decreasing in the load ``c``, the form the load features give each cost)
fitted by least squares (log units) to the closed-loop levels' median time per
output token at their median measured concurrency, and its error at every
closed-loop level, trained or not; after the medians themselves.
"""

import argparse
import functools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import LGBM_PARAMS, median_error, median_floor, median_us, served

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
SET = "llama_dense_load"
AT_START = ["in_flight_at_start", "waiting_at_start"]
CLOSED = [1, 2, 4, 8, 16]
OPEN = [1.0, 2.0, 4.0]
TRAINED = [1, 2, 4, 8]
# Time-per-token objectives (ms) of the capacity table.
OBJECTIVES = (15.0, 20.0, 30.0)
# A configuration: the requests of one prompt and output length.
CONFIG = ["text_tokens", "output_tokens"]
_median_error = functools.partial(median_error, keys=CONFIG)
_median_floor = functools.partial(median_floor, keys=CONFIG)


def measure(
    port=8767, config="llama-dense-30m", repeats=8, prompt_tokens=(64, 256), output_tokens=(32, 96)
):
    from sklat.acquire import profile_endpoint

    with served(port, "--continuous-batching", config=config) as model:
        start = time.monotonic()
        for _ in range(4):  # reruns measure what failed
            path = profile_endpoint(
                f"http://127.0.0.1:{port}",
                DATA,
                model=str(model),
                engine="transformers",
                prompt_tokens=list(prompt_tokens),
                output_tokens=list(output_tokens),
                repeats=repeats,
                concurrency=CLOSED,
                request_rate=OPEN,
                dataset=SET,
                warmup=3,
                progress=True,
            )
        print(f"{path} ({time.monotonic() - start:.0f} s)")


def _level(frame):
    return np.where(
        frame["max_concurrency"].notna(),
        "closed " + frame["max_concurrency"].fillna(0).astype(int).astype(str),
        "open " + frame["request_rate"].astype(str) + "/s",
    )


def _line_predictions(train, test, target):
    """Per configuration, ``a + b * concurrency`` by least squares on ``train``."""
    out = np.full(len(test), np.nan)
    keys = ["text_tokens", "output_tokens"]
    trained = dict(list(train.groupby(keys)))
    for key, rows in test.groupby(keys).groups.items():
        seen = trained.get(key)
        if seen is None or len(seen) < 2:
            continue
        b, a = np.polyfit(seen["concurrency"], seen[target], 1)
        out[test.index.get_indexer(rows)] = a + b * test.loc[rows, "concurrency"]
    return out


def evaluate(seeds=(0, 1, 2)):
    """Both protocols (levels 1-8 trained, 16 held out; levels 1, 2 and 8
    trained, 4 and 16 held out), each predictor's error per level."""
    warnings.simplefilter("ignore")
    frame = _frame()
    print(f"\n{len(frame)} requests of {SET}\n")
    summary = frame.groupby("level", sort=False).agg(
        requests=("tpot", "size"),
        concurrency=("concurrency", "median"),
        tpot_ms=("tpot", "median"),
        ttft_ms=("T_prefill_total", "median"),
    )
    # The engine's speed through the run: the requests that decoded alone
    # (a time-weighted concurrency within 5% of 1), wherever the level put them.
    alone = frame[frame["concurrency"] <= 1.05].groupby("level", sort=False)["tpot"]
    summary["alone"] = alone.size()
    summary["alone_tpot_ms"] = alone.median()
    for target, label in (("tpot", "tpot"), ("T_prefill_total", "ttft")):
        summary[f"{label}_floor_%"] = {
            level: _median_floor(part, target) for level, part in frame.groupby("level", sort=False)
        }
    print(summary.round(2).to_markdown())
    steady = _steady_parts(frame, [1, 2, 8])
    if steady:
        counts = pd.DataFrame(
            {name: rows.groupby(["text_tokens", "output_tokens"]).size() for name, rows in steady}
        )
        print("\nRequests sent with the level's L in flight, per configuration:\n")
        print(counts.fillna(0).astype(int).to_markdown())
    for trained in (TRAINED, [1, 2, 8]):
        _protocol(frame, trained, seeds)


def _frame(name=None):
    """The requests of the set ``name`` (default: ``--set``), with their time
    per output token and level."""
    frame = pd.read_csv(DATA / (name or SET) / "requests.csv")
    frame["tpot"] = frame["T_LLM_decode"] / frame["output_tokens"]
    frame["level"] = _level(frame)
    return frame


def _sklat_models(train, seed):
    """The sklat predictors, ``name -> (estimator, features)``: the isolated
    model, ``concurrency`` as a plain feature, and as a load feature."""
    from sklat import LatencyEstimator

    y_cols = ["T_prefill_total", "T_LLM_decode"]
    isolated_rows = train[train["max_concurrency"] == 1]
    models = {}
    kinds = [
        ("isolated", isolated_rows, ["text_tokens"], None),
        ("plain feature", train, ["text_tokens", "concurrency"], None),
        ("load feature", train, ["text_tokens", "concurrency"], "auto"),
    ]
    if set(AT_START) <= set(train.columns):
        kinds.append(("arrival load", train, ["text_tokens", "concurrency", *AT_START], "auto"))
    for name, rows, features, load in kinds:
        est = LatencyEstimator(
            random_state=seed, context_features=["text_tokens"], load_features=load, n_threads=1
        )
        est.fit(rows[features], rows[y_cols], output_tokens=rows["output_tokens"])
        models[name] = (est, features)
    return models


def _protocol(frame, trained, seeds, confidence=0.9):
    """Train on the closed-loop ``trained`` levels; per level, each
    predictor's error of the median time per token and time to first token
    (per configuration, averaged over ``seeds`` for sklat), and the coverage
    of the load feature's calibrated intervals."""
    from lightgbm import LGBMRegressor

    from sklat.metrics import interval_coverage

    train = frame[frame["max_concurrency"].isin(trained)].reset_index(drop=True)
    levels = list(frame.groupby("level", sort=False)) + _steady_parts(frame, trained)
    errors, coverage = {}, {}
    for seed in seeds:
        models = _sklat_models(train, seed)
        for level, part in levels:
            part = part.reset_index(drop=True)
            n = part["output_tokens"].to_numpy()
            for name, (est, features) in models.items():
                est.set_params(point="center")
                pred = est.predict(part[features], output_tokens=n)
                cell = errors.setdefault((level, name), [])
                cell.append(
                    (
                        _median_error(part, pred[:, 1] / n, "tpot"),
                        _median_error(part, pred[:, 0], "T_prefill_total"),
                    )
                )
            for name in ("load feature", "arrival load"):
                if name not in models:
                    continue
                est, features = models[name]
                decode = est.predict_interval(part[features], n, confidence=confidence)
                prefill = est.predict_interval(
                    part[features], target="prefill", confidence=confidence
                )
                coverage.setdefault((level, name), []).append(
                    (
                        100 * interval_coverage(part["T_LLM_decode"], decode),
                        100 * interval_coverage(part["T_prefill_total"], prefill),
                    )
                )
    design = ["text_tokens", "output_tokens", "concurrency"]
    trees = {
        target: LGBMRegressor(**LGBM_PARAMS, random_state=seeds[0], verbose=-1).fit(
            train[design], train[target]
        )
        for target in ("tpot", "T_prefill_total")
    }
    at_start = "arrival load" in models
    if at_start:
        trees["at start"] = LGBMRegressor(**LGBM_PARAMS, random_state=seeds[0], verbose=-1).fit(
            train[design + AT_START], train["T_prefill_total"]
        )
    table = []
    for level, part in levels:
        part = part.reset_index(drop=True)
        row = {"level": level, "trained": bool(part["max_concurrency"].isin(trained).all())}
        for name in ("isolated", "plain feature", "load feature", "arrival load"):
            if (level, name) in errors:
                tpot, ttft = np.mean(errors[(level, name)], axis=0)
                row[f"{name}: TPOT"], row[f"{name}: TTFT"] = tpot, ttft
        for target, label in (("tpot", "TPOT"), ("T_prefill_total", "TTFT")):
            row[f"line: {label}"] = _median_error(
                part, _line_predictions(train, part, target), target
            )
            row[f"GBT: {label}"] = _median_error(part, trees[target].predict(part[design]), target)
        if at_start:
            row["GBT at start: TTFT"] = _median_error(
                part, trees["at start"].predict(part[design + AT_START]), "T_prefill_total"
            )
        for name, short in (("load feature", "load"), ("arrival load", "arrival")):
            if (level, name) in coverage:
                decode, ttft = np.mean(coverage[(level, name)], axis=0)
                row[f"{short}: {confidence:.0%} cov. decode"] = decode
                row[f"{short}: {confidence:.0%} cov. TTFT"] = ttft
        table.append(row)
    levels_text = ", ".join(str(level) for level in trained)
    print(
        f"\nTrained on the closed-loop levels {levels_text}: error of the median (%), "
        f"per configuration; sklat averaged over seeds {list(seeds)}\n"
    )
    print(pd.DataFrame(table).round(1).to_markdown(index=False))
    if trained == TRAINED:
        _capacity_table(frame, _sklat_models(train, seeds[0])["load feature"][0], OBJECTIVES)


def _steady_parts(frame, trained):
    """For each closed-loop level held out, on a set that records the sending:
    ``(name, rows)`` of its requests sent with the level's ``L`` requests in
    flight (``in_flight_at_start >= L``), the closed loop's steady state. The
    others were sent with fewer: the level's opening burst (its first ``L``
    requests, sent at once, which the engine prefills together) and sends
    that followed two requests ending together."""
    if not set(AT_START) <= set(frame.columns):
        return []
    parts = []
    for level in CLOSED:
        rows = frame[frame["max_concurrency"] == level]
        if level in trained or rows.empty:
            continue
        steady = rows[rows["in_flight_at_start"] >= level]
        parts.append((f"closed {level}, {level} at sending", steady))
    return parts


def _capacity_table(frame, est, objectives, level=0.9):
    """Per configuration and time-per-token objective: the measured capacity
    (the last closed-loop level before the first whose share of requests
    meeting the objective is below ``level``) against sklat's
    (:func:`sklat.control.capacity` at the same levels)."""
    from sklat.control import capacity

    closed = frame[frame["max_concurrency"].notna()]
    configs = closed.groupby(["text_tokens", "output_tokens"]).size().index
    rows = []
    for tpot in objectives:
        for prompt, n in configs:
            mine = closed[(closed["text_tokens"] == prompt) & (closed["output_tokens"] == n)]
            shares = [(mine[mine["max_concurrency"] == c]["tpot"] <= tpot).mean() for c in CLOSED]
            misses = [share < level for share in shares]
            measured = ([0] + CLOSED)[misses.index(True)] if any(misses) else CLOSED[-1]
            predicted = capacity(
                est,
                pd.DataFrame({"text_tokens": [prompt]}),
                tpot_ms=tpot,
                output_tokens=n,
                min_attainment=level,
                levels=CLOSED,
            ).capacity[0]
            steps = (
                abs(CLOSED.index(measured) - CLOSED.index(predicted))
                if min(measured, predicted) > 0
                else abs(([0] + CLOSED).index(measured) - ([0] + CLOSED).index(predicted))
            )
            rows.append(
                {
                    "TPOT objective ms": tpot,
                    "prompt": prompt,
                    "output tokens": n,
                    "measured capacity": measured,
                    "sklat capacity": predicted,
                    "levels apart": steps,
                }
            )
    print(f"\nCapacity at {level:.0%} of requests meeting a time-per-token objective:\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


def _smooth_law(concurrency, tpot):
    """The least-squares (log units) law ``a + b c^p + d c^q`` with every
    parameter >= 0 through the points ``(concurrency, tpot)``: the best of a
    few starts (the sum of two power laws has several local optima)."""
    from scipy.optimize import least_squares

    log_y = np.log(tpot)

    def law(theta, c):
        a, b, p, d, q = theta
        return np.exp(a) + np.exp(b) * c**p + np.exp(d) * c**q

    def residuals(theta):
        return np.log(law(theta, concurrency)) - log_y

    level = float(np.log(np.min(tpot)))
    starts = [
        [level, level - 1, 1.0, level - 3, 2.0],
        [level - 1, level - 1, 0.3, level - 2, 1.8],
        [level - 3, level, 0.5, level - 3, 1.5],
    ]
    bounds = ([-np.inf, -np.inf, 0.0, -np.inf, 0.0], [np.inf, np.inf, 2.0, np.inf, 2.0])
    best = min((least_squares(residuals, x0, bounds=bounds) for x0 in starts), key=lambda r: r.cost)
    return lambda c: law(best.x, np.asarray(c, dtype=np.float64))


def positions(width=8):
    """Per closed-loop level and output length: the mean time (ms) of each
    decode step, in bins of ``width`` steps (the last one of a length holds
    the steps left), over the requests whose stream gave one token per event
    (``T_decode_segment_tokens`` all 1; a row whose counts per event are
    unknown has none)."""
    frame = _frame()
    closed = frame[frame["max_concurrency"].notna()]
    rows = []
    for (level, n), part in closed.groupby(["max_concurrency", "output_tokens"]):
        steps = [
            np.asarray(json.loads(ms), dtype=np.float64)
            for ms, tokens in zip(part["T_decode_segment_ms"], part["T_decode_segment_tokens"])
            if isinstance(tokens, str) and set(json.loads(tokens)) == {1}
        ]
        if not steps:
            continue
        longest = max(len(s) for s in steps)
        table = np.full((len(steps), longest), np.nan)
        for i, s in enumerate(steps):
            table[i, : len(s)] = s
        mean = np.nanmean(table, axis=0)
        row = {"level": f"closed {int(level)}", "output tokens": int(n), "requests": len(steps)}
        for start in range(0, longest, width):
            row[f"{start + 1}-{start + width}"] = mean[start : start + width].mean()
        rows.append(row)
    print(
        f"\nMean time of a decode step (ms) in bins of {width} steps, per closed-loop "
        f"level and output length ({SET})\n"
    )
    print(pd.DataFrame(rows).round(1).to_markdown(index=False))


def smooth(protocols=(TRAINED, [1, 2, 8])):
    """Per protocol and configuration, the error (%) of the best smooth
    non-decreasing law of :func:`_smooth_law` at each closed-loop level."""
    frame = _frame()
    closed = frame[frame["max_concurrency"].notna()]
    medians = (
        closed.groupby(["text_tokens", "output_tokens", "max_concurrency"])
        .agg(tpot=("tpot", "median"), concurrency=("concurrency", "median"))
        .reset_index()
    )
    print("\nMedian time per output token (ms) per configuration and closed-loop level\n")
    print(
        medians.pivot_table(
            index=["text_tokens", "output_tokens"], columns="max_concurrency", values="tpot"
        )
        .round(1)
        .to_markdown()
    )
    for trained in protocols:
        rows = []
        for (prompt, n), part in medians.groupby(["text_tokens", "output_tokens"]):
            fit = part[part["max_concurrency"].isin(trained)]
            law = _smooth_law(fit["concurrency"].to_numpy(), fit["tpot"].to_numpy())
            errors = 100 * (law(part["concurrency"]) / part["tpot"].to_numpy() - 1)
            row = {"prompt": prompt, "output tokens": n}
            row.update(
                {
                    f"closed {int(c)}{'' if c in trained else ' (held out)'}": e
                    for c, e in zip(part["max_concurrency"], errors)
                }
            )
            rows.append(row)
        table = pd.DataFrame(rows)
        mean = table.drop(columns=["prompt", "output tokens"]).abs().mean()
        table = pd.concat(
            [table, pd.DataFrame([{"prompt": "mean |error|", "output tokens": "", **mean}])]
        )
        levels_text = ", ".join(str(level) for level in trained)
        print(
            f"\nThe best smooth non-decreasing law through the median time per token of the "
            f"closed-loop levels {levels_text}: its error (%) at each level\n"
        )
        print(table.round(1).to_markdown(index=False))


def attention(config="llama-dense-30m", context=190, prompt=160, levels=CLOSED):
    """Per batch size ``c``: the time (ms, one torch thread, as ``measure``
    serves the model) of one decode step's linear layers and of its attention in
    two forms, for the shapes of the dense model ``config``: as
    ``transformers serve --continuous-batching`` computes it without a paged
    kernel (scaled dot-product attention of the step's ``c`` queries against
    the keys of every request read in the step, ``c * context`` of them, the
    other requests masked out: transformers'
    ``generation/continuous_batching/input_outputs.py`` builds one mask of
    shape ``[1, 1, queries, keys read]`` for the step), as a paged kernel
    computes it (each query against its own request's ``context`` keys), and
    the first form in a step that also prefills one ``prompt``-token prompt
    (its queries against every key read); and a step that prefills ``c``
    prompts of ``prompt`` tokens together (a closed-loop level's opening
    burst), with one mask and per request."""
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(1)
    cfg = json.loads((DATA / "configs" / config / "config.json").read_text())
    heads, dim, layers = cfg["num_attention_heads"], cfg["head_dim"], cfg["num_hidden_layers"]
    hidden, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def timed(fn, repeats=31):
        return median_us(fn, repeats) / 1e3  # ms

    square = [randn(hidden, heads * dim) for _ in range(4)]
    up, gate, down, head = (
        randn(hidden, inter),
        randn(hidden, inter),
        randn(inter, hidden),
        randn(hidden, vocab),
    )

    def attend(queries, keys_per_request, requests, own):
        q = randn(1, heads, queries, dim)
        k, v = (
            randn(1, heads, keys_per_request * requests, dim),
            randn(1, heads, keys_per_request * requests, dim),
        )
        if own:
            q = q.reshape(requests, heads, 1, dim)
            k, v = (
                t.reshape(heads, requests, keys_per_request, dim).transpose(0, 1) for t in (k, v)
            )
            return lambda: [F.scaled_dot_product_attention(q, k, v) for _ in range(layers)]
        mask = torch.full((1, 1, queries, keys_per_request * requests), float("-inf"))
        for i in range(min(queries, requests)):
            mask[..., i, i * keys_per_request : (i + 1) * keys_per_request] = 0.0
        mask[..., requests:, :] = 0.0  # a prompt's queries: here, every key is read
        return lambda: [
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask) for _ in range(layers)
        ]

    def burst(requests, own):
        # ``requests`` prompts prefilled in one step, as a closed loop's
        # opening burst is: causal within each prompt; with one mask, every
        # query is computed against every prompt's keys.
        if own:
            q, k, v = (randn(requests, heads, prompt, dim) for _ in range(3))
            return lambda: [
                F.scaled_dot_product_attention(q, k, v, is_causal=True) for _ in range(layers)
            ]
        tokens = requests * prompt
        q, k, v = (randn(1, heads, tokens, dim) for _ in range(3))
        mask = torch.full((1, 1, tokens, tokens), float("-inf"))
        causal = torch.triu(torch.full((prompt, prompt), float("-inf")), diagonal=1)
        for i in range(requests):
            mask[..., i * prompt : (i + 1) * prompt, i * prompt : (i + 1) * prompt] = causal
        return lambda: [
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask) for _ in range(layers)
        ]

    rows = []
    for c in levels:
        x = randn(c, hidden)

        def linear(x=x):
            for _ in range(layers):
                for w in square:
                    x @ w
                (F.silu(x @ gate) * (x @ up)) @ down
            return x @ head

        rows.append(
            {
                "batch": c,
                "linear layers": timed(linear),
                "attention, one mask (served)": timed(attend(c, context, c, own=False)),
                "attention, per request (paged)": timed(attend(c, context, c, own=True)),
                f"attention, one mask, with a {prompt}-token prefill": timed(
                    attend(c + prompt, context, c, own=False), repeats=11
                ),
                "batch's prompts prefilled together, one mask": timed(
                    burst(c, own=False), repeats=5
                ),
                "the same, per request": timed(burst(c, own=True), repeats=5),
            }
        )
    print(
        f"\nOne step of {config} ({layers} layers, {heads} heads x {dim}), {context} tokens cached "
        f"per request, torch {torch.__version__}, {torch.get_num_threads()} thread: time (ms)\n"
    )
    print(pd.DataFrame(rows).round(2).to_markdown(index=False))


def runs(names, last=16):
    """Across measured runs (``names``: sets of one recipe), how the closed
    loop's medians per configuration grow from ``last / 2`` in flight to
    ``last``, and what two predictors that see every run's levels up to
    ``last / 2`` (and nothing else) are off at ``last``: one that carries
    each configuration's growth from ``last / 4`` to ``last / 2`` one doubling
    further (the trend of the trained levels), and one that multiplies by
    one growth common to all the runs, chosen with hindsight to minimise
    their mean error at ``last``."""
    half, quarter = last // 2, last // 4
    medians = {}
    for name in names:
        frame = _frame(name)
        closed = frame[frame["max_concurrency"].isin([quarter, half, last])]
        medians[name] = closed.groupby(["max_concurrency", "text_tokens", "output_tokens"])[
            ["tpot", "T_prefill_total"]
        ].median()
    rows = []
    for target, label in (("tpot", "time per token"), ("T_prefill_total", "time to first token")):
        growth = {
            name: (
                m.loc[half, target] / m.loc[quarter, target],
                m.loc[last, target] / m.loc[half, target],
            )
            for name, m in medians.items()
        }

        def mean_error(g, growth=growth):
            return np.mean([np.mean(np.abs(g / g_last - 1)) for _, g_last in growth.values()])

        common = min(np.linspace(0.5, 4.0, 3501), key=mean_error)
        for name, (g_before, g_last) in growth.items():
            rows.append(
                {
                    "target": label,
                    "set": name,
                    f"growth {quarter} to {half}": g_before.mean(),
                    f"growth {half} to {last}": g_last.mean(),
                    f"trend of {quarter}-{half}: error at {last} %": 100
                    * np.mean(np.abs(g_before / g_last - 1)),
                    f"common growth (hindsight): error at {last} %": 100
                    * np.mean(np.abs(common / g_last - 1)),
                    "common growth": common,
                }
            )
    print(
        f"\nClosed loop, per configuration (mean over the configurations): the growth of the "
        f"median from {quarter} to {half} in flight and from {half} to {last}, and the error at "
        f"{last} of a median predicted from the level {half}\n"
    )
    print(pd.DataFrame(rows).round(2).to_markdown(index=False))


def figure(path=ROOT.parent / "docs" / "_static" / "load_curve.png", seed=0):
    """Time per output token against the measured concurrency: each request of
    the set, the closed-loop medians, and sklat trained on levels 1-8 with
    ``concurrency`` as a load feature and as a plain feature, prompt 256 at
    96 output tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warnings.simplefilter("ignore")
    frame = _frame()
    train = frame[frame["max_concurrency"].isin(TRAINED)].reset_index(drop=True)
    models = _sklat_models(train, seed)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    closed = frame["max_concurrency"].notna()
    ax.scatter(
        frame.loc[closed, "concurrency"],
        frame.loc[closed, "tpot"],
        s=8,
        alpha=0.4,
        label="closed loop (each request)",
    )
    ax.scatter(
        frame.loc[~closed, "concurrency"],
        frame.loc[~closed, "tpot"],
        s=8,
        alpha=0.5,
        marker="x",
        label="open loop (each request)",
    )
    medians = frame[closed].groupby("max_concurrency")["tpot"].median()
    ax.plot(medians.index, medians.values, "k-o", label="measured median per level")
    grid = np.linspace(1, 16, 61)
    X = pd.DataFrame({"text_tokens": 256, "concurrency": grid})
    for name, style in (("load feature", "-"), ("plain feature", "--")):
        est, _ = models[name]
        est.set_params(point="center")
        ax.plot(
            grid,
            est.predict_total(X, output_tokens=96) / 96,
            style,
            label=f"sklat, concurrency as a {name} (prompt 256, 96 tokens)",
        )
    ax.axvspan(8, 16, color="0.9", zorder=0, label="past the trained levels")
    ax.set_xlabel("requests in flight (measured, time-weighted over the decode)")
    ax.set_ylabel("time per output token (ms)")
    ax.set_title("transformers serve --continuous-batching, CPU, dense 30M Llama")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what",
        choices=["measure", "evaluate", "positions", "smooth", "figure", "attention", "runs"],
    )
    parser.add_argument(
        "--set",
        default=SET,
        help=f"the measured set under benchmarks/data (default {SET}); runs: several, "
        "comma-separated",
    )
    parser.add_argument(
        "--config",
        default="llama-dense-30m",
        help="measure, attention: the (served) model's config under benchmarks/data/configs",
    )
    parser.add_argument(
        "--repeats", type=int, default=8, help="measure: requests per configuration and level"
    )
    parser.add_argument(
        "--prompt_tokens",
        default="64,256",
        help="measure: the prompt lengths (comma-separated)",
    )
    parser.add_argument(
        "--output_tokens",
        default="32,96",
        help="measure: the output lengths (comma-separated)",
    )
    parser.add_argument(
        "--objectives",
        default=",".join(f"{v:g}" for v in OBJECTIVES),
        help="evaluate: the capacity table's time-per-token objectives, ms (comma-separated)",
    )
    args = parser.parse_args()
    SET = args.set
    OBJECTIVES = tuple(float(v) for v in args.objectives.split(","))
    if args.what == "measure":
        measure(
            config=args.config,
            repeats=args.repeats,
            prompt_tokens=[int(v) for v in args.prompt_tokens.split(",")],
            output_tokens=[int(v) for v in args.output_tokens.split(",")],
        )
    elif args.what == "attention":
        attention(config=args.config)
    elif args.what == "runs":
        runs(args.set.split(","))
    else:
        tasks = {"evaluate": evaluate, "positions": positions, "smooth": smooth, "figure": figure}
        tasks[args.what]()
