"""Accuracy of sklat against peers on synthetic families and real data.

Run: ``python benchmarks/accuracy.py [--quick]``; prints one table per data set.
Metrics (percent): total-decode MAPE, prefill MAPE, positioned MAPE against the
measured (noisy) steps and against the noiseless truth (synthetic data only):
per request, the mean over its steps of ``|pred - ref| / ref``, averaged.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import AggregatedLinear, FlatAverage, PerStepOracle, TotalGBM  # noqa: E402

from sklat import LatencyEstimator  # noqa: E402
from sklat.datasets import make_positioned_latency  # noqa: E402


def positioned_mape(model, X, output_tokens, reference):
    """Mean over requests of the mean relative per-step error (percent).

    ``reference(rows, positions)`` gives the reference per-step latencies.
    """
    n = np.asarray(output_tokens)
    positions = np.arange(1, n.max() + 1)
    pred = model.predict_positions(X, positions)
    ref = reference(positions)
    mask = positions[None, :] <= n[:, None]
    err = np.where(mask, np.abs(pred - ref) / np.where(mask, ref, 1.0), 0.0)
    return 100 * float(np.mean(err.sum(axis=1) / n))


def mape(pred, true):
    return 100 * float(np.mean(np.abs(pred - true) / true))


def _with_steps(data, fraction, seed):
    rng = np.random.RandomState(seed)
    keep = rng.uniform(size=len(data.output_tokens)) < fraction
    return [s if k else None for s, k in zip(data.positioned_latencies, keep)]


def methods(seed):
    """name -> (model factory, fraction of training requests with steps)."""
    sk = lambda: LatencyEstimator(random_state=seed)  # noqa: E731
    return {
        "sklat (totals only)": (sk, 0.0),
        "sklat (+10% steps)": (sk, 0.1),
        "sklat (+50% steps)": (sk, 0.5),
        "flat average (GBM)": (FlatAverage, 0.0),
        "total GBM S(N)-S(N-1)": (TotalGBM, 0.0),
        "aggregated linear": (AggregatedLinear, 0.0),
        "per-step oracle": (PerStepOracle, 1.0),
    }


def run_synthetic(curve, noise, n_train, seed=0, n_test=1000, only=None):
    train = make_positioned_latency(n_train, noise=noise, curve=curve,
                                    positioned_fraction=1.0, random_state=seed)
    test = make_positioned_latency(n_test, noise=noise, curve=curve,
                                   positioned_fraction=1.0, random_state=seed + 1000)
    measured_test = _padded_steps(test)
    rows = []
    for name, (factory, fraction) in methods(seed).items():
        if only and not any(o in name for o in only):
            continue
        start = time.perf_counter()
        model = factory()
        model.fit(train.X, train.y.to_numpy(), train.output_tokens,
                  _with_steps(train, fraction, seed))
        fit_s = time.perf_counter() - start
        rows.append({
            "method": name,
            "total MAPE": mape(model.predict_total(test.X, test.output_tokens),
                               test.y["T_LLM_decode"].to_numpy()),
            "prefill MAPE": mape(model.predict_prefill(test.X),
                                 test.y["T_prefill_total"].to_numpy()),
            "pos. MAPE (measured)": positioned_mape(
                model, test.X, test.output_tokens,
                lambda p: measured_test[:, :len(p)]),
            "pos. MAPE (truth)": positioned_mape(
                model, test.X, test.output_tokens, lambda p: test.true_curve(test.X, p)),
            "fit s": fit_s,
        })
    return pd.DataFrame(rows).set_index("method")


def _padded_steps(data):
    n = data.output_tokens
    out = np.ones((len(n), n.max()))
    for i, steps in enumerate(data.positioned_latencies):
        out[i, :n[i]] = steps
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one noise level and family only")
    parser.add_argument("--sizes", default="300,3000")
    parser.add_argument("--only", default=None,
                        help="comma-separated substrings of method names to run")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    curves = ["saturating"] if args.quick else ["saturating", "linear", "mixed"]
    noises = [0.05] if args.quick else [0.0, 0.05, 0.15]
    only = args.only.split(",") if args.only else None
    pd.set_option("display.width", 200)
    for curve in curves:
        for noise in noises:
            for n in sizes:
                table = run_synthetic(curve, noise, n, only=only)
                print(f"\n## synthetic {curve}, noise {noise:.0%}, {n} training requests")
                print(table.round(2).to_markdown())
                sys.stdout.flush()


if __name__ == "__main__":
    main()
