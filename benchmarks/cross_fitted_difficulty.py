"""A prototype, not the library: difficulty trees for cross-fitted ensembles.

Run: ``python benchmarks/cross_fitted_difficulty.py [--sets NAMES] [--repeats 20]``;
prints one Markdown table per measured set.

A cross-fitted sklat model (10 to 499 requests) calibrates on every request's
out-of-fold log error and uses a flat difficulty: a tree fitted on the errors
it then normalises would make them look smaller than a new request's. This
script tries the cross-fitted alternative on the fits of
``benchmarks/intervals.py`` (same draws, the same default estimator fitted on
the decode total alone): each fold's errors are normalised by a tree
(:func:`sklat._conformal.fit_difficulty`) fitted on the other folds' errors,
and a new request by a tree fitted on all of them. Rows:

- ``flat``: sklat's own intervals (they reproduce ``intervals.py``'s sklat rows);
- ``cross-fitted trees``: the same centre and level, the normalised scores;
- ``checked``: the trees only where they narrow the out-of-fold 90% intervals by
  5% (the check of a one-net model's tree, ``sklat._calibrator``, in log units,
  judged on each fold with the tree that did not see it), else flat;
- ``checked in ms``: the same check on the intervals' mean width in ms (each
  request's half-width in log units weighted by its predicted total).

The share of draws whose check keeps the trees is printed.

Columns: coverage at the nominal 80 / 90 / 95%; the mean width where the
pooled coverage reaches 80 / 90 / 95% (the sweep of ``intervals.py``); the
coverage of the longest output-length quartile there.
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_efficiency import fitted_folds  # noqa: E402
from intervals import (  # noqa: E402
    CONFIDENCES,
    LEVELS,
    _buckets,
    _estimator,
    at_coverage,
    datasets,
    splits,
)

from sklat import ExtrapolationWarning  # noqa: E402
from sklat._calibrator import _CHECK_LEVEL, _MIN_NARROWING  # noqa: E402
from sklat._conformal import difficulty_inputs, fit_difficulty, interval_rank, tree_value  # noqa: E402
from sklat.metrics import interval_coverage  # noqa: E402


def symmetric_bounds(center, sigma, scores):
    """(n, 2, len(LEVELS)): ``center * exp(+-sigma * |s|_(k))`` per level."""
    a = np.sort(np.abs(scores))
    q = np.array([a[interval_rank(len(a), c, "") - 1] for c in LEVELS])
    half = sigma[:, None] * q[None, :]
    return np.stack([center[:, None] * np.exp(-half), center[:, None] * np.exp(half)], axis=1)


def one_draw(data, train, test, calibration, seed):
    """Both variants' bounds on ``test`` from one default fit on ``train``."""
    est = _estimator(seed, False, calibration_fraction=calibration)
    X_train, n_train = data.X.iloc[train], data.output_tokens[train]
    est.fit(X_train, data.y["T_LLM_decode"].iloc[train], output_tokens=n_train)
    if len(est.nets_) < 2:
        raise ValueError("the prototype is for cross-fitted models (10 to 499 requests)")
    folds = fitted_folds(X_train.to_numpy(np.float64), n_train, est.n_folds, seed)
    errors = est.conformity_scores_[:, 0]  # out-of-fold log errors (flat difficulty)
    inputs = difficulty_inputs(est._encode(X_train, n_train)[0].z, n_train)
    normalised, sigma_out = np.empty_like(errors), np.empty_like(errors)
    for k in range(folds.max() + 1):
        fold = folds == k
        tree = fit_difficulty(inputs[~fold], errors[~fold])
        sigma_out[fold] = np.exp(tree_value(tree, inputs[fold]))
        normalised[fold] = errors[fold] / sigma_out[fold]
    q_trees = np.quantile(np.abs(normalised), _CHECK_LEVEL)
    q_flat = np.quantile(np.abs(errors), _CHECK_LEVEL)
    # The out-of-fold centre of each training request: y = y_hat * exp(error).
    y_hat = data.y["T_LLM_decode"].to_numpy()[train] * np.exp(-errors)
    keep = {
        "checked": np.mean(sigma_out) * q_trees < (1 - _MIN_NARROWING) * q_flat,
        "checked in ms": np.mean(y_hat * sigma_out) * q_trees
        < (1 - _MIN_NARROWING) * np.mean(y_hat) * q_flat,
    }
    coef, n = est._encode(data.X.iloc[test], data.output_tokens[test])
    center = est._curve.total(coef, n)
    sigma = np.exp(tree_value(fit_difficulty(inputs, errors), difficulty_inputs(coef.z, n)))
    flat = np.stack(
        [est.predict_interval(data.X.iloc[test], n, confidence=c) for c in LEVELS], axis=2
    )
    trees = symmetric_bounds(center, sigma, normalised)
    return flat, trees, keep


def set_table(name, data, repeats):
    ys, ns, kept = [], [], []
    parts = {"flat": [], "cross-fitted trees": [], "checked": [], "checked in ms": []}
    for train, test, calibration, seed in splits(name, data, 0, False, repeats=repeats):
        flat, trees, keep = one_draw(data, train, test, calibration, seed)
        parts["flat"].append(flat)
        parts["cross-fitted trees"].append(trees)
        for check, passed in keep.items():
            parts[check].append(trees if passed else flat)
        kept.append(list(keep.values()))
        ys.append(data.y["T_LLM_decode"].to_numpy()[test])
        ns.append(data.output_tokens[test])
    y, n = np.concatenate(ys), np.concatenate(ns)
    index, _ = _buckets(n)
    longest = index == index.max()
    rows = []
    for variant, bounds in parts.items():
        bounds = np.concatenate(bounds)
        coverage = interval_coverage(y, bounds)
        widths, on_longest = at_coverage(y, bounds, longest)
        row = {"variant": variant}
        for c in CONFIDENCES:
            row[f"cov {c:.0%}"] = round(100 * coverage[LEVELS.index(c)], 1)
        for c, w in zip(CONFIDENCES, widths):
            row[f"width at {c:.0%} covered (ms)"] = round(float(w))
        for c, v in zip(CONFIDENCES, on_longest):
            row[f"longest N quartile at {c:.0%} (%)"] = round(100 * v, 1)
        rows.append(row)
    return pd.DataFrame(rows), np.mean(kept, axis=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="llama_dense_eager,llama_dense_sdpa,mixtral_moe_sdpa")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ExtrapolationWarning)
    for name, data in datasets(["profiled"], False, args.sets.split(",")):
        table, kept = set_table(name, data, args.repeats)
        print(
            f"\n### {name} ({args.repeats} held-out draws; trees kept in {kept[0]:.0%} "
            f"of them by the check in log units, {kept[1]:.0%} by the check in ms)\n"
        )
        print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
