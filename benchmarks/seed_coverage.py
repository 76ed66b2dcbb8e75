"""Coverage of sklat's 90% decode-total intervals on the seed-curve family
(``sklat.datasets.make_positioned_latency``: noise 5%, totals only, default
parameters), held-out requests, over split seeds.

Run: ``python benchmarks/seed_coverage.py [--sizes 300,2000] [--seeds 0,1,2,3,4]
[--curves saturating,linear]``. For each size, curve and seed: the data seed,
a random 25% held out, the model fitted with defaults (``random_state`` the
seed) on the rest; prints the share of held-out decode totals inside their
90% intervals, and the mean over the seeds.
"""

import argparse
import warnings

import numpy as np
import pandas as pd

from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency
from sklat.metrics import interval_coverage


def coverage(size, curve, seed, confidence=0.9):
    data = make_positioned_latency(size, noise=0.05, curve=curve, random_state=seed)
    order = np.random.default_rng(seed).permutation(size)
    held, train = order[: size // 4], order[size // 4 :]
    est = LatencyEstimator(random_state=seed, n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(data.X.iloc[train], data.y.iloc[train], output_tokens=data.output_tokens[train])
        bounds = est.predict_interval(
            data.X.iloc[held], data.output_tokens[held], confidence=confidence
        )
    decode = data.y["T_LLM_decode"].to_numpy()[held]
    return 100 * interval_coverage(decode, bounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="300,2000")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--curves", default="saturating")
    args = parser.parse_args()
    rows = []
    for size in [int(v) for v in args.sizes.split(",")]:
        for curve in args.curves.split(","):
            values = [coverage(size, curve, int(s)) for s in args.seeds.split(",")]
            rows.append(
                {
                    "requests": size,
                    "curve": curve,
                    **{f"seed {s}": round(v, 1) for s, v in zip(args.seeds.split(","), values)},
                    "mean": round(float(np.mean(values)), 1),
                }
            )
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
