"""How many profiled requests sklat needs: learning curves against the repeat floor.

Run: ``python benchmarks/sample_efficiency.py [--sets NAMES] [--sizes 25,50,100,200]
[--fractions 0.25,0.5] [--seeds 0,1,2] [--only METHODS] [--skip_all] [--set NAME=VALUE ...]
[--csv DIR] [--from_csv DIR]``;
prints one Markdown table per set (``--set``: parameters of the sklat rows) and, with
sklat and a peer, paired tables (``--csv``: every seed's row to ``DIR/<set>.csv``;
``--from_csv``: the tables of those rows, without fitting anything).

For measured sets whose configurations (features and output length) were measured
several times (``sklat profile --repeats``). The **floor** is the error of predicting a
request from the other repeats of its own configuration (their mean): what no model can
beat. Splits are **by configuration** (30% of the configurations test, seeded); each
training size is a seeded draw of that many requests of the training configurations
("all": every one), and each training fraction (``--fractions``, rows "25% of
configurations") a seeded draw of that share of all the configurations, every repeat of
each: a profiling campaign that measured fewer configurations. Methods: sklat with its
defaults, the ten-parameter physical core (``_common.PhysicalCore``), the aggregated
linear model and the flat average, and the core and the linear model with sklat's
relative-error point (``_common.RelativePoint``). Columns: decode-total MAPE and
positioned MAPE (against the measured steps) as ratios to the floor, mean over the seeds
(for sklat also its curve's centre, ``point="center"``, from the same fit); sklat's
number of nets (several: cross-fitted) and its 90% decode-total interval coverage (%),
where it has the calibration requests for one; for a cross-fitted sklat, the coverage of
CV+ on the same nets and scores and its mean width over sklat's. The paired tables
divide sklat's MAPE (and its centre's) by each peer's on the same split and training
draw, per seed, and give the mean of those ratios with its standard error over the
seeds: whether a gap between sklat and a peer is more than the draws' noise."""

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from accuracy import parse_set  # noqa: E402
from _common import AggregatedLinear, FlatAverage, PhysicalCore, RelativePoint  # noqa: E402
from _common import configurations, profiled_requests, profiled_sets  # noqa: E402

from sklat import LatencyEstimator, metrics  # noqa: E402
from sklat._calibrator import _log_errors  # noqa: E402
from sklat._conformal import min_calibration  # noqa: E402
from sklat._requests import Requests  # noqa: E402
from sklat._splits import cross_fit_folds  # noqa: E402

SKLAT_PARAMS = {}  # --set NAME=VALUE: parameters of sklat

METHODS = {
    "sklat": lambda seed: LatencyEstimator(random_state=seed, **SKLAT_PARAMS),
    "physical core": lambda seed: PhysicalCore(),
    "aggregated linear": lambda seed: AggregatedLinear(),
    "flat average": lambda seed: FlatAverage(),
    "core, relative point": lambda seed: RelativePoint(PhysicalCore()),
    "linear, relative point": lambda seed: RelativePoint(AggregatedLinear()),
}


def repeat_sets():
    """The measured sets where most requests' configuration was measured again."""
    out = []
    for name in profiled_sets():
        groups = configurations(profiled_requests(name))
        if np.mean(np.bincount(groups)[groups] >= 2) >= 0.9:
            out.append(name)
    return out


def floor(data, groups, rows):
    """``(decode-total MAPE, positioned MAPE)`` of predicting each request of
    ``rows`` by the mean of the other repeats of its configuration."""
    total = data.y["T_LLM_decode"].to_numpy()
    pred, steps, curves = [], [], []
    for i in rows:
        others = [j for j in np.flatnonzero(groups == groups[i]) if j != i]
        pred.append(total[others].mean())
        steps.append(data.positioned_latencies[i])
        curves.append(np.mean([data.positioned_latencies[j] for j in others], axis=0))
    n_max = max(len(c) for c in curves)
    padded = np.array([np.pad(c, (0, n_max - len(c)), constant_values=np.nan) for c in curves])
    return metrics.mape(total[rows], np.asarray(pred)), metrics.positioned_mape(steps, padded)


def scores(model, data, rows):
    X, n = data.X.iloc[rows], data.output_tokens[rows]
    curves = model.predict_positions(X, np.arange(1, n.max() + 1))
    total = metrics.mape(data.y["T_LLM_decode"].to_numpy()[rows], model.predict_total(X, n))
    positioned = metrics.positioned_mape([data.positioned_latencies[i] for i in rows], curves)
    return total, positioned


def interval_columns(model, data, test, train, seed):
    """sklat's 90% decode-total coverage (%) on ``test``, where it holds the
    calibration requests for one; for a cross-fitted model also the coverage
    of CV+ on the same nets and scores, and the ratio of mean widths."""
    y = data.y["T_LLM_decode"].to_numpy()[test]
    X, n = data.X.iloc[test], data.output_tokens[test]
    out = {"sklat nets": len(model.nets_), "sklat 90% coverage": np.nan}
    if len(model.conformity_scores_) < min_calibration(0.9):
        return out
    bounds = model.predict_interval(X, n, confidence=0.9)
    out["sklat 90% coverage"] = 100 * metrics.interval_coverage(y, bounds)
    if len(model.nets_) > 1:
        cv_plus = cv_plus_interval(model, X, n, train, seed, 0.9)
        out["CV+ 90% coverage"] = 100 * metrics.interval_coverage(y, cv_plus)
        out["CV+ / sklat width"] = np.mean(cv_plus[:, 1] - cv_plus[:, 0]) / np.mean(
            bounds[:, 1] - bounds[:, 0]
        )
    return out


def fitted_folds(X, output_tokens, n_folds, random_state):
    """The fold of each training request (features ``X`` as a float array,
    ``output_tokens``) as ``LatencyEstimator(n_folds=n_folds,
    random_state=random_state).fit`` drew them: its seed is the first draw of
    ``random_state``."""
    fit_seed = int(check_random_state(random_state).randint(2**31 - 1))
    return cross_fit_folds(X, output_tokens, n_folds, fit_seed)


def cv_plus_interval(model, X, n, train, seed, confidence):
    """CV+ (Barber et al., 2021) in log units around each fold's own net: the
    interval sklat's cross-fitted model does not use (it centres on the
    average of the nets), for comparison. Reads the fitted curve's members
    and rebuilds the folds from the estimator's seed, as ``fit`` drew them.
    ``train``: the training requests' features, output lengths and decode
    totals. The scores are their plain out-of-fold log errors (the model's
    conformity scores are normalised where its difficulty is not flat)."""
    X_train, n_train, decode_train = train
    folds = fitted_folds(X_train, n_train, model.n_folds, seed)
    requests = Requests.totals(X_train, decode_train, None, n_train)
    scores = np.empty(len(requests))
    X_arr = X.to_numpy(dtype=np.float64)
    log_mu = []
    for k in range(len(model.nets_)):
        member = model._curve.member(k)
        log_mu.append(np.log(member.total(member.encode(X_arr, warn=False), n)))
        rows = np.flatnonzero(folds == k)
        scores[rows] = np.abs(_log_errors(member, requests.take(rows), "auto")[0])
    log_mu = np.asarray(log_mu)[folds]  # (calibration request, test request)
    m = len(scores)
    upper = np.sort(log_mu + scores[:, None], axis=0)[int(np.ceil(confidence * (m + 1))) - 1]
    k_lower = int(np.floor((1 - confidence) * (m + 1)))
    lower = np.sort(log_mu - scores[:, None], axis=0)[k_lower - 1] if k_lower >= 1 else -np.inf
    return np.exp(np.column_stack([np.broadcast_to(lower, upper.shape), upper]))


def training_draws(rng, pool, groups, sizes, fractions, with_all):
    """``(label, rows)`` of each training draw from the requests ``pool``:
    ``sizes`` requests, ``fractions`` of all configurations (every repeat of
    each), and (``with_all``) the whole pool."""
    for size in [s for s in sizes if s < len(pool)]:
        yield size, np.sort(rng.choice(pool, size, replace=False))
    configs = np.unique(groups[pool])
    for fraction in fractions:
        k = int(round(fraction * (groups.max() + 1)))
        if k > len(configs):
            raise ValueError(
                f"--fractions {fraction}: {k} configurations, more than the {len(configs)} "
                "outside the test split"
            )
        chosen = rng.choice(configs, k, replace=False)
        yield f"{fraction:.0%} of configurations", pool[np.isin(groups[pool], chosen)]
    if with_all:
        yield f"all ({len(pool)})", pool


def set_rows(name, sizes, seeds, with_all=True, fractions=()):
    """One row per seed and training draw (:func:`training_draws`): every
    method's MAPE ratios."""
    data = profiled_requests(name)
    groups = configurations(data)
    rows = []
    for seed in seeds:
        rng = np.random.RandomState(seed)
        # Test configurations among those measured at least twice (the floor
        # needs the other repeats).
        repeated = np.flatnonzero(np.bincount(groups) >= 2)
        ids = rng.permutation(repeated)
        test_ids = ids[: int(0.3 * (groups.max() + 1))]
        test = np.flatnonzero(np.isin(groups, test_ids))
        pool = np.flatnonzero(~np.isin(groups, test_ids))
        floor_total, floor_positioned = floor(data, groups, test)
        for label, train in training_draws(rng, pool, groups, sizes, fractions, with_all):
            row = {"requests": label, "seed": seed}
            for method, make in METHODS.items():
                model = make(seed).fit(
                    data.X.iloc[train],
                    data.y.iloc[train].to_numpy() if method != "sklat" else data.y.iloc[train],
                    data.output_tokens[train],
                )
                total, positioned = scores(model, data, test)
                row[f"{method}: total"] = total / floor_total
                row[f"{method}: positioned"] = positioned / floor_positioned
                if method == "sklat":
                    training = (
                        data.X.iloc[train].to_numpy(np.float64),
                        data.output_tokens[train],
                        data.y["T_LLM_decode"].to_numpy()[train],
                    )
                    row.update(interval_columns(model, data, test, training, seed))
                    # The same fit's centre (point="center": sklat 0.8's point).
                    point = model.point
                    total, positioned = scores(model.set_params(point="center"), data, test)
                    model.set_params(point=point)
                    row["sklat centre: total"] = total / floor_total
                    row["sklat centre: positioned"] = positioned / floor_positioned
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["requests"] = frame["requests"].astype(str)
    return frame


def mean_table(frame):
    """The mean over the seeds, per training size."""
    return frame.groupby("requests", sort=False).mean(numeric_only=True).drop(columns="seed")


def paired_table(frame, subject="sklat"):
    """Per training size and peer: the MAPE of ``subject`` (a method's column
    prefix) over the peer's on the same draw, ``mean (standard error)`` over
    the seeds, totals and positions."""
    peers = [m for m in METHODS if m != "sklat" and f"{m}: total" in frame]
    sizes = list(dict.fromkeys(frame["requests"]))
    out = pd.DataFrame(index=pd.Index(sizes, name="requests"))
    for peer in peers:
        for kind in ("total", "positioned"):
            ratio = frame[f"{subject}: {kind}"] / frame[f"{peer}: {kind}"]
            stats = ratio.groupby(frame["requests"], sort=False).agg(["mean", "sem"])
            out[f"{subject} / {peer}: {kind}"] = [
                f"{m:.3f} ({e:.3f})" for m, e in zip(stats["mean"], stats["sem"])
            ]
    return out


def print_tables(name, frame, seeds):
    print(f"\n## {name}: MAPE / floor, by configuration (mean over seeds {seeds})")
    print(mean_table(frame).round(2).to_markdown())
    if "sklat: total" not in frame or frame["seed"].nunique() < 2:
        return
    for subject in ("sklat", "sklat centre"):
        table = paired_table(frame, subject)
        if len(table.columns):
            print(f"\n## {name}: {subject} over each peer, paired by draw (mean (s.e.))")
            print(table.to_markdown())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=None, help="comma-separated (default: every repeat set)")
    parser.add_argument("--sizes", default="25,50,100,200")
    parser.add_argument(
        "--fractions", default="", help="comma-separated shares of the configurations"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE", help="sklat parameters"
    )
    parser.add_argument("--only", default=None, help="comma-separated methods")
    parser.add_argument(
        "--skip_all",
        action="store_true",
        help="no fit on every training request (the draws of --sizes are unchanged)",
    )
    parser.add_argument("--csv", default=None, help="folder for every seed's rows")
    parser.add_argument(
        "--from_csv", default=None, help="print the tables of an earlier run's --csv folder"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    SKLAT_PARAMS.update(parse_set(args.set))
    if args.only:
        for name in [m for m in METHODS if m not in args.only.split(",")]:
            del METHODS[name]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    fractions = [float(f) for f in args.fractions.split(",") if f]
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.sets.split(",") if args.sets else repeat_sets():
        if args.from_csv:
            frame = pd.read_csv(Path(args.from_csv) / f"{name}.csv", dtype={"requests": str})
            seeds = sorted(frame["seed"].unique())
        else:
            frame = set_rows(name, sizes, seeds, with_all=not args.skip_all, fractions=fractions)
        if args.csv:
            Path(args.csv).mkdir(parents=True, exist_ok=True)
            frame.to_csv(Path(args.csv) / f"{name}.csv", index=False)
        print_tables(name, frame, ",".join(str(s) for s in seeds))


if __name__ == "__main__":
    main()
