"""Latency under load on real GPU runs: Splitwise's batch sweeps.

Splitwise's ``perf_model.csv`` (``shared/data/splitwise_perf_model.csv``; see its
README) holds real end-to-end runs of Llama-2-70B (tensor parallel 2, 4 and 8)
and BLOOM-176B (tensor parallel 8) on A100 and H100 GPUs (12 setups), each
sweeping the batch size 1, 2, 4, ..., 64 at a prompt of 512 tokens and 128 output
tokens (5 repeats), besides prompt and output-length sweeps at batch 1. A batch's
requests prefill and decode together, so the batch size is the load each
request met: the requests in flight, itself included, as ``concurrency`` counts
them.

``python benchmarks/batch_load.py`` trains on every run up to a batch of 8 (the
prompt and length sweeps, and the batch sweep's 1, 2, 4, 8) and asks each
predictor the median time per output token and time to first token of every
setup at the batch sizes held out: 16 (one doubling past the largest trained),
32 and 64 (two and three); and, trained on the batches 1, 2 and 8, at 4
(between trained batches). Error of the median per setup (%), averaged over the
setups; sklat over three seeds. The predictors:

- isolated: sklat trained on batch 1 only (an idle server's model);
- plain feature: sklat with ``batch_size`` an ordinary feature;
- load feature: sklat with ``batch_size`` a load feature (``load_features``);
- line: per setup, ``a + b * batch_size`` by least squares on its trained
  batch sweep;
- GBT: gradient-boosted trees (LightGBM) on the same features.

with the coverage of the load feature's calibrated 90% intervals, and the floor
(the error a predictor of each setup's true median would show against the
medians of its 5 repeats, by bootstrap). Splitwise's totals come
from ``e2e_time - prompt_time`` (decode) and ``prompt_time`` (time to first
token); output lengths up to 256 only (``benchmarks/_common.splitwise_requests``).
At batch 64 the three setups of Llama-2-70B at tensor parallel 2 (A100, H100,
power-capped H100) have end-to-end times that leave 0.66-1.25 s per output
token while their prompt time fell tenfold: another regime, which no model of
smaller batches can know; the batch-64 row is printed without them too.
"""

import argparse
import functools
import warnings

import numpy as np
import pandas as pd
from _common import LGBM_PARAMS, median_error, median_floor, splitwise_requests

SETUP = ["tensor_parallel", "is_bloom_176b", "is_h100", "is_power_capped"]
LEVELS = [1, 2, 4, 8, 16, 32, 64]
TRAINED = [1, 2, 4, 8]
_median_error = functools.partial(median_error, keys=SETUP)
_median_floor = functools.partial(median_floor, keys=SETUP)


def _frame():
    data = splitwise_requests()
    frame = data.X.assign(output_tokens=data.output_tokens, **data.y)
    frame["tpot"] = frame["T_LLM_decode"] / frame["output_tokens"]
    # The batch sweep: prompt 512, 128 tokens; every batch of 1 is also the
    # other sweeps' centre.
    frame["sweep"] = (frame["text_tokens"] == 512) & (frame["output_tokens"] == 127)
    return frame


def _sklat_models(train, seed):
    from sklat import LatencyEstimator

    features = ["text_tokens", *SETUP, "batch_size"]
    y_cols = ["T_prefill_total", "T_LLM_decode"]
    kinds = [
        ("isolated", train[train["batch_size"] == 1], None),
        ("plain feature", train, None),
        ("load feature", train, ["batch_size"]),
    ]
    models = {}
    for name, rows, load in kinds:
        est = LatencyEstimator(
            random_state=seed,
            context_features=["text_tokens"],
            load_features=load,
            n_threads=1,
        )
        est.fit(rows[features], rows[y_cols], output_tokens=rows["output_tokens"])
        est.set_params(point="center")
        models[name] = (est, features)
    return models


def _line(train, test, target):
    """Per setup, ``a + b * batch_size`` on its trained batch sweep."""
    out = np.full(len(test), np.nan)
    trained = dict(list(train[train["sweep"]].groupby(SETUP)))
    for key, rows in test.groupby(SETUP).groups.items():
        seen = trained[key]
        b, a = np.polyfit(seen["batch_size"], seen[target], 1)
        out[test.index.get_indexer(rows)] = a + b * test.loc[rows, "batch_size"]
    return out


def _parts(frame, held_out):
    """``(name, rows)`` of each held-out batch of the sweep; at 64 also
    without the two setups that ran out of memory there."""
    parts = []
    for level in held_out:
        rows = frame[frame["sweep"] & (frame["batch_size"] == level)]
        parts.append((f"batch {level}", rows))
        if level == 64:
            kept = rows[~((rows["tensor_parallel"] == 2) & (rows["is_bloom_176b"] == 0))]
            parts.append(("batch 64, without TP 2", kept))
    return parts


def evaluate(seeds=(0, 1, 2)):
    from lightgbm import LGBMRegressor

    from sklat.metrics import interval_coverage

    warnings.simplefilter("ignore")
    frame = _frame()
    sweep = frame[frame["sweep"]]
    summary = sweep.groupby("batch_size").agg(
        requests=("tpot", "size"),
        tpot_ms=("tpot", "median"),
        ttft_ms=("T_prefill_total", "median"),
    )
    summary["tpot_floor_%"] = [_median_floor(p, "tpot") for _, p in sweep.groupby("batch_size")]
    summary["ttft_floor_%"] = [
        _median_floor(p, "T_prefill_total") for _, p in sweep.groupby("batch_size")
    ]
    print(f"\n{len(frame)} Splitwise runs; the batch sweep (medians over the 12 setups):\n")
    print(summary.round(2).to_markdown())
    for trained, held_out in ((TRAINED, [16, 32, 64]), ([1, 2, 8], [4, 16])):
        train = frame[frame["batch_size"].isin(trained)].reset_index(drop=True)
        parts = [(name, rows.reset_index(drop=True)) for name, rows in _parts(frame, held_out)]
        errors, coverage = {}, {}
        for seed in seeds:
            for name, (est, features) in _sklat_models(train, seed).items():
                for part_name, part in parts:
                    n = part["output_tokens"]
                    pred = est.predict(part[features], output_tokens=n)
                    errors.setdefault((part_name, name), []).append(
                        (
                            _median_error(part, pred[:, 1] / n, "tpot"),
                            _median_error(part, pred[:, 0], "T_prefill_total"),
                        )
                    )
                    if name == "load feature":
                        decode = est.predict_interval(part[features], n, confidence=0.9)
                        prefill = est.predict_interval(
                            part[features], target="prefill", confidence=0.9
                        )
                        coverage.setdefault(part_name, []).append(
                            (
                                100 * interval_coverage(part["T_LLM_decode"], decode),
                                100 * interval_coverage(part["T_prefill_total"], prefill),
                            )
                        )
        design = ["text_tokens", "output_tokens", *SETUP, "batch_size"]
        trees = {
            target: LGBMRegressor(**LGBM_PARAMS, random_state=seeds[0], verbose=-1).fit(
                train[design], train[target]
            )
            for target in ("tpot", "T_prefill_total")
        }
        table = []
        for part_name, part in parts:
            row = {"held out": part_name}
            for name in ("isolated", "plain feature", "load feature"):
                tpot, ttft = np.mean(errors[(part_name, name)], axis=0)
                row[f"{name}: TPOT"], row[f"{name}: TTFT"] = tpot, ttft
            for target, label in (("tpot", "TPOT"), ("T_prefill_total", "TTFT")):
                row[f"line: {label}"] = _median_error(part, _line(train, part, target), target)
                row[f"GBT: {label}"] = _median_error(
                    part, trees[target].predict(part[design]), target
                )
                row[f"floor: {label}"] = _median_floor(part, target)
            decode, ttft = np.mean(coverage[part_name], axis=0)
            row["load: 90% cov. decode"], row["load: 90% cov. TTFT"] = decode, ttft
            table.append(row)
        batches = ", ".join(str(b) for b in trained)
        print(
            f"\nTrained on the runs of batch {batches}: error of the median per setup (%), "
            f"sklat averaged over seeds {list(seeds)}\n"
        )
        print(pd.DataFrame(table).round(1).to_markdown(index=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    evaluate()
