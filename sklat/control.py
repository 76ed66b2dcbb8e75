"""Decisions and monitoring with a fitted :class:`~sklat.LatencyEstimator`.

The estimator predicts; these rules act on its predictive distribution:

- :func:`choose`: the candidate configuration that best meets latency
  objectives (a controller's decision per request);
- :func:`check_drift`: whether recent requests still fit the model (a
  scheduled job's test, before :meth:`~sklat.LatencyEstimator.recalibrate`
  or a refit).
"""

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from ._choice import best, check_min_attainment, meets, split_candidates
from ._conformal import check_confidence
from ._drift import feature_table, outside_share, rank_test
from ._requests import Requests
from ._validation import check_measured

__all__ = ["check_drift", "choose"]

# Attainments this close are equally likely (a mean of counts).
_TIE = 1e-12


def choose(
    estimator,
    candidates,
    *,
    ttft_ms=None,
    tpot_ms=None,
    e2e_ms=None,
    output_tokens=None,
    output_tokens_distribution=None,
    min_attainment=0.9,
    prefer=None,
):
    """The candidate configuration that best meets latency objectives.

    Every candidate's probability of meeting all the objectives given is
    :meth:`~sklat.LatencyEstimator.predict_slo_attainment`'s. The choice is the candidate whose
    probability reaches ``min_attainment`` and that is best by ``prefer``
    (the first in order without a preference); when none reaches it, the
    candidate with the highest probability, with ``met=False``; among equally
    likely ones (all at 0, say, when the objectives are out of reach), the one
    whose predicted latencies come closest to the objectives, whatever
    ``prefer``.

    Parameters
    ----------
    estimator : LatencyEstimator
        A fitted estimator with calibration requests.
    candidates : DataFrame or array-like of shape (n_candidates, n_features)
        The configurations to choose from. A DataFrame may hold other
        columns (such as ``prefer``'s) beside the model's features, and an
        ``output_tokens`` column.
    ttft_ms, tpot_ms, e2e_ms : float or array-like of shape (n_candidates,), default=None
        Objectives, as in :meth:`~sklat.LatencyEstimator.predict_slo_attainment`; at least one.
    output_tokens : int or array-like of shape (n_candidates,), default=None
        ``N``, if known; else it is drawn from the output-length distribution.
    output_tokens_distribution : dict or array-like, default=None
        As in :meth:`~sklat.LatencyEstimator.predict_slo_attainment`.
    min_attainment : float in [0, 1], default=0.9
        Probability of meeting every objective a candidate must reach.
    prefer : str or array-like of shape (n_candidates,), default=None
        What to maximise among the candidates that qualify: a column of
        ``candidates`` that is not a feature (e.g. a quality score), or one
        value per candidate. ``None``: the candidates' order.

    Returns
    -------
    choice : :class:`~sklearn.utils.Bunch`
        ``index`` (int, position of the chosen candidate), ``attainment``
        (ndarray of shape (n_candidates,), every candidate's probability)
        and ``met`` (bool, whether the chosen one reaches
        ``min_attainment``).

    Examples
    --------
    >>> from sklat import LatencyEstimator
    >>> from sklat.control import choose
    >>> from sklat.datasets import make_positioned_latency
    >>> d = make_positioned_latency(n_samples=200, random_state=0)
    >>> est = LatencyEstimator(max_epochs=5, random_state=0).fit(
    ...     d.X, d.y, output_tokens=d.output_tokens)
    >>> candidates = d.X.iloc[:5].assign(quality=[0.2, 0.9, 0.5, 0.7, 0.1])
    >>> choice = choose(est, candidates, tpot_ms=20.0, min_attainment=0.8, prefer="quality")
    >>> choice.attainment.shape
    (5,)
    """
    check_is_fitted(estimator)
    min_attainment = check_min_attainment(min_attainment)
    X, preference = split_candidates(
        candidates,
        getattr(estimator, "feature_names_in_", None),
        [estimator.output_tokens_col],
        prefer,
    )
    attainment = estimator.predict_slo_attainment(
        X,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        e2e_ms=e2e_ms,
        output_tokens=output_tokens,
        output_tokens_distribution=output_tokens_distribution,
    )
    index = best(attainment, min_attainment, preference)
    met = bool(meets(attainment[index], min_attainment))
    if not met:
        objectives = {"ttft": ttft_ms, "tpot": tpot_ms, "e2e": e2e_ms}
        index = _closest(
            estimator, X, attainment, objectives, output_tokens, output_tokens_distribution
        )
    return Bunch(index=index, attainment=attainment, met=met)


def _closest(estimator, X, attainment, objectives, output_tokens, distribution):
    """Among the candidates of the highest attainment (all 0, say, when the
    objectives are out of reach), the one whose predicted latencies come
    closest to them: the largest least log ratio of objective to prediction.
    Ties go to the earlier candidate."""
    top = np.flatnonzero(attainment >= attainment.max() - _TIE)
    if len(top) == 1:
        return int(top[0])
    rows = X.iloc[top] if hasattr(X, "iloc") else np.asarray(X)[top]
    n = (
        None
        if output_tokens is None or np.ndim(output_tokens) == 0
        else np.asarray(output_tokens)[top]
    )
    coef, n_tokens = estimator._encode(rows, output_tokens if n is None else n)
    curve = estimator._curve
    if n_tokens is None:
        dist = estimator._distribution(distribution)
        total = curve.expected_total(coef, dist)
        length = float(np.dot(dist["values"], dist["probabilities"]))
    else:
        total, length = curve.total(coef, n_tokens), n_tokens
    predicted = {"tpot": total / length, "ttft": coef.prefill, "e2e": None}
    if objectives["e2e"] is not None:
        predicted["e2e"] = coef.prefill + total
    margins = [
        np.log(np.broadcast_to(np.asarray(limit, dtype=np.float64), (len(attainment),))[top])
        - np.log(predicted[name])
        for name, limit in objectives.items()
        if limit is not None
    ]
    return int(top[np.argmax(np.min(margins, axis=0))])


def check_drift(estimator, X, y, output_tokens=None, *, alpha=0.01, confidence=0.9):
    """Test whether recent requests still fit the model.

    Each recent request's error is scored as the calibration requests'
    were (its log error over its difficulty). Without drift, recent and
    calibration scores are exchangeable, so a rank test of their absolute
    values is exact: a one-sided Mann-Whitney U test for the decode total
    (and the prefill, where ``y`` has it), Bonferroni-combined. A
    scheduled job can refit or :meth:`~sklat.LatencyEstimator.recalibrate` when ``drift`` is True.

    Parameters
    ----------
    estimator : LatencyEstimator
        A fitted estimator with calibration requests.
    X : array-like or DataFrame of shape (n_samples, n_features)
        Configurations of the recent requests; a DataFrame may carry
        ``output_tokens`` as a column.
    y : array-like of shape (n_samples,) or (n_samples, 2)
        Their latencies: ``T_LLM_decode``, or ``[T_prefill_total,
        T_LLM_decode]``.
    output_tokens : array-like of shape (n_samples,), default=None
        ``N`` of each request (required, as argument or column).
    alpha : float in (0, 1), default=0.01
        Significance level: the probability of ``drift=True`` when
        nothing changed.
    confidence : float in (0, 1), default=0.9
        Level of the calibrated intervals whose misses are reported.

    Returns
    -------
    report : :class:`~sklearn.utils.Bunch`
        ``drift`` (bool, ``p_value < alpha``), ``p_value`` (combined),
        ``p_values`` (``{"decode": ..., "prefill": ...}``), ``outside``
        (the share of recent requests outside the ``confidence`` interval,
        per output), ``nominal_outside`` (that share's rate without
        drift), ``features`` (DataFrame: per feature and
        ``output_tokens``, Spearman's correlation of the absolute decode
        errors with it and its p-value, most significant first: where the
        drift concentrates) and ``n_requests``.
    """
    check_is_fitted(estimator)
    alpha = check_confidence(alpha, "alpha")
    confidence = check_confidence(confidence)
    calibrator = estimator._calibrator
    calibrator.check_ready()
    X_arr, decode, prefill, n_tokens = check_measured(estimator, X, y, output_tokens, "check_drift")
    if prefill is not None and estimator.n_outputs_ == 1:
        raise ValueError("y has a prefill column but this model has no prefill head.")
    recent = calibrator.score(
        Requests.totals(X_arr, decode, prefill, n_tokens), n_threads=estimator.n_threads
    )
    outputs = {"decode": 0} if prefill is None else {"decode": 0, "prefill": 1}
    calibration = calibrator.scores
    p_values = {k: rank_test(recent[:, j], calibration[:, j]) for k, j in outputs.items()}
    p_value = min(1.0, len(p_values) * min(p_values.values()))
    shares = {
        k: outside_share(recent[:, j], calibration[:, j], confidence) for k, j in outputs.items()
    }
    names = getattr(estimator, "feature_names_in_", None)
    names = (
        [f"x{j}" for j in range(estimator.n_features_in_)]
        if names is None
        else [str(c) for c in names]
    )
    features = feature_table(
        np.column_stack([X_arr, n_tokens]), np.abs(recent[:, 0]), [*names, "output_tokens"]
    )
    return Bunch(
        drift=bool(p_value < alpha),
        p_value=p_value,
        p_values=p_values,
        outside={k: v[0] for k, v in shares.items()},
        nominal_outside=shares["decode"][1],
        features=features,
        n_requests=len(decode),
    )
