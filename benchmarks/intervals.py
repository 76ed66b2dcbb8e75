"""Calibrated intervals and SLO attainment of sklat against the peers a user
would pick instead.

Run: ``python benchmarks/intervals.py [--quick] [--data synthetic,vidur,splitwise,profiled]
[--test_split request|configuration] [--repeats R] [--no_joint] [--save DIR] [--cost_only]``
(``--from_saved DIR`` prints the interval tables again from saved bounds);
prints Markdown tables (coverage and mean width of the decode-total interval at
80/90/95%, overall and by output-length quartile of the held-out requests; the
mean width of each method where its actual coverage reaches 80/90/95%, from a
sweep of levels 0.50 to 0.98, over sklat's with its jackknife standard error
over the repeats, and the coverage of the longest output-length quartile there;
the mean width at the lowest level where every output-length quartile is covered too;
SLO attainment Brier score and calibration; the cost of an interval).

Methods, all fitted on the same training requests and scored on the same
held-out requests, ``N`` known:

- ``sklat``: ``LatencyEstimator.predict_interval`` (split conformal on its own
  ``calibration_fraction`` of the training requests, normalised scores), the
  estimator fitted on the decode total alone, as the MAPIE peers wrap it;
- ``sklat (with prefill head)``: the same fitted on ``[T_prefill_total,
  T_LLM_decode]`` (the joint loss; its SLO attainment is the table below);
- ``MAPIE split (absolute)`` / ``MAPIE split (gamma)``: MAPIE's
  ``SplitConformalRegressor`` around the same estimator (``output_tokens`` as a
  column, ``calibration_fraction=0``, ``point="center"``: the centre sklat's
  intervals are built around), conformalised on the same share of the
  training requests, with absolute or relative (``gamma``) scores;
- ``LightGBM quantile``: two quantile regressions per level on
  ``(config, N) -> total`` over all training requests (not calibrated);
- ``true noise law`` (the synthetic sets and Vidur, whose requests are drawn
  from a known curve and noise): each held-out request's central
  interval under the law that generated it (no model, no calibration): every
  request is covered at the nominal level, long and short alike. A method
  narrower than it at the same pooled coverage covers some requests less.
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from _common import (  # noqa: E402
    LGBM_PARAMS,
    configurations,
    profiled_requests,
    profiled_sets,
    splitwise_requests,
    vidur_requests,
)

from sklat import ExtrapolationWarning, LatencyEstimator  # noqa: E402
from sklat.datasets import make_positioned_latency  # noqa: E402
from sklat.metrics import interval_coverage, mean_interval_width  # noqa: E402

CONFIDENCES = (0.8, 0.9, 0.95)
# Levels of the interval swept to compare widths at the same coverage: each
# method's mean width is read off where its own coverage crosses a target.
LEVELS = tuple(round(0.5 + 0.01 * i, 2) for i in range(49))  # 0.50 ... 0.98
CALIBRATION = 0.2
# Log-normal noise of the request factors and steps of the sets drawn from a
# known curve (the synthetic sets and Vidur).
SYNTHETIC_NOISE = 0.05


def _estimator(seed, quick, **params):
    return LatencyEstimator(random_state=seed, **({"max_epochs": 40} if quick else {}), **params)


def sklat_intervals(data, train, test, seed, quick, calibration, target="decode"):
    """Interval bounds of sklat fitted on the decode total alone (``target=
    "decode"``: the point model the MAPIE peers wrap) or with its prefill
    head (``"both"``), and the estimator."""
    est = _estimator(seed, quick, calibration_fraction=calibration)
    y = data.y.iloc[train] if target == "both" else data.y["T_LLM_decode"].iloc[train]
    est.fit(data.X.iloc[train], y, output_tokens=data.output_tokens[train])
    X, n = data.X.iloc[test], data.output_tokens[test]
    bounds = np.stack([est.predict_interval(X, n, confidence=c) for c in LEVELS], axis=2)
    return bounds, est


def mapie_intervals(data, train, test, seed, quick, calibration, score):
    from mapie.regression import SplitConformalRegressor

    rng = np.random.RandomState(seed + 7)
    order = rng.permutation(train)
    n_cal = int(calibration * len(train))
    cal, fit = np.sort(order[:n_cal]), np.sort(order[n_cal:])

    def with_n(rows):
        return data.X.iloc[rows].assign(output_tokens=data.output_tokens[rows])

    decode = data.y["T_LLM_decode"].to_numpy()
    # A level whose bound needs a rank beyond the calibration requests (the
    # highest swept levels on the measured sets' 40-60) gets split
    # conformal's answer, the infinite interval. MAPIE returns it for the
    # one-sided quantiles of gamma scores (allow_infinite_bounds) but raises
    # for absolute ones, so those levels are filled in here.
    finite = [c for c in LEVELS if np.ceil((n_cal + 1) * c - 1e-9) <= n_cal]
    model = SplitConformalRegressor(
        # The centre sklat's own intervals are built around (not the relative
        # point below it): what is compared is the calibration.
        _estimator(seed, quick, calibration_fraction=0.0, point="center"),
        confidence_level=finite,
        conformity_score=score,
        prefit=False,
    )
    model.fit(with_n(fit), decode[fit])
    model.conformalize(with_n(cal), decode[cal])
    bounds = np.full((len(test), 2, len(LEVELS)), np.inf)
    bounds[:, 0] = -np.inf
    bounds[..., : len(finite)] = model.predict_interval(with_n(test), allow_infinite_bounds=True)[1]
    return bounds


def lightgbm_intervals(data, train, test, seed):
    from lightgbm import LGBMRegressor

    def design(rows):
        return data.X.iloc[rows].assign(output_tokens=data.output_tokens[rows]).to_numpy()

    decode = data.y["T_LLM_decode"].to_numpy()
    out = np.empty((len(test), 2, len(CONFIDENCES)))
    for j, c in enumerate(CONFIDENCES):
        for side, q in enumerate(((1 - c) / 2, (1 + c) / 2)):
            model = LGBMRegressor(
                objective="quantile", alpha=q, **LGBM_PARAMS, random_state=seed, verbose=-1
            )
            model.fit(design(train), decode[train])
            out[:, side, j] = model.predict(design(test))
    out.sort(axis=1)  # quantile crossings
    return out


def _drawn_from_a_known_law(name):
    return name.startswith("synthetic") or name == "vidur"


def true_law_intervals(data, test, levels=LEVELS):
    """(len(test), 2, len(levels)) central intervals of the held-out requests'
    decode totals under the law that generated them.

    ``make_positioned_latency`` and ``vidur_requests`` draw a total as
    ``f * sum_p t_p e_p``: ``t_p`` the true curve at positions 1..N, ``f`` and
    every ``e_p`` log-normal of sigma ``SYNTHETIC_NOISE``. The sum is matched
    to a log-normal by its mean and variance (exact for N = 1, and the steps'
    share of the spread shrinks as 1/N), so ``log total`` is normal: the
    bounds are its median times ``exp(+-z sd)``. Equal tails: the shortest
    interval of a log-normal this narrow is shorter by a fraction of order
    ``sd**2`` (at most 0.25% here).
    """
    X, lengths = data.X.iloc[test], data.output_tokens[test]
    first, second = np.empty(len(test)), np.empty(len(test))
    for k, length in enumerate(lengths):
        t = data.true_curve(X.iloc[[k]], np.arange(1, length + 1))[0]
        first[k], second[k] = t.sum(), (t**2).sum()
    var = SYNTHETIC_NOISE**2
    mean = np.exp(var / 2) * first
    spread = np.log1p(np.exp(var) * np.expm1(var) * second / mean**2)
    median = np.log(mean) - spread / 2
    sd = np.sqrt(var + spread)[:, None]
    z = norm.ppf(0.5 + np.asarray(levels) / 2)[None, :]
    return np.stack([np.exp(median[:, None] - z * sd), np.exp(median[:, None] + z * sd)], axis=1)


def _buckets(n):
    edges = np.unique(np.quantile(n, [0, 0.25, 0.5, 0.75, 1]))
    index = np.clip(np.searchsorted(edges, n, side="right") - 1, 0, len(edges) - 2)
    labels = [
        f"N {int(edges[b])}-{int(edges[b + 1]) - (b < len(edges) - 2)}"
        for b in range(len(edges) - 1)
    ]
    return index, labels


def coverage_rows(name, y, n, bounds, levels):
    """Table rows: overall and per N quartile, coverage (%) and width at the
    levels of ``CONFIDENCES`` (``bounds[..., j]`` is the interval at
    ``levels[j]``)."""
    columns = [levels.index(c) for c in CONFIDENCES]
    bounds = bounds[..., columns]
    index, labels = _buckets(n)
    rows = []
    for label, sel in [("all", np.ones(len(y), bool))] + [
        (lab, index == b) for b, lab in enumerate(labels)
    ]:
        cov = interval_coverage(y[sel], bounds[sel])
        width = mean_interval_width(bounds[sel])
        row = {"method": name, "requests": label, "n": int(sel.sum())}
        for j, c in enumerate(CONFIDENCES):
            row[f"cov {c:.0%}"] = round(100 * cov[j], 1)
        for j, c in enumerate(CONFIDENCES):
            row[f"width {c:.0%} (ms)"] = float(f"{width[j]:.4g}")
        rows.append(row)
    return rows


def at_coverage(y, bounds, longest, targets=CONFIDENCES):
    """Where the method's own coverage reaches each target, read off its
    sweep over ``LEVELS`` (linear between the two levels whose coverage
    brackets the target; nan outside the swept range): the mean width, and
    the coverage of the ``longest`` requests (a mask) there. Methods whose
    coverage falls short of, or exceeds, the nominal level are compared at
    the coverage they actually reach: the level is tuned on the test requests
    alike for every method, so what is compared is the intervals' shape."""
    coverage = interval_coverage(y, bounds)
    on_longest = interval_coverage(y[longest], bounds[longest])
    # Infinite at a level too high for the calibration requests (MAPIE's).
    width = np.mean(bounds[:, 1] - bounds[:, 0], axis=0)
    # Coverage is nondecreasing in the level up to ties of the pooled draws;
    # the running maximum keeps np.interp's abscissae sorted.
    coverage = np.maximum.accumulate(coverage)
    widths, longest_coverage = [], []
    for t in targets:
        inside = coverage[0] <= t <= coverage[-1]
        widths.append(float(np.interp(t, coverage, width)) if inside else np.nan)
        longest_coverage.append(float(np.interp(t, coverage, on_longest)) if inside else np.nan)
    return np.array(widths), np.array(longest_coverage)


def matched_rows(name, y, n, pooled, sizes):
    """One row per method: its mean width at 80 / 90 / 95% actual coverage;
    over the first method's (sklat's) at the same coverage, with the
    jackknife standard error over the repeats (``sizes``: the held-out
    requests of each, in order); and the coverage of the held-out requests
    of the longest output-length quartile there."""
    index, _ = _buckets(n)
    longest = index == index.max()
    bounds = {
        method: np.concatenate(parts)
        for method, (levels, parts) in pooled.items()
        if levels == LEVELS
    }
    found = {method: at_coverage(y, b, longest) for method, b in bounds.items()}
    reference = next(iter(bounds))
    ratio_se = {}
    if len(sizes) > 1:
        repeat = np.repeat(np.arange(len(sizes)), sizes)
        # Each method's pooled widths with each repeat left out in turn.
        left_out = {
            method: np.array(
                [
                    at_coverage(y[keep], b[keep], longest[keep])[0]
                    for keep in (repeat != r for r in range(len(sizes)))
                ]
            )
            for method, b in bounds.items()
        }
        for method, widths in left_out.items():
            ratio = widths / left_out[reference]
            spread = ratio - ratio.mean(axis=0)
            ratio_se[method] = np.sqrt((len(sizes) - 1) * np.mean(spread**2, axis=0))
    rows = []
    for method, (widths, on_longest) in found.items():
        row = {"data": name, "method": method}
        for c, value in zip(CONFIDENCES, widths):
            row[f"width at {c:.0%} covered (ms)"] = float(f"{value:.4g}")
        se = ratio_se.get(method, np.full(len(CONFIDENCES), np.nan))
        for j, (c, value, ref) in enumerate(zip(CONFIDENCES, widths, found[reference][0])):
            row[f"over sklat at {c:.0%} (s.e.)"] = f"{value / ref:.3f} ({se[j]:.3f})"
        for c, value in zip(CONFIDENCES, on_longest):
            row[f"longest N quartile covered at {c:.0%} (%)"] = round(100 * value, 1)
        rows.append(row)
    return rows


def quartile_matched_rows(name, y, n, pooled):
    """One row per method: its mean width (over all held-out requests) at the
    lowest swept level where its coverage reaches 80 / 90 / 95% on each
    output-length quartile alone (and so on all of them), and that width over
    sklat's. A constant width in ms can reach a pooled coverage cheaply by
    leaving out the long requests; here every quartile must be covered too. No
    interpolation: the level's 0.01 steps; nan when no swept level does."""
    index, _ = _buckets(n)
    masks = [index == b for b in range(index.max() + 1)]
    found = {}
    for method, (levels, parts) in pooled.items():
        if levels != LEVELS:
            continue
        bounds = np.concatenate(parts)
        coverage = np.min([interval_coverage(y[m], bounds[m]) for m in masks], axis=0)
        width = np.mean(bounds[:, 1] - bounds[:, 0], axis=0)
        found[method] = [
            width[np.argmax(coverage >= t)] if (coverage >= t).any() else np.nan
            for t in CONFIDENCES
        ]
    reference = found[next(iter(found))]
    rows = []
    for method, widths in found.items():
        row = {"data": name, "method": method}
        for c, value in zip(CONFIDENCES, widths):
            row[f"width, every quartile at {c:.0%} (ms)"] = float(f"{value:.4g}")
        for c, value, ref in zip(CONFIDENCES, widths, reference):
            row[f"over sklat at {c:.0%}"] = round(value / ref, 3)
        rows.append(row)
    return rows


def slo_parts(est, data, test, seed):
    """Predicted probabilities and outcomes on held-out requests, for a TPOT
    objective and a joint TTFT + TPOT objective set per request at its
    predicted value times a log-uniform factor in [0.8, 1.25]."""
    X, n = data.X.iloc[test], data.output_tokens[test]
    rng = np.random.RandomState(seed + 11)
    per_token = data.y["T_LLM_decode"].to_numpy()[test] / n
    prefill = data.y["T_prefill_total"].to_numpy()[test]
    factor = np.exp(rng.uniform(np.log(0.8), np.log(1.25), size=(2, len(test))))
    tpot = est.predict_total(X, n) / n * factor[0]
    ttft = est.predict_prefill(X) * factor[1]
    return {
        "TPOT": (
            est.predict_slo_attainment(X, tpot_ms=tpot, output_tokens=n),
            per_token <= tpot,
        ),
        "TTFT + TPOT": (
            est.predict_slo_attainment(X, tpot_ms=tpot, ttft_ms=ttft, output_tokens=n),
            (per_token <= tpot) & (prefill <= ttft),
        ),
    }


def slo_rows(name, parts):
    """Brier score and calibration (pooled over repeats) of predict_slo_attainment."""
    rows = []
    for objective in parts[0]:
        p = np.concatenate([part[objective][0] for part in parts])
        met = np.concatenate([part[objective][1] for part in parts])
        brier = float(np.mean((p - met) ** 2))
        base = float(np.mean((met.mean() - met) ** 2))
        bins = np.clip((p * 5).astype(int), 0, 4)
        calib = "; ".join(
            f"{b / 5:.1f}-{(b + 1) / 5:.1f}: {p[bins == b].mean():.2f} vs "
            f"{met[bins == b].mean():.2f} ({int((bins == b).sum())})"
            for b in range(5)
            if (bins == b).any()
        )
        rows.append(
            {
                "data": name,
                "objective": objective,
                "n": len(p),
                "met (%)": round(100 * met.mean(), 1),
                "Brier": round(brier, 4),
                "Brier of the base rate": round(base, 4),
                "predicted vs observed by predicted bin (requests)": calib,
            }
        )
    return rows


def splits(data_name, data, seed, quick, by="request", repeats=None):
    """``(train, test, calibration_fraction, seed)`` of each repeat (by
    default 20 on the measured sets and Splitwise, 3 on the large ones); results
    are pooled over the repeats (coverage is a guarantee in expectation over
    calibration draws: one draw of n requests varies by about
    ``sqrt(c (1 - c) / n)``). ``by="configuration"``: the test requests are
    whole measurements (equal features and output length), the repeats of
    a test request never train: intervals for configurations not profiled."""
    n = len(data.X)
    small = data_name.startswith("profiled") or data_name == "splitwise"
    out = []
    if repeats is None:
        repeats = 2 if quick else (20 if small else 3)
    for r in range(repeats):
        order = np.random.RandomState(seed + r).permutation(n)
        # 30% held out, and 30% of the training requests calibrate (enough
        # for 95%); in large sets a third held out (1000 requests), 20% of the
        # rest calibrates (400).
        k, calibration = (int(0.3 * n), 0.3) if small else (n // 3, CALIBRATION)
        if by == "configuration":
            order, groups = _whole_measurements(data, order)
            while k < n and groups[k] == groups[k - 1]:  # the last one whole
                k += 1
        out.append((np.sort(order[k:]), np.sort(order[:k]), calibration, seed + r))
    return out


def _whole_measurements(data, order):
    """``order`` with the repeats of each measurement moved next to its first
    request, and the measurement of each position."""
    groups = configurations(data)[order]
    # The ids are 0..G-1: first[g] is where measurement g first appears.
    _, first = np.unique(groups, return_index=True)
    moved = np.argsort(first[groups], kind="stable")
    return order[moved], groups[moved]


def datasets(names, quick, sets=None):
    n = 1500 if quick else 3000
    if "synthetic" in names:
        for curve in ("saturating", "linear", "mixed"):
            yield (
                f"synthetic ({curve})",
                make_positioned_latency(
                    n, noise=SYNTHETIC_NOISE, curve=curve, positioned_fraction=0.0, random_state=1
                ),
            )
    if "vidur" in names:
        yield "vidur", vidur_requests(n, noise=SYNTHETIC_NOISE, random_state=2)
    if "splitwise" in names:
        yield "splitwise", splitwise_requests()
    if "profiled" in names:
        for name in sets or profiled_sets():
            yield f"profiled {name}", profiled_requests(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default="synthetic,vidur,splitwise,profiled")
    parser.add_argument("--sets", default=None, help="comma-separated measured sets (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_peers", action="store_true")
    parser.add_argument(
        "--repeats", type=int, default=None, help="held-out draws per set (default: 20 or 3)"
    )
    parser.add_argument(
        "--no_joint",
        action="store_true",
        help="skip the fit with the prefill head (and the SLO attainment table)",
    )
    parser.add_argument(
        "--test_split",
        choices=("request", "configuration"),
        default="request",
        help="held-out requests drawn one by one, or as whole measurements",
    )
    parser.add_argument("--save", default=None, help="folder for each set's bounds (.npz)")
    parser.add_argument(
        "--from_saved", default=None, help="print the tables again from a --save folder"
    )
    parser.add_argument("--cost_only", action="store_true", help="only the cost table")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ExtrapolationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mapie")
    if args.cost_only:
        print(cost_table().to_markdown(index=False))
        return
    if args.from_saved:
        matched, by_quartile = [], []
        for path in sorted(Path(args.from_saved).glob("*.npz")):
            name, y, n, pooled, sizes = load_bounds(path)
            if sizes is None:  # saved without them: the same draws again
                sizes = [len(test) for _, test in held_out_tests(name, args)]
            if _drawn_from_a_known_law(name) and "true noise law" not in pooled:
                found = held_out_tests(name, args)
                check = [data.y["T_LLM_decode"].to_numpy()[test] for data, test in found]
                if not np.array_equal(np.concatenate(check), y):
                    raise ValueError(f"{path}: not the draws of these options")
                bounds = [true_law_intervals(data, test) for data, test in found]
                pooled["true noise law"] = (LEVELS, bounds)
            print_coverage(name, y, n, pooled)
            matched += matched_rows(name, y, n, pooled, sizes)
            by_quartile += quartile_matched_rows(name, y, n, pooled)
        print_matched(matched, by_quartile)
        return
    slo_table, matched, by_quartile = [], [], []
    sets = args.sets.split(",") if args.sets else None
    for name, data in datasets(args.data.split(","), args.quick, sets):
        pooled, slo = {}, []
        ys, ns = [], []
        start = time.perf_counter()
        draws = splits(name, data, args.seed, args.quick, args.test_split, args.repeats)

        def add(method, levels, bounds):
            pooled.setdefault(method, (levels, []))[1].append(bounds)

        for train, test, calibration, seed in draws:
            y = data.y["T_LLM_decode"].to_numpy()[test]
            ys.append(y)
            ns.append(data.output_tokens[test])
            bounds, _ = sklat_intervals(data, train, test, seed, args.quick, calibration)
            add("sklat", LEVELS, bounds)
            if _drawn_from_a_known_law(name):
                add("true noise law", LEVELS, true_law_intervals(data, test))
            if not args.no_joint:
                bounds, est = sklat_intervals(
                    data, train, test, seed, args.quick, calibration, target="both"
                )
                add("sklat (with prefill head)", LEVELS, bounds)
                slo.append(slo_parts(est, data, test, seed))
            if args.no_peers:
                continue
            for score in ("absolute", "gamma"):
                add(
                    f"MAPIE split ({score})",
                    LEVELS,
                    mapie_intervals(data, train, test, seed, args.quick, calibration, score),
                )
            add("LightGBM quantile", CONFIDENCES, lightgbm_intervals(data, train, test, seed))
        if slo:
            slo_table += slo_rows(name, slo)
        y, n = np.concatenate(ys), np.concatenate(ns)
        print_coverage(name, y, n, pooled, time.perf_counter() - start)
        sizes = [len(part) for part in ys]
        matched += matched_rows(name, y, n, pooled, sizes)
        by_quartile += quartile_matched_rows(name, y, n, pooled)
        if args.save:
            save_bounds(Path(args.save), name, y, n, pooled, sizes)
    print_matched(matched, by_quartile)
    if slo_table:
        print("\n### SLO attainment (predict_slo_attainment, N known)\n")
        print(pd.DataFrame(slo_table).to_markdown(index=False))
    print("\n### Cost of an interval for one configuration\n")
    print(cost_table().to_markdown(index=False))


def print_coverage(name, y, n, pooled, seconds=None):
    rows = []
    for method, (levels, parts) in pooled.items():
        rows += coverage_rows(method, y, n, np.concatenate(parts), levels)
    took = "" if seconds is None else f" ({seconds:.0f} s)"
    print(f"\n### {name}: {len(y)} held-out requests{took}\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


def print_matched(rows, by_quartile):
    print(
        "\n### Mean width at the same actual coverage "
        f"(levels {LEVELS[0]:.2f} to {LEVELS[-1]:.2f} swept)\n"
    )
    print(pd.DataFrame(rows).to_markdown(index=False))
    print("\n### Mean width where every output-length quartile is covered too\n")
    print(pd.DataFrame(by_quartile).to_markdown(index=False))


def save_bounds(folder, name, y, n, pooled, sizes):
    """One .npz per set: the held-out totals and output lengths, each
    method's pooled bounds with its levels, and the held-out requests of
    each repeat."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "name": np.array(name),
        "y": y,
        "n": n,
        "sizes": np.array(sizes),
        "methods": np.array(list(pooled)),
    }
    for i, (levels, parts) in enumerate(pooled.values()):
        arrays[f"levels_{i}"] = np.array(levels)
        arrays[f"bounds_{i}"] = np.concatenate(parts)
    stem = "".join(ch for ch in name.replace(" ", "_") if ch not in "()")
    np.savez_compressed(folder / f"{stem}.npz", **arrays)


def load_bounds(path):
    with np.load(path) as f:
        pooled = {
            str(method): (
                tuple(float(v) for v in f[f"levels_{i}"]),
                [f[f"bounds_{i}"]],
            )
            for i, method in enumerate(f["methods"])
        }
        sizes = f["sizes"].tolist() if "sizes" in f else None
        return str(f["name"]), f["y"], f["n"], pooled, sizes


def held_out_tests(name, args):
    """``(data, test)`` of each repeat of the set called ``name``, the
    held-out requests drawn again as the run drew them (same ``--seed``,
    ``--quick``, ``--test_split`` and ``--repeats``); nothing is fitted."""
    kind, _, rest = name.partition(" ")
    sets = [rest] if kind == "profiled" else None
    for found, data in datasets([kind], args.quick, sets):
        if found == name:
            draws = splits(name, data, args.seed, args.quick, args.test_split, args.repeats)
            return [(data, test) for _, test, _, _ in draws]
    raise ValueError(f"no set called {name!r}")


def cost_table(repeats=300):
    """Median time of predict_total and predict_interval on one configuration
    (a DataFrame row), N known and unknown, one torch thread."""
    d = make_positioned_latency(500, noise=0.05, positioned_fraction=0.0, random_state=0)
    est = LatencyEstimator(max_epochs=20, random_state=0).fit(
        d.X, d.y, output_tokens=d.output_tokens
    )
    X = d.X.iloc[[3]]
    calls = {
        "predict_total(X, N)": lambda: est.predict_total(X, 100),
        "predict_interval(X, N)": lambda: est.predict_interval(X, 100),
        "predict_total(X) (N unknown)": lambda: est.predict_total(X),
        "predict_interval(X) (N unknown)": lambda: est.predict_interval(X),
        "predict_slo_attainment(X, tpot_ms, N)": lambda: est.predict_slo_attainment(
            X, tpot_ms=5.0, output_tokens=100
        ),
        "predict_budget(X, confidence=0.9)": lambda: est.predict_budget(X, confidence=0.9),
    }
    times = {}
    for _ in range(3):  # interleaved rounds: a busy moment hits every call alike
        for name, call in calls.items():
            call()
            t = []
            for _ in range(repeats // 3):
                start = time.perf_counter()
                call()
                t.append(time.perf_counter() - start)
            times.setdefault(name, []).extend(t)
    base = {
        "N": np.median(times["predict_total(X, N)"]),
        "U": np.median(times["predict_total(X) (N unknown)"]),
    }
    rows = []
    for name, t in times.items():
        ref = base["U"] if "unknown" in name else base["N"]
        rows.append(
            {
                "call": name,
                "median (us)": round(1e6 * float(np.median(t)), 1),
                "x predict_total": round(float(np.median(t)) / ref, 2),
            }
        )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
