"""Learnt curves against measured steps on a measured set: the figure of the
"profile, train, predict" page.

Run: ``python benchmarks/plot_profiled.py [--set llama_dense_eager]
[--output docs/_static/profiled_curves.png]``. Trains ``LatencyEstimator(random_state=0)``
on the totals of the by-request training split (no per-step data) and draws, for
the longest held-out request of a few configurations, the learnt curve over the
measured steps of that request (points; a running median as a thin line).
"""

import argparse
from pathlib import Path

import numpy as np

from accuracy import profiled_splits  # noqa: E402
from _common import profiled_requests  # noqa: E402

from sklat import LatencyEstimator  # noqa: E402
from sklat.plotting import LatencyCurveDisplay  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="llama_dense_eager")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "docs" / "_static" / "profiled_curves.png",
    )
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = profiled_requests(args.set)
    _, [(train, test)], _ = next(profiled_splits(data, seeds=(0,)))
    est = LatencyEstimator(random_state=0).fit(
        data.X.iloc[train], data.y.iloc[train], output_tokens=data.output_tokens[train]
    )
    # The longest held-out request of each configuration, four of them spread
    # over the per-token latency.
    frame = data.X.iloc[test].assign(n=data.output_tokens[test], row=test)
    longest = frame.sort_values("n").groupby(list(data.X.columns)).tail(1)
    longest = longest[longest["n"] >= 400]
    level = data.y["T_LLM_decode"].to_numpy()[longest["row"]] / longest["n"].to_numpy()
    picks = longest["row"].to_numpy()[np.argsort(level)][
        np.linspace(0, len(longest) - 1, 4).round().astype(int)
    ]
    measured = [data.positioned_latencies[i] for i in picks]
    positions = np.arange(1, max(len(m) for m in measured) + 1)
    labels = [
        ", ".join(
            f"{c}={data.X.iloc[i][c]:g}"
            for c in data.X.columns
            if data.X.iloc[i][c] or c != "vision_tokens"
        )
        for i in picks
    ]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    disp = LatencyCurveDisplay.from_estimator(
        est,
        data.X.iloc[picks],
        positions=positions,
        measured=measured,
        labels=labels,
        ax=ax,
        measured_kw={"s": 3, "alpha": 0.25},
    )
    for steps, line in zip(measured, disp.lines_):
        window = 25
        running = np.array(
            [np.median(steps[max(0, i - window) : i + window + 1]) for i in range(len(steps))]
        )
        ax.plot(np.arange(1, len(steps) + 1), running, lw=0.8, ls=":", color=line.get_color())
    ax.set_title(
        f"{args.set}: learnt from totals (lines) vs measured steps of held-out "
        "requests\n(points; dotted: running median)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
