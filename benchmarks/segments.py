"""What streamed events teach: segments against totals, the naive conversion
and per-step data, on the measured per-step sets.

Run: ``python benchmarks/segments.py [--sets NAMES] [--seeds 0,1,2]
[--fixed_length 128]``; prints one Markdown table per set and way of cutting.

Each training request's measured steps are grouped into the events a
streaming server would send: one token per event; 1-4 tokens per event as
speculative decoding accepts them (uniform, seeded); fixed stream intervals of
4 and 8 tokens. Then sklat (default parameters) trains from

- (a) totals only;
- (b) segments: the events' token counts and times (``decode_segments``);
- (c) the naive conversion: each gap taken as one token's step
  (``output_tokens`` = events, ``positioned_latencies`` = gaps);
- (d) per-step data (``positioned_latencies``, every step).

With ``--synthetic``, also the design's saturating family (synthetic, a
strongly shaped start-up curve), scored against its noiseless curve.

Twice: with the sets' mixed output lengths, and with every training request
cut to its first ``--fixed_length`` steps (as ``--random-output-len`` runs
produce; shorter requests leave the training set). The score is positioned
MAPE on held-out requests (split by request, 30%) against their measured
steps (all of them with mixed lengths; the first ``--fixed_length`` with cut
training requests, the positions the training saw), the mean over split
seeds.
"""

import argparse
import time

import numpy as np

from _common import profiled_requests, profiled_sets  # noqa: E402

from sklat import LatencyEstimator, metrics  # noqa: E402

GROUPINGS = {
    "1 token/event": lambda n, rng: np.ones(n, dtype=np.int64),
    "1-4 tokens/event": lambda n, rng: _fill(n, lambda: rng.randint(1, 5)),
    "interval 4": lambda n, rng: _fill(n, lambda: 4),
    "interval 8": lambda n, rng: _fill(n, lambda: 8),
}


def _fill(n, draw):
    """Event sizes covering ``n`` tokens, the last one cut to fit."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(min(draw(), n - sum(sizes)))
    return np.asarray(sizes, dtype=np.int64)


def _events(steps, sizes):
    ends = np.cumsum(sizes)
    return sizes, np.add.reduceat(steps, ends - sizes)


def training_inputs(data, rows, method, grouping, rng, fixed_length=None):
    """``(X, y, fit keyword arguments)`` for one way of training."""
    X, y = data.X.iloc[rows], data.y.iloc[rows].copy()
    n = data.output_tokens[rows].copy()
    steps = [np.asarray(data.positioned_latencies[i]) for i in rows]
    if fixed_length is not None:
        keep = n >= fixed_length
        X, y, n = X[keep], y[keep], np.full(keep.sum(), fixed_length)
        steps = [s[:fixed_length] for s, k in zip(steps, keep) if k]
        y["T_LLM_decode"] = [s.sum() for s in steps]
    if method == "totals":
        return X, y, {"output_tokens": n}
    if method == "per-step":
        return X, y, {"output_tokens": n, "positioned_latencies": steps}
    events = [_events(s, GROUPINGS[grouping](len(s), rng)) for s in steps]
    if method == "segments":
        return X, y, {"output_tokens": n, "decode_segments": events}
    # naive: each gap taken as one token's step
    return (
        X,
        y,
        {
            "output_tokens": np.array([len(ms) for _, ms in events]),
            "positioned_latencies": [ms for _, ms in events],
        },
    )


def synthetic():
    """The design's saturating family with per-step data and its true curve."""
    from sklat.datasets import make_positioned_latency

    return make_positioned_latency(300, noise=0.05, positioned_fraction=1.0, random_state=0)


def score(est, data, rows, limit=None):
    """Positioned MAPE of the held-out ``rows`` over their positions
    ``1..min(N, limit)``."""
    n = data.output_tokens[rows]
    if limit is not None:
        n = np.minimum(n, limit)
    curves = est.predict_positions(data.X.iloc[rows], np.arange(1, n.max() + 1))
    steps = [data.positioned_latencies[i] for i in rows]
    if getattr(data, "true_curve", None) is not None:
        from sklat.datasets import true_decode_curve

        # Against the noiseless truth: what the curve learnt, without step jitter.
        steps = true_decode_curve(data.X.iloc[rows], np.arange(1, n.max() + 1))
    return metrics.positioned_mape(steps, curves, output_tokens=n)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=None, help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fixed_length", type=int, default=128)
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="also the design's saturating family (300 requests, 5%% step noise), "
        "scored against its noiseless curve as well",
    )
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    import warnings

    from sklat.exceptions import ExtrapolationWarning

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ExtrapolationWarning)
    warnings.simplefilter("ignore", ConvergenceWarning)
    # --sets "" with --synthetic runs the synthetic family alone.
    names = profiled_sets() if args.sets is None else [n for n in args.sets.split(",") if n]
    for name in names + (["synthetic saturating"] if args.synthetic else []):
        data = synthetic() if name == "synthetic saturating" else profiled_requests(name)
        m = len(data.output_tokens)
        for cut in (None, args.fixed_length):
            table = {}
            start = time.perf_counter()
            for seed in seeds:
                order = np.random.RandomState(seed).permutation(m)
                n_test = int(round(0.3 * m))
                test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
                for grouping in GROUPINGS:
                    for method in ("totals", "segments", "naive", "per-step"):
                        if method in ("totals", "per-step") and grouping != "1 token/event":
                            continue  # the events do not change these
                        rng = np.random.RandomState(seed)
                        X, y, kw = training_inputs(data, train, method, grouping, rng, cut)
                        est = LatencyEstimator(random_state=seed).fit(X, y, **kw)
                        key = method if method in ("totals", "per-step") else (method, grouping)
                        table.setdefault(key, []).append(score(est, data, test, cut))
            how = "mixed lengths" if cut is None else f"training requests cut to {cut} steps"
            n_train = len(train) if cut is None else int((data.output_tokens[train] >= cut).sum())
            print(
                f"\n## {name}, {how} ({n_train} training requests, seeds {args.seeds}, "
                f"{time.perf_counter() - start:.0f} s)\n"
            )
            print("| events | (a) totals | (b) segments | (c) naive | (d) per-step | (b)/(d) |")
            print("|---|---|---|---|---|---|")
            a, d = np.mean(table["totals"]), np.mean(table["per-step"])
            for grouping in GROUPINGS:
                b, c = np.mean(table[("segments", grouping)]), np.mean(table[("naive", grouping)])
                print(f"| {grouping} | {a:.2f} | {b:.2f} | {c:.2f} | {d:.2f} | {b / d:.3f} |")


if __name__ == "__main__":
    main()
