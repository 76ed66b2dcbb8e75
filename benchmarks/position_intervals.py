"""Coverage and width of per-position intervals (``target="position"``) on
held-out requests whose every step is measured.

Synthetic requests with per-step data (``make_positioned_latency``, 5% noise,
N <= 128): the model is fitted on the first 400 of 600 requests and every step
of the other 200 is scored against its interval at 80 and 90%. Run from the
repository root::

    python benchmarks/position_intervals.py --seeds 0,1,2
"""

import argparse
import warnings

import numpy as np
import pandas as pd

from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency

LEVELS = (0.8, 0.9)


def measure(seed):
    d = make_positioned_latency(
        n_samples=600,
        noise=0.05,
        random_state=seed,
        positioned_fraction=1.0,
        max_output_tokens=128,
    )
    train, test = np.arange(400), np.arange(400, 600)
    est = LatencyEstimator(random_state=0).fit(
        d.X.iloc[train],
        d.y.iloc[train],
        output_tokens=d.output_tokens[train],
        positioned_latencies=[d.positioned_latencies[i] for i in train],
    )
    rows = []
    for level in LEVELS:
        hits = widths = steps_seen = 0.0
        for i in test:
            steps = np.asarray(d.positioned_latencies[i])
            positions = np.arange(1, len(steps) + 1)
            bounds = est.predict_interval(
                d.X.iloc[[i]], target="position", positions=positions, confidence=level
            )[0]
            hits += np.sum((bounds[:, 0] <= steps) & (steps <= bounds[:, 1]))
            widths += np.sum(bounds[:, 1] - bounds[:, 0])
            steps_seen += len(steps)
        rows.append(
            {
                "seed": seed,
                "level": level,
                "coverage %": round(100 * hits / steps_seen, 2),
                "mean width ms": round(widths / steps_seen, 3),
                "decode point factor": round(float(est.point_factors_[0]), 4),
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = [row for seed in args.seeds.split(",") for row in measure(int(seed))]
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
