"""Does a fitted model still fit its machine? A test of recent requests'
errors against the calibration requests' (see
:meth:`sklat.LatencyEstimator.check_drift`).

A recent request's conformity score is computed as a calibration request's
was. Without drift the recent scores and the calibration scores are
exchangeable, so a rank test of their absolute values is exact: a one-sided
Mann-Whitney U test per output (decode total, prefill), Bonferroni-combined.
"""

import numpy as np
import pandas as pd

from ._conformal import interval_rank


def rank_test(recent, calibration):
    """One-sided p-value that ``|recent|`` is stochastically larger than
    ``|calibration|`` (Mann-Whitney U)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(np.abs(recent), np.abs(calibration), alternative="greater").pvalue)


def outside_share(recent, calibration, confidence):
    """``(share of recent scores outside the calibrated interval of
    ``confidence``, its nominal rate ``1 - k / (n + 1)``)``."""
    n = len(calibration)
    k = interval_rank(n, confidence, "for the drift check's interval")
    bound = np.sort(np.abs(calibration))[k - 1]
    return float(np.mean(np.abs(recent) > bound)), 1.0 - k / (n + 1)


def feature_table(features, abs_scores, names):
    """Per feature, Spearman's correlation of the recent requests' absolute
    decode scores with it, and its p-value, most significant first."""
    from scipy.stats import spearmanr

    rows = []
    for j, name in enumerate(names):
        column = features[:, j]
        if np.ptp(column) == 0:
            rows.append({"feature": name, "spearman_rho": np.nan, "p_value": 1.0})
            continue
        result = spearmanr(column, abs_scores)
        rows.append(
            {
                "feature": name,
                "spearman_rho": float(result.statistic),
                "p_value": float(result.pvalue),
            }
        )
    return pd.DataFrame(rows).sort_values("p_value", kind="stable").reset_index(drop=True)
