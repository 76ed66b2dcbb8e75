"""sklat with given parameters over several data seeds, next to the aggregated
linear model: the variance behind one benchmark table.

Run: ``python benchmarks/seeds.py [--set NAME=VALUE ...] [--noises 0.1,0.15]
[--size 300] [--seeds 0,1,2] [--curve saturating] [--splitwise] [--vidur]``.

Prints, per noise level and data seed, sklat's positioned MAPE against the
noiseless truth, the lowest held-out loss of its training history, and the
aggregated linear model's positioned MAPE; with ``--splitwise``, sklat's
total-decode MAPE on Splitwise (5-fold CV, and 128 -> 256 tokens) with the same
parameters. Uses only the public API, so it runs against older sklat versions
too (``--set`` only names parameters the version has).
"""

import argparse

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from accuracy import mape, parse_set, positioned_mape, synthetic, vidur  # noqa: E402
from _common import AggregatedLinear  # noqa: E402
from _common import splitwise_requests  # noqa: E402

from sklat import LatencyEstimator  # noqa: E402


def seed_table(params, noises, size, seeds, curve):
    rows = []
    for noise in noises:
        for seed in seeds:
            data, tr, te = synthetic(curve, noise, size, seed=seed)
            X_test, n_test = data.X.iloc[te], data.output_tokens[te]
            truth = lambda p: data.true_curve(X_test, p)  # noqa: E731
            fit_args = (data.X.iloc[tr], data.y.to_numpy()[tr], data.output_tokens[tr])
            est = LatencyEstimator(random_state=0, **params).fit(*fit_args)
            linear = AggregatedLinear().fit(*fit_args)
            history = est.history_
            rows.append(
                {
                    "noise": noise,
                    "data seed": seed,
                    "sklat pos. MAPE (truth)": positioned_mape(est, X_test, n_test, truth),
                    "best held-out loss": (
                        min(history[:, "valid_loss"]) if "valid_loss" in history[0] else np.nan
                    ),
                    "aggregated linear pos. MAPE (truth)": positioned_mape(
                        linear, X_test, n_test, truth
                    ),
                }
            )
    return pd.DataFrame(rows)


def vidur_table(params, size, seeds):
    """sklat and the aggregated linear model on the Vidur kernel curves, per data seed."""
    rows = []
    for seed in seeds:
        data, tr, te = vidur(size, seed=seed)
        X_test, n_test = data.X.iloc[te], data.output_tokens[te]
        truth = lambda p: data.true_curve(X_test, p)  # noqa: E731
        fit_args = (data.X.iloc[tr], data.y.to_numpy()[tr], data.output_tokens[tr])
        est = LatencyEstimator(random_state=0, **params).fit(*fit_args)
        linear = AggregatedLinear().fit(*fit_args)
        rows.append(
            {
                "data seed": seed,
                "sklat pos. MAPE (truth)": positioned_mape(est, X_test, n_test, truth),
                "sklat total MAPE": mape(
                    est.predict_total(X_test, n_test), data.y.to_numpy()[te, 1]
                ),
                "aggregated linear pos. MAPE (truth)": positioned_mape(
                    linear, X_test, n_test, truth
                ),
            }
        )
    return pd.DataFrame(rows)


def splitwise_row(params):
    data = splitwise_requests()
    y = data.y.to_numpy()
    fit = lambda rows: LatencyEstimator(random_state=0, **params).fit(  # noqa: E731
        data.X.iloc[rows], y[rows], data.output_tokens[rows]
    )
    cv = [
        mape(fit(tr).predict_total(data.X.iloc[te], data.output_tokens[te]), y[te, 1])
        for tr, te in KFold(5, shuffle=True, random_state=0).split(data.X)
    ]
    tr = np.flatnonzero(data.token_size == 128)
    te = np.flatnonzero(data.token_size == 256)
    unseen = mape(fit(tr).predict_total(data.X.iloc[te], data.output_tokens[te]), y[te, 1])
    return {
        "Splitwise CV total MAPE": float(np.mean(cv)),
        "Splitwise 128 -> 256 total MAPE": unseen,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a LatencyEstimator parameter (Python literal value)",
    )
    parser.add_argument("--noises", default="0.1,0.15")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--curve", default="saturating")
    parser.add_argument("--splitwise", action="store_true")
    parser.add_argument(
        "--vidur",
        action="store_true",
        help="also the Vidur kernel curves, --size requests, per data seed",
    )
    args = parser.parse_args(argv)
    params = parse_set(args.set)
    table = seed_table(
        params,
        [float(v) for v in args.noises.split(",")],
        args.size,
        [int(v) for v in args.seeds.split(",")],
        args.curve,
    )
    print(f"## sklat {params or 'defaults'}, {args.curve}, {args.size} training requests")
    print(table.round(4).to_markdown(index=False))
    means = table.drop(columns=["noise", "data seed"]).mean()
    print("\nmean: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items() if "MAPE" in k))
    if args.vidur:
        vidur_rows = vidur_table(params, args.size, [int(v) for v in args.seeds.split(",")])
        print(f"\n## Vidur kernel curves, {args.size} training requests")
        print(vidur_rows.round(4).to_markdown(index=False))
        print(
            "\nmean: "
            + ", ".join(
                f"{k} {v:.2f}" for k, v in vidur_rows.drop(columns="data seed").mean().items()
            )
        )
    if args.splitwise:
        print("\n" + ", ".join(f"{k}: {v:.2f}" for k, v in splitwise_row(params).items()))


if __name__ == "__main__":
    main()
