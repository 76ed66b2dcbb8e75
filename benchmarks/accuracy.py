"""Accuracy of sklat against the peers a user would pick instead.

Run: ``python benchmarks/accuracy.py [--quick] [--only NAMES]
[--data synthetic,vidur,splitwise,profiled] [--sets NAMES]``;
prints one Markdown table per data set.

Metrics (percent, on held-out requests): total-decode MAPE, prefill MAPE, and
positioned MAPE (per request, the mean over its steps of ``|pred - ref| / ref``,
averaged over requests) against the measured noisy steps; against the noiseless
truth where it is known, positioned and total MAPE.
"""

import argparse
import ast
import sys
import time

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from _common import AggregatedLinear, FlatAverage, PerStepOracle, TotalGBM  # noqa: E402
from _common import (  # noqa: E402
    profiled_requests,
    profiled_sets,
    splitwise_requests,
    vidur_requests,
)

from sklat import LatencyEstimator, metrics  # noqa: E402
from sklat.datasets import make_positioned_latency  # noqa: E402


def positioned_mape(model, X, output_tokens, reference, first=1):
    """sklat.metrics.positioned_mape of ``model``'s curves over positions
    ``first..N``; ``reference(positions)`` gives the reference latencies,
    (n, len(positions))."""
    n = np.asarray(output_tokens)
    positions = np.arange(1, n.max() + 1)
    return metrics.positioned_mape(
        reference(positions), model.predict_positions(X, positions), output_tokens=n, start=first
    )


def mape(pred, true):
    return metrics.mape(true, pred)


def _with_steps(data, rows, fraction, seed):
    keep = np.random.RandomState(seed).uniform(size=len(rows)) < fraction
    return [data.positioned_latencies[i] if k else None for i, k in zip(rows, keep)]


SKLAT_PARAMS = {}  # --set NAME=VALUE: parameters of the sklat rows


def parse_set(items):
    """``["name=value", ...]`` -> ``{name: Python literal value}``."""
    params = {}
    for item in items:
        name, _, value = item.partition("=")
        params[name] = ast.literal_eval(value)
    return params


def methods(seed):
    """name -> (factory, fraction of training requests with per-step data)."""
    sk = lambda: LatencyEstimator(random_state=seed, **SKLAT_PARAMS)  # noqa: E731
    return {
        "sklat (totals only)": (sk, 0.0),
        "sklat (+10% steps)": (sk, 0.1),
        "sklat (+50% steps)": (sk, 0.5),
        "flat average (GBM)": (FlatAverage, 0.0),
        "total GBM S(N)-S(N-1)": (TotalGBM, 0.0),
        "aggregated linear": (AggregatedLinear, 0.0),
        "aggregated linear (products)": (lambda: AggregatedLinear(config_basis="products"), 0.0),
        "per-step oracle (GBM)": (PerStepOracle, 1.0),
        # sklat's own model fitted to every step: the same model class's floor.
        "per-step oracle (sklat)": (
            lambda: LatencyEstimator(
                **{
                    "random_state": seed,
                    **SKLAT_PARAMS,
                    "decode_total_weight": 0.0,
                    "positioned_weight": 1.0,
                }
            ),
            1.0,
        ),
    }


def _true_totals(data, X, n):
    """Noiseless total decode latency: the true curve summed over 1..N."""
    curve = data.true_curve(X, np.arange(1, n.max() + 1))
    return np.cumsum(curve, axis=1)[np.arange(len(n)), n - 1]


def _padded(steps, n):
    out = np.ones((len(n), n.max()))
    for i, s in enumerate(steps):
        out[i, : n[i]] = s
    return out


def evaluate(data, train_rows, test_rows, *, seed=0, only=None, late_from=None):
    """Fit every method on ``train_rows`` of ``data``, score on ``test_rows``;
    with ``late_from``, also the positioned error past that position."""
    has_steps = all(s is not None for s in data.positioned_latencies)
    X_test = data.X.iloc[test_rows]
    n_test = data.output_tokens[test_rows]
    y_test = data.y.to_numpy()[test_rows]
    measured = (
        _padded([data.positioned_latencies[i] for i in test_rows], n_test) if has_steps else None
    )
    rows = []
    for name, (factory, fraction) in methods(seed).items():
        if only and not any(o in name for o in only):
            continue
        if fraction > 0 and not has_steps:
            continue  # needs per-step measurements the data set lacks
        start = time.perf_counter()
        model = factory().fit(
            data.X.iloc[train_rows],
            data.y.to_numpy()[train_rows],
            data.output_tokens[train_rows],
            _with_steps(data, train_rows, fraction, seed),
        )
        fit_seconds = time.perf_counter() - start
        row = {
            "method": name,
            "total MAPE": mape(model.predict_total(X_test, n_test), y_test[:, 1]),
            "prefill MAPE": mape(model.predict_prefill(X_test), y_test[:, 0]),
        }
        if measured is not None:
            row["pos. MAPE (measured)"] = positioned_mape(
                model, X_test, n_test, lambda p: measured[:, : len(p)]
            )
            if late_from is not None:
                row[f"pos. MAPE past {late_from - 1}"] = positioned_mape(
                    model, X_test, n_test, lambda p: measured[:, : len(p)], first=late_from
                )
        if data.true_curve is not None:
            row["pos. MAPE (truth)"] = positioned_mape(
                model, X_test, n_test, lambda p: data.true_curve(X_test, p)
            )
            row["total MAPE (truth)"] = mape(
                model.predict_total(X_test, n_test), _true_totals(data, X_test, n_test)
            )
        row["fit s"] = fit_seconds
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def _concat(a, b):
    """One data set from a training and a test draw (rows: a then b)."""
    import sklearn.utils

    return sklearn.utils.Bunch(
        X=pd.concat([a.X, b.X], ignore_index=True),
        y=pd.concat([a.y, b.y], ignore_index=True),
        output_tokens=np.concatenate([a.output_tokens, b.output_tokens]),
        positioned_latencies=list(a.positioned_latencies) + list(b.positioned_latencies),
        true_curve=a.true_curve,
    )


def synthetic(curve, noise, n_train, seed=0, n_test=1000):
    make = lambda n, s: make_positioned_latency(  # noqa: E731
        n, noise=noise, curve=curve, positioned_fraction=1.0, random_state=s
    )
    data = _concat(make(n_train, seed), make(n_test, seed + 1000))
    return data, np.arange(n_train), np.arange(n_train, n_train + n_test)


def vidur(n_train, seed=0, n_test=1000):
    data = _concat(
        vidur_requests(n_train, random_state=seed), vidur_requests(n_test, random_state=seed + 1000)
    )
    return data, np.arange(n_train), np.arange(n_train, n_train + n_test)


def profiled_splits(data, seeds=(0,), test_fraction=0.3, short=250, long=500):
    """``(title, [(train rows, test rows), ...], late_from)`` of a measured set:
    seeded splits by request (one per seed), and an extrapolation split (train
    on N <= short, test on N > long, scoring positions past ``short`` too)."""
    n = len(data.output_tokens)
    n_test = int(round(test_fraction * n))
    orders = [np.random.RandomState(seed).permutation(n) for seed in seeds]
    yield (
        f"by request ({n - n_test} train / {n_test} test"
        + (
            f", mean over split seeds {', '.join(map(str, seeds))})"
            if len(seeds) > 1
            else f", split seed {seeds[0]})"
        ),
        [(np.sort(o[n_test:]), np.sort(o[:n_test])) for o in orders],
        None,
    )
    tr = np.flatnonzero(data.output_tokens <= short)
    te = np.flatnonzero(data.output_tokens > long)
    if not len(tr) or not len(te):
        return  # the set has no requests on one side (e.g. no output past `long`)
    yield (
        f"extrapolation (train N <= {short}: {len(tr)}, test N > {long}: {len(te)})",
        [(tr, te)],
        short + 1,
    )


def _print(title, table):
    print(f"\n## {title}")
    print(table.round(2).to_markdown())
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one synthetic family and noise level only"
    )
    parser.add_argument("--sizes", default="300,3000")
    parser.add_argument("--data", default="synthetic,vidur,splitwise,profiled")
    parser.add_argument("--curves", default="saturating,linear,mixed")
    parser.add_argument(
        "--noises", default="0,0.05,0.15", help="comma-separated noise levels of the synthetic data"
    )
    parser.add_argument(
        "--sets",
        default=None,
        help="comma-separated measured sets under benchmarks/data "
        "(default: all) for --data profiled",
    )
    parser.add_argument(
        "--split_seeds",
        default="0,1,2",
        help="seeds of the by-request splits of the measured sets (the table is their mean)",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated substrings of method names to run"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a LatencyEstimator parameter of the sklat rows (Python literal value)",
    )
    args = parser.parse_args(argv)
    SKLAT_PARAMS.update(parse_set(args.set))
    sizes = [int(s) for s in args.sizes.split(",")]
    only = args.only.split(",") if args.only else None
    which = args.data.split(",")
    pd.set_option("display.width", 200)
    if "synthetic" in which:
        curves = ["saturating"] if args.quick else args.curves.split(",")
        noises = [0.05] if args.quick else [float(v) for v in args.noises.split(",")]
        for curve in curves:
            for noise in noises:
                for n in sizes:
                    data, tr, te = synthetic(curve, noise, n)
                    _print(
                        f"synthetic {curve}, noise {noise:.0%}, {n} training requests",
                        evaluate(data, tr, te, only=only),
                    )
    if "vidur" in which:
        for n in sizes:
            data, tr, te = vidur(n)
            _print(
                f"Vidur A100 Llama-2-7B kernel curves, noise 5%, {n} training requests",
                evaluate(data, tr, te, only=only),
            )
    if "profiled" in which:
        for name in args.sets.split(",") if args.sets else profiled_sets():
            data = profiled_requests(name)
            seeds = [int(v) for v in args.split_seeds.split(",")]
            for title, splits, late in profiled_splits(data, seeds=seeds):
                tables = [evaluate(data, tr, te, only=only, late_from=late) for tr, te in splits]
                _print(f"measured {name}: {title}", sum(tables) / len(tables))
    if "splitwise" in which:
        data = splitwise_requests()
        folds = [
            evaluate(data, tr, te, only=only)
            for tr, te in KFold(5, shuffle=True, random_state=0).split(data.X)
        ]
        _print(
            f"Splitwise real runs (totals only, {len(data.X)} requests, output <= 256 "
            "tokens), 5-fold CV, mean over folds",
            sum(folds) / len(folds),
        )
        tr = np.flatnonzero(data.token_size == 128)
        te = np.flatnonzero(data.token_size == 256)
        _print(
            f"Splitwise: train on 128-token requests ({len(tr)}), predict the "
            f"unseen 256-token totals ({len(te)})",
            evaluate(data, tr, te, only=only),
        )


if __name__ == "__main__":
    main()
