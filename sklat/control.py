"""Decisions and monitoring with a fitted :class:`~sklat.LatencyEstimator`.

The estimator predicts; these rules act on its predictive distribution:

- :func:`choose`: the candidate configuration that best meets latency
  objectives (a controller's decision per request);
- :func:`check_drift`: whether recent requests still fit the model (a
  scheduled job's test, before :meth:`~sklat.LatencyEstimator.recalibrate`
  or a refit);
- :func:`capacity`: the largest load at which each configuration still meets
  the objectives (goodput planning), for a model trained with a load feature.
"""

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from ._constants import SELF_COUNTED_LOADS
from ._choice import best, check_min_attainment, meets, split_candidates
from ._conformal import check_confidence
from ._drift import feature_table, outside_share, rank_test
from ._features import first_below_one
from ._load_input import with_load
from ._requests import Requests
from ._validation import (
    check_measured,
    check_output_tokens,
    check_threshold,
    feature_labeller,
)
from .exceptions import ExtrapolationWarning

__all__ = ["capacity", "check_drift", "choose"]

# Attainments this close are equally likely (a mean of counts).
_TIE = 1e-12
# capacity's default levels of a load that stays below 2 in training.
_FRACTION_LEVELS = 16


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
    load=None,
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
    load : float or dict, default=None
        The load every candidate would meet (the requests in flight now), as
        in :meth:`~sklat.LatencyEstimator.predict_slo_attainment`; the
        candidates then leave the load columns out. ``None``: the candidates
        hold them (or the model has no load feature).

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
    candidates = with_load(estimator, candidates, load)
    X, preference = split_candidates(
        candidates,
        getattr(estimator, "feature_names_in_", None),
        [estimator.output_tokens_col],
        prefer,
    )
    objectives = {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2e_ms": e2e_ms}
    estimator._check_objectives(objectives)
    # Encoded once: the attainment and the closest candidate read the same rows.
    coef, n_tokens = estimator._encode(X, output_tokens)
    attainment = estimator._attainment(coef, n_tokens, objectives, output_tokens_distribution)
    index = best(attainment, min_attainment, preference)
    met = bool(meets(attainment[index], min_attainment))
    if not met:
        index = _closest(
            estimator, coef, n_tokens, attainment, objectives, output_tokens_distribution
        )
    return Bunch(index=index, attainment=attainment, met=met)


def _closest(estimator, coef, n_tokens, attainment, objectives, distribution):
    """Among the candidates of the highest attainment (all 0, say, when the
    objectives are out of reach), the one whose predicted latencies come
    closest to them: the largest least log ratio of objective to prediction.
    Ties go to the earlier candidate. ``coef`` and ``n_tokens`` are the
    candidates' (:meth:`~sklat.LatencyEstimator._encode`'s)."""
    top = np.flatnonzero(attainment >= attainment.max() - _TIE)
    if len(top) == 1:
        return int(top[0])
    coef = coef.take(top)
    n_tokens = None if n_tokens is None else n_tokens[top]
    curve = estimator._curve
    if n_tokens is None:
        dist = estimator._distribution(distribution)
        total = curve.expected_total(coef, dist)
        length = float(np.dot(dist["values"], dist["probabilities"]))
    else:
        total, length = curve.total(coef, n_tokens), n_tokens
    predicted = {"tpot_ms": total / length, "ttft_ms": coef.prefill, "e2e_ms": None}
    if objectives["e2e_ms"] is not None:
        predicted["e2e_ms"] = coef.prefill + total
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
    alpha = check_confidence(alpha, "alpha", example=0.01)
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


def capacity(
    estimator,
    X,
    *,
    ttft_ms=None,
    tpot_ms=None,
    e2e_ms=None,
    min_attainment=0.9,
    output_tokens=None,
    output_tokens_distribution=None,
    load_feature=None,
    levels=None,
):
    """The largest load at which each configuration meets latency objectives.

    For a model trained with a load feature (the measured ``concurrency`` of
    ``sklat profile --endpoint`` or of an import; see the "Latency under load"
    page): each configuration's probability of meeting every objective given
    (:meth:`~sklat.LatencyEstimator.predict_slo_attainment`) is evaluated at
    every load of ``levels``, in order; its capacity is the last level before
    the first that misses ``min_attainment``.

    Parameters
    ----------
    estimator : LatencyEstimator
        A fitted estimator with calibration requests, fitted on a DataFrame
        holding the column ``load_feature``.
    X : DataFrame of shape (n_configs, n_features - 1)
        The configurations: the model's other feature columns (and optionally
        ``output_tokens``), without ``load_feature``. Other columns (a name,
        say) are not read, as in :func:`choose`.
    ttft_ms, tpot_ms, e2e_ms : float or array-like of shape (n_configs,), default=None
        Objectives, as in :meth:`~sklat.LatencyEstimator.predict_slo_attainment`;
        at least one.
    min_attainment : float in [0, 1], default=0.9
        Probability of meeting every objective a load must keep.
    output_tokens : int or array-like of shape (n_configs,), default=None
        ``N``, if known; else it is drawn from the output-length distribution.
    output_tokens_distribution : dict or array-like, default=None
        As in :meth:`~sklat.LatencyEstimator.predict_slo_attainment`.
    load_feature : str or list of str, default=None
        The model's feature that holds the load; ``None``: its one load
        feature (``load_features_``), or the decode's one
        (``decode_load_features_``) where the prefill has loads of its own,
        which ``X`` holds (the requests in flight and waiting when a request
        is sent, :doc:`/load`), else ``"concurrency"``. A list sweeps those
        load features together, each at every level: a closed loop of ``L``
        requests has ``L`` in flight over a decode and ``L`` in flight when a
        request is sent (``["concurrency", "in_flight_at_start"]``), the
        levels checked against the range of each.
    levels : array-like of float, default=None
        Increasing loads to evaluate, all > 0 and none past the largest load
        the model evaluates (its training range widened by its own width, in
        its log-scaled units where the load is log-scaled: a larger load is
        evaluated at that edge); ``None``: for a load that reaches 2 in
        training (a count of requests), 1, 2, ... up to twice the largest
        load in training (past it, an extrapolation), or that edge; for a
        smaller one (a KV-cache usage, say), 16 evenly spaced loads up to
        twice the largest, or that edge.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``capacity`` (ndarray of shape (n_configs,): the largest level kept,
        0 where even the first misses), ``bounded`` (ndarray of bool: whether
        a level missed; ``False`` means the capacity is at least the last
        level evaluated), ``attainment`` (ndarray of shape (n_configs,
        n_levels)) and ``levels``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklat import LatencyEstimator
    >>> from sklat.control import capacity
    >>> from sklat.datasets import make_positioned_latency
    >>> d = make_positioned_latency(n_samples=300, random_state=0)
    >>> load = np.random.RandomState(0).randint(1, 9, 300)
    >>> X = d.X.assign(concurrency=load)
    >>> y = d.y * (1 + 0.3 * (load[:, None] - 1))
    >>> est = LatencyEstimator(max_epochs=5, random_state=0).fit(
    ...     X, y, output_tokens=d.output_tokens)
    >>> result = capacity(est, d.X.iloc[:3], tpot_ms=30.0, levels=[1, 2, 4, 8])
    >>> result.attainment.shape
    (3, 4)
    """
    check_is_fitted(estimator)
    min_attainment = check_min_attainment(min_attainment)
    names = [str(c) for c in getattr(estimator, "feature_names_in_", [])]
    swept = _swept_features(estimator, names, load_feature)
    if not isinstance(X, pd.DataFrame):
        raise ValueError("X must be a DataFrame of the model's other feature columns.")
    for feature in swept:
        if feature in X.columns:
            raise ValueError(
                f"X holds the load feature {feature!r}; capacity evaluates it at each "
                "level: leave it out."
            )
    columns_swept = [names.index(feature) for feature in swept]
    if levels is None:
        # Swept together: the default levels of the feature that reaches least.
        levels = min(
            (_load_levels(estimator, column, None) for column in columns_swept),
            key=lambda values: values[-1],
        )
    for column in columns_swept:
        levels = _load_levels(estimator, column, levels)
    missing = [c for c in names if c not in X.columns and c not in swept]
    if missing:
        raise ValueError(f"X lacks the feature column(s) {missing}.")
    # The model's columns in its order (and output_tokens, where given as one).
    columns = names + [c for c in [estimator.output_tokens_col] if c in X.columns]
    # Checked per configuration, so that an error or a warning names the
    # configuration as the caller numbers it (not a row of the table of every
    # configuration at every level below): the features and lengths once, at
    # a load inside the training range; the objectives; then the levels
    # outside that range in one warning of their own.
    ranges = {f: estimator.feature_range_[:, c] for f, c in zip(swept, columns_swept)}
    estimator._encode(
        X.assign(**{f: float(np.clip(levels[0], *ranges[f])) for f in swept})[columns],
        output_tokens,
    )
    n, n_levels = len(X), len(levels)
    per_config = {
        key: None if value is None else check_threshold(value, n, key)
        for key, value in {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2e_ms": e2e_ms}.items()
    }
    if output_tokens is not None:
        per_config["output_tokens"] = check_output_tokens(output_tokens, n)
    objectives = {
        key: None if value is None else np.repeat(value, n_levels)
        for key, value in per_config.items()
    }
    for feature in swept:
        _warn_levels_outside(levels, *ranges[feature], feature)
    tiled = X.iloc[np.repeat(np.arange(n), n_levels)].reset_index(drop=True)
    for feature in swept:
        tiled[feature] = np.tile(levels, n)
    with warnings.catch_warnings():
        # Said above, per configuration and per level.
        warnings.filterwarnings("ignore", "X column ", ExtrapolationWarning)
        warnings.filterwarnings("ignore", "output_tokens ", ExtrapolationWarning)
        attainment = estimator.predict_slo_attainment(
            tiled[columns], output_tokens_distribution=output_tokens_distribution, **objectives
        ).reshape(n, n_levels)
    missed = ~meets(attainment, min_attainment)
    first_miss = np.where(missed.any(axis=1), missed.argmax(axis=1), n_levels)
    kept = np.concatenate([[0.0], levels])[first_miss]
    return Bunch(
        capacity=kept,
        bounded=missed.any(axis=1),
        attainment=attainment,
        levels=levels,
    )


def _swept_features(estimator, names, load_feature):
    """The checked names of the load feature(s) ``capacity`` sweeps (a list)."""
    if load_feature is None:
        load_feature = default_load_feature(estimator, names)
    if isinstance(load_feature, str):
        swept = [load_feature]
    else:
        try:
            swept = list(load_feature)
        except TypeError:  # not a name, nor a list of them
            swept = []
    if not swept or not all(isinstance(f, str) for f in swept):
        raise ValueError(
            f"load_feature must be a feature name or a non-empty list of them; got "
            f"{load_feature!r}."
        )
    if len(set(swept)) != len(swept):
        raise ValueError(f"load_feature lists a feature twice: {swept}.")
    load_names = [names[int(c)] for c in estimator.load_features_]
    for feature in swept:
        if feature not in names:
            raise ValueError(
                f"the model has no load feature {feature!r} (its features: "
                f"{names or 'no names'}); fit it on a DataFrame with that column, e.g. "
                "sklat train --features text_tokens,concurrency."
            )
        if load_names and feature not in load_names:
            # Sweeping a configuration feature (a prompt length, say) is not a
            # capacity; a model without load features may hold the load as an
            # ordinary feature, which is swept as named.
            raise ValueError(
                f"{feature!r} is not a load feature of the model (its load features: "
                f"{load_names}); capacity sweeps the load."
            )
    return swept


def _warn_levels_outside(levels, low, high, load_feature):
    """One :class:`~sklat.exceptions.ExtrapolationWarning` for the levels
    outside the load's training range ``[low, high]``."""
    outside = levels[(levels < low) | (levels > high)]
    if len(outside):
        shown = ", ".join(f"{v:g}" for v in outside)
        warnings.warn(
            f"levels {shown} of {load_feature!r} are outside its training range "
            f"[{low:g}, {high:g}]: their attainments are extrapolations.",
            ExtrapolationWarning,
            stacklevel=3,
        )


def default_load_feature(estimator, names):
    """The model's one load feature, by name, or the decode's one where the
    prefill has loads of its own (the requests in flight and waiting when a
    request is sent, which ``X`` then holds); ``"concurrency"`` for a model
    without one (where it may be an ordinary feature)."""
    load = [names[int(c)] for c in getattr(estimator, "load_features_", []) if names]
    decode = [names[int(c)] for c in getattr(estimator, "decode_load_features_", []) if names]
    if len(load) > 1 and len(decode) == 1:
        return decode[0]
    if len(load) > 1:
        raise ValueError(
            f"the model has {len(load)} load features {load}: name the one to sweep "
            "with load_feature."
        )
    return load[0] if load else "concurrency"


def _load_levels(estimator, column, levels):
    """The checked, increasing loads to evaluate (float64)."""
    # Past the edge of its extended range a feature is evaluated at the edge
    # (sklat._domain): a further level would repeat the edge's attainment and
    # report a capacity the model cannot tell.
    edge = float(estimator._curve.extended_range[1, column])
    low, high = estimator.feature_range_[:, column]
    shown = feature_labeller(estimator)(column)
    if low == high:
        # Its extended range is that one value: every level would be
        # evaluated there.
        raise ValueError(
            f"the load {shown} was {low:g} in every training request: "
            "the model cannot tell how the latency changes with it; fit it on requests "
            "measured at several loads."
        )
    if levels is None:
        if high >= 2:  # on the scale of a count of requests: every whole number
            return np.arange(1.0, max(1.0, min(np.ceil(2 * high), np.floor(edge))) + 1.0)
        # A fraction (a KV-cache usage): whole numbers would miss its range.
        top = min(2 * high, edge)
        return np.linspace(0.0, top, _FRACTION_LEVELS + 1)[1:]
    values = np.atleast_1d(np.asarray(levels, dtype=object))
    if (
        values.ndim != 1
        or not len(values)
        or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0
            for v in values
        )
    ):
        raise ValueError(f"levels must be a non-empty list of finite loads > 0; got {levels!r}.")
    values = values.astype(np.float64)
    names = getattr(estimator, "feature_names_in_", None)
    if (
        names is not None
        and str(names[column]) in SELF_COUNTED_LOADS
        and first_below_one(values) is not None
    ):
        raise ValueError(
            f"levels of {shown} count this client's requests including the request "
            f"itself, so they must be >= 1; got {levels!r}."
        )
    if (np.diff(values) <= 0).any():
        raise ValueError(f"levels must be increasing; got {levels!r}.")
    if values[-1] > edge:
        raise ValueError(
            f"levels go to {values[-1]:g}, past {edge:g}, the largest load "
            f"{shown} the model evaluates (its training range widened "
            f"once; a larger load is evaluated there): give levels up to {edge:g}."
        )
    return values
