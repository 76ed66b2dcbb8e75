"""Learn the per-position curve from totals only, and plot it against the truth.

Run: ``python examples/plot_learnt_curve.py [OUTPUT.png]``.
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sklat import LatencyEstimator  # noqa: E402
from sklat.datasets import make_positioned_latency  # noqa: E402
from sklat.plotting import LatencyCurveDisplay  # noqa: E402

train = make_positioned_latency(1500, noise=0.05, random_state=0)
est = LatencyEstimator(random_state=0).fit(
    train.X, train.y, output_tokens=train.output_tokens
)  # totals only

test = make_positioned_latency(3, noise=0.0, random_state=1)
positions = np.arange(1, 101)
truth = test.true_curve(test.X, positions)
display = LatencyCurveDisplay.from_estimator(
    est, test.X, positions=positions, reference=truth, labels=[f"config {i}" for i in range(3)]
)
display.ax_.set_title("Learnt from totals only (solid) vs. true curve (dashed)")

learnt = est.predict_positions(test.X, positions)
print(f"mean relative error of the learnt curve: {np.mean(np.abs(learnt - truth) / truth):.2%}")
out = sys.argv[1] if len(sys.argv) > 1 else "learnt_curve.png"
display.figure_.savefig(out, dpi=100)
plt.close(display.figure_)
print(f"wrote {out}")
