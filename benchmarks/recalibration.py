"""Moving a model to a new setting: recalibration from a few requests.

Run: ``python benchmarks/recalibration.py [--pairs NAMES] [--sizes 5,10,20,50]
[--seeds 0,1,2]``; prints one Markdown table per (source -> target) pair.

A model trained on every request of a source set (``sklat profile`` of one
setting) predicts a target set (the same model in another setting: eager
instead of SDPA attention, bfloat16, two threads, a wider MoE). The target's
requests are split by request (30% test, seeded); from the rest, the first
``k`` (in a seeded order) are what a user would measure on the new setting.
Compared on the test requests, mean over the split seeds:

- ``no recalibration``: the source model as it is;
- ``recalibrated (k)``: ``LatencyEstimator.recalibrate`` on the k requests;
- ``from scratch (k)``: a new model fitted on the k requests alone;
- ``all target requests``: a new model fitted on every non-test target request.

Columns: total-decode, prefill and positioned MAPE (per-step latencies of the
test requests) and the coverage of the 90% decode-total interval
(``sklat.metrics.evaluate``), with its standard error over the split seeds.

``--drift``: instead, how often ``check_drift`` flags draws of 10, 20 and 30
requests of each target (a real move), and of held-out requests of the source
(no move).

``--min_slope_requests K``: let ``recalibrate`` fit slopes from ``K``
requests instead of 20 (to measure that minimum).

``--ratios``: instead, how the source model's error on every target request
depends on the features: the least-squares slopes of ``log(measured /
predicted)`` (decode total) on the logs of the features and of ``N``, with the
model fitted on all source requests (``random_state=0``).
"""

import argparse
import copy
import warnings

import numpy as np
import pandas as pd

from _common import profiled_requests  # noqa: E402

from sklat import LatencyEstimator, metrics  # noqa: E402
from sklat.control import check_drift  # noqa: E402

PAIRS = {
    "sdpa -> eager": ("llama_dense_sdpa", "llama_dense_eager"),
    "float32 -> bfloat16": ("llama_dense_sdpa", "llama_dense_sdpa_bf16"),
    "1 -> 2 threads": ("llama_dense_sdpa", "llama_dense_sdpa_2threads"),
    "MoE hidden 384 -> 512": ("mixtral_moe_sdpa", "mixtral_moe_h512_sdpa"),
}


def scores(est, data, rows):
    m = metrics.evaluate(
        est,
        data.X.iloc[rows],
        data.y.iloc[rows],
        output_tokens=data.output_tokens[rows],
        positioned_latencies=[data.positioned_latencies[i] for i in rows],
        confidences=[0.9],
    )
    return {
        "total MAPE": m["total_decode_mape_pct"],
        "prefill MAPE": m["prefill_mape_pct"],
        "pos. MAPE": m["positioned_mape_pct"],
        "90% coverage": 100 * m["decode_interval"]["0.9"]["coverage"]
        if "0.9" in m["decode_interval"]
        else np.nan,
    }


def fit(data, rows, seed):
    return LatencyEstimator(random_state=seed).fit(
        data.X.iloc[rows], data.y.iloc[rows], output_tokens=data.output_tokens[rows]
    )


def pair_table(source, target, sizes, seeds):
    src, tgt = profiled_requests(source), profiled_requests(target)
    rows = []
    for seed in seeds:
        base = fit(src, np.arange(len(src.X)), seed)
        order = np.random.RandomState(seed).permutation(len(tgt.X))
        test, pool = np.sort(order[: int(0.3 * len(order))]), order[int(0.3 * len(order)) :]
        rows.append({"method": "no recalibration", "seed": seed, **scores(base, tgt, test)})
        for k in sizes:
            few = pool[:k]
            recal = copy.deepcopy(base).recalibrate(
                tgt.X.iloc[few], tgt.y.iloc[few], tgt.output_tokens[few]
            )
            rows.append({"method": f"recalibrated ({k})", "seed": seed, **scores(recal, tgt, test)})
            rows.append(
                {
                    "method": f"from scratch ({k})",
                    "seed": seed,
                    **scores(fit(tgt, few, seed), tgt, test),
                }
            )
        rows.append(
            {
                "method": f"all target requests ({len(pool)})",
                "seed": seed,
                **scores(fit(tgt, pool, seed), tgt, test),
            }
        )
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["method"]))
    grouped = frame.groupby("method", sort=False)
    table = grouped.mean(numeric_only=True).drop(columns="seed")
    # One draw's coverage moves by several points (20 requests calibrate):
    # whether a mean is off the level is read against its standard error.
    table["90% coverage s.e."] = grouped["90% coverage"].sem()
    return table.loc[order]


def drift_table(pairs, sizes=(10, 20, 30), draws=20, alpha=0.01):
    """``check_drift`` on each move: the share of draws of k requests it flags,
    on the target (a real move) and on held-out requests of the source (no
    move; the model is fitted on the other 70% of the source)."""
    rows = []
    for name in pairs:
        source, target = PAIRS[name]
        src, tgt = profiled_requests(source), profiled_requests(target)
        order = np.random.RandomState(0).permutation(len(src.X))
        held, train = order[: int(0.3 * len(order))], np.sort(order[int(0.3 * len(order)) :])
        est = fit(src, train, 0)
        rng = np.random.RandomState(1)
        row = {"move": name}
        for k in sizes:
            for label, data, pool in (("moved", tgt, np.arange(len(tgt.X))), ("same", src, held)):
                flagged = []
                for _ in range(draws):
                    take = rng.choice(pool, k, replace=False)
                    report = check_drift(
                        est,
                        data.X.iloc[take],
                        data.y.iloc[take],
                        data.output_tokens[take],
                        alpha=alpha,
                    )
                    flagged.append(report.drift)
                row[f"{label}, {k} requests"] = 100 * float(np.mean(flagged))
        rows.append(row)
    return pd.DataFrame(rows).set_index("move")


def ratio_table(pairs):
    """Per move: the mean log ratio of measured to predicted decode totals on
    the target, and its least-squares slopes on the log features and log N."""
    rows = []
    for name in pairs:
        source, target = PAIRS[name]
        src, tgt = profiled_requests(source), profiled_requests(target)
        est = fit(src, np.arange(len(src.X)), 0).set_params(point="center")
        predicted = est.predict_total(tgt.X, output_tokens=tgt.output_tokens)
        ratio = np.log(tgt.y["T_LLM_decode"].to_numpy() / predicted)
        varying = [c for c in tgt.X.columns if tgt.X[c].nunique() > 1]
        logs = np.log(np.column_stack([tgt.X[varying].to_numpy(float), tgt.output_tokens]))
        design = np.column_stack([np.ones(len(ratio)), logs])
        coef, *_ = np.linalg.lstsq(design, ratio, rcond=None)
        rows.append(
            {
                "move": name,
                "mean log ratio": ratio.mean(),
                "sd": ratio.std(),
                **{f"slope log {c}": b for c, b in zip([*varying, "N"], coef[1:])},
                "residual sd": (ratio - design @ coef).std(),
            }
        )
    table = pd.DataFrame(rows).set_index("move")
    slopes = [c for c in table.columns if c.startswith("slope")]
    return table[["mean log ratio", "sd", *slopes, "residual sd"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--sizes", default="5,10,20,50")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--drift", action="store_true", help="only the drift-check table")
    parser.add_argument("--min_slope_requests", type=int, default=None)
    parser.add_argument(
        "--ratios", action="store_true", help="only the source model's log ratios on the targets"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.pairs.split(",") if args.pairs else list(PAIRS)
    if args.min_slope_requests is not None:
        from sklat import _recalibration

        _recalibration.MIN_SLOPE_REQUESTS = args.min_slope_requests
    if args.ratios:
        print("\n## log(measured / predicted) of the source model on the target")
        print(ratio_table(names).round(3).to_markdown())
        return
    if args.drift:
        print("\n## check_drift at alpha=0.01: % of 20 draws flagged")
        print(drift_table(names).round(1).to_markdown())
        return
    for name in names:
        source, target = PAIRS[name]
        table = pair_table(source, target, sizes, seeds)
        print(f"\n## {name}: {source} -> {target} (mean over split seeds {args.seeds})")
        print(table.round(2).to_markdown())


if __name__ == "__main__":
    main()
