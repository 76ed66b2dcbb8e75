"""The calibrated predictions of :class:`~sklat.LatencyEstimator`: budgets,
intervals and SLO attainment, from the predictive distribution that the
fitted :class:`~sklat._calibrator.Calibrator` (which owns the curve) gives.

:class:`CalibratedPredictionsMixin` is a mixin of the estimator; it reads the
estimator's checked input (``_encode``), the output-length distribution
(``_distribution``) and its point rule (``_point``).
"""

from sklearn.utils.validation import check_is_fitted

from . import _budget
from ._conformal import check_confidence
from ._constants import INTERVAL_TARGETS, QUANTILE_TARGETS
from ._domain import warn_lengths
from ._validation import (
    check_levels,
    check_one_length_source,
    check_positions,
    check_threshold,
)


class CalibratedPredictionsMixin:
    """Budgets, intervals and SLO attainment of a fitted latency estimator."""

    def predict_budget(
        self,
        X,
        strategy="max",
        *,
        positions=None,
        position=None,
        output_tokens_distribution=None,
        output_tokens_quantile=None,
        confidence=None,
        load=None,
    ):
        """Per-token decode latency to check against a budget, output length unknown.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations.
        strategy : {"max", "position", "expectation"}, default="max"
            - ``"max"``: the conservative maximum of the curve over the
              positions a request reaches, ``1..L`` with ``L`` the
              ``output_tokens_quantile`` of the output-length distribution
              (or over ``positions`` when given);
            - ``"position"``: the latency at ``position``, by default the
              expected position of a decoded token under the output-length
              distribution (``E[N (N + 1) / 2] / E[N]``);
            - ``"expectation"``: the mean latency of a decoded token under the
              output-length distribution, ``E[sum_{p<=N} f(p)] / E[N]``.
        positions : sequence of int, default=None
            Only with ``"max"``: probe positions instead of ``1..L``, e.g. the
            design document's ``(1, 5, 10, 20)`` (``sklat.PROBE_POSITIONS``).
        position : int, default=None
            Only with ``"position"``: the position.
        output_tokens_distribution : dict or array-like, default=None
            ``{"values": ..., "probabilities": ...}`` or a sample of output
            lengths; ``None`` uses ``output_tokens_distribution_``. Unused,
            so refused, where the positions are given (``positions`` with
            ``"max"``, ``position`` with ``"position"``).
        output_tokens_quantile : float, default=None
            Only with ``"max"`` without ``positions``: the quantile of the
            output-length distribution up to which the curve's maximum is
            taken; ``None`` is 0.95.
        confidence : float in (0, 1), default=None
            If given, an upper confidence bound instead of the point: the
            curve's centre (the point of ``point="center"``) times the
            calibrated upper factor of a request's per-token decode latency
            (one-sided, at this confidence) at the output length the strategy
            looks at (``L``, the largest probe, the position); for
            ``"expectation"``, the upper ``confidence`` quantile of the
            per-token latency with ``N`` drawn from the distribution. See
            :meth:`predict_interval`.
        load : float or dict, default=None
            One load for every row, as in :meth:`predict_slo_attainment`;
            ``X`` then leaves the load columns out.

        Returns
        -------
        budget : ndarray of shape (n_samples,), float64
            Milliseconds per token.

        Raises
        ------
        ValueError
            If an option is given with a strategy that does not use it.
        """
        options = dict(positions=positions, position=position, quantile=output_tokens_quantile)
        _budget.check_options(strategy, distribution=output_tokens_distribution, **options)
        check_is_fitted(self)
        if confidence is not None:
            confidence = check_confidence(confidence)
        dist = self._distribution(output_tokens_distribution)
        budget = _budget.budget_rule(strategy, dist, **options)
        coef, _ = self._encode(X, load=load)
        point, length = budget(self._curve, coef)
        if length is not None:
            warn_lengths([length], self.max_output_tokens_, "position")
        if confidence is None:
            return self._point(point)
        if length is None:
            return self._calibrator.upper_per_token(coef, self._grouped(dist), confidence)
        return self._calibrator.upper_at_length(point, coef.z, length, confidence)

    def predict_interval(
        self,
        X,
        output_tokens=None,
        *,
        target="total",
        confidence=0.9,
        output_tokens_distribution=None,
        positions=None,
        load=None,
    ):
        """Calibrated prediction interval, in milliseconds.

        Split conformal prediction: the calibration requests' normalised log
        errors ``e = (log y - log y_hat) / sigma(x, N)`` give the interval
        ``y_hat * exp(+-sigma(x, N) * |e|_(k))`` about the curve's centre
        ``y_hat`` (whatever ``point``), ``k = ceil((n + 1) * confidence)``. For
        exchangeable requests it holds the true value with probability at
        least ``confidence``; a cross-fitted model calibrates on out-of-fold
        errors (see the user guide, "Trusting a prediction").

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request. If neither this nor the column is given, ``N``
            is drawn from ``output_tokens_distribution_`` and the interval
            covers that randomness too.
        target : {"total", "per_token", "prefill", "position"}, default="total"
            The decode total, the decode total divided by ``N`` (a request's
            mean time per output token), the prefill, or the latency of one
            decode step at each of ``positions``. ``"position"`` needs a model
            fitted with per-step data: its calibration requests' steps give the
            absolute log errors of single steps, each request weighing 1 (a
            marginal interval for a step at a position drawn like theirs; not
            normalised by difficulty).
        confidence : float in (0, 1), default=0.9
            Nominal coverage.
        output_tokens_distribution : dict or array-like, default=None
            Distribution of ``N`` when ``output_tokens`` is not given:
            ``{"values": ..., "probabilities": ...}`` or a sample of output
            lengths; ``None`` uses ``output_tokens_distribution_``. Over more
            than ``length_groups`` distinct lengths it is read in groups (see
            :class:`~sklat.LatencyEstimator`).
        positions : array-like of int, default=None
            Positions of ``target="position"`` (required there).
        load : float or dict, default=None
            One load for every row, as in :meth:`predict_slo_attainment`;
            ``X`` then leaves the load columns out.

        Returns
        -------
        intervals : ndarray of shape (n_samples, 2), float64
            Lower and upper bounds; of shape (n_samples, n_positions, 2) for
            ``target="position"``.

        Raises
        ------
        ValueError
            If the model holds too few calibration requests for
            ``confidence`` (``1 / (1 - confidence) - 1`` are needed).
        """
        if not isinstance(target, str) or target not in INTERVAL_TARGETS:
            raise ValueError(f"target must be one of {INTERVAL_TARGETS}; got {target!r}.")
        confidence = check_confidence(confidence)
        check_is_fitted(self)
        if (positions is None) != (target != "position"):
            raise ValueError("positions= goes with target='position', and only with it.")
        if target == "position":
            # About the curve's centre, as the per-step scores were measured:
            # like every interval, independent of ``point``.
            positions = check_positions(positions)
            coef, _ = self._encode(X, load=load)
            warn_lengths(positions, self.max_output_tokens_, "position")
            values = self._curve.at(coef, positions)
            return self._calibrator.position_interval(values, confidence)
        if target == "prefill":
            self._check_prefill_head()
            return self._calibrator.prefill_interval(self._encode(X, load=load)[0], confidence)
        coef, n_tokens = self._encode(X, output_tokens, load)
        check_one_length_source(n_tokens, output_tokens_distribution)
        return self._calibrator.decode_interval(
            coef,
            n_tokens,
            self._grouped(self._distribution(output_tokens_distribution)),
            confidence,
            per_token=target == "per_token",
        )

    def predict_quantiles(
        self,
        X,
        quantiles=(0.5, 0.9),
        *,
        target="total",
        output_tokens=None,
        output_tokens_distribution=None,
        load=None,
    ):
        """Quantiles of the calibrated predictive distribution, at any levels.

        The predictive distribution is the one of :meth:`predict_interval` and
        :meth:`predict_slo_attainment` (the calibration requests' errors around
        this model's prediction, and the output-length distribution where
        ``output_tokens`` is not given): the quantile at level ``q`` is the
        smallest latency whose probability of not being exceeded
        (:meth:`predict_slo_attainment` with it as the objective) is at least
        ``q``. A router's p50 and p90 per candidate; for a bound with a
        finite-sample guarantee use :meth:`predict_interval` or
        :meth:`predict_budget`.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        quantiles : float or array-like of float in (0, 1], default=(0.5, 0.9)
            The levels.
        target : {"total", "per_token", "prefill", "e2e"}, default="total"
            What is predicted: the decode total, the time per output token
            (decode total / ``N``), the prefill (time to first token) or the
            end-to-end latency (prefill + decode total, with the prefill and
            decode errors of each calibration request taken together).
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request; else ``N`` is drawn from the distribution.
        output_tokens_distribution : dict or array-like, default=None
            As in :meth:`predict_slo_attainment`.
        load : float or dict, default=None
            As in :meth:`predict_slo_attainment`.

        Returns
        -------
        quantiles : ndarray of shape (n_samples, n_quantiles), float64
            Non-decreasing along each row for increasing levels.

        Examples
        --------
        >>> from sklat import LatencyEstimator
        >>> from sklat.datasets import make_positioned_latency
        >>> d = make_positioned_latency(n_samples=200, random_state=0)
        >>> est = LatencyEstimator(max_epochs=5, random_state=0).fit(
        ...     d.X, d.y, output_tokens=d.output_tokens)
        >>> est.predict_quantiles(d.X.iloc[:3], [0.5, 0.9], target="e2e").shape
        (3, 2)
        """
        if target not in QUANTILE_TARGETS:
            raise ValueError(f"target must be one of {list(QUANTILE_TARGETS)}; got {target!r}.")
        return self._summary(
            X,
            quantiles=quantiles,
            targets=[target],
            output_tokens=output_tokens,
            output_tokens_distribution=output_tokens_distribution,
            load=load,
        )["quantiles"][target]

    def _summary(
        self,
        X,
        *,
        quantiles,
        targets,
        objectives=None,
        confidence=None,
        output_tokens=None,
        output_tokens_distribution=None,
        load=None,
    ):
        """What a router asks of each row, from one pass over ``X``:
        ``{"quantiles": {target: (n, L)}, "attainment": (n,) or None,
        "interval": {"prefill": (n, 2) or None, "total": (n, 2)} or None}``
        (``objectives``: ``{"ttft_ms": ..., "tpot_ms": ..., "e2e_ms": ...}``,
        Nones allowed). As :meth:`predict_quantiles`,
        :meth:`predict_slo_attainment` and :meth:`predict_interval` give them."""
        check_is_fitted(self)
        levels = check_levels(quantiles)
        objectives = {k: v for k, v in (objectives or {}).items() if v is not None}
        if confidence is not None:
            confidence = check_confidence(confidence)
        with_prefill = self.n_outputs_ == 2
        if not with_prefill and (
            {"prefill", "e2e"} & set(targets) or {"ttft_ms", "e2e_ms"} & set(objectives)
        ):
            self._check_prefill_head()
        coef, n_tokens = self._encode(X, output_tokens, load)
        needs_length = (
            set(targets) != {"prefill"} or "tpot_ms" in objectives or "e2e_ms" in objectives
        )
        needs_length = needs_length or confidence is not None
        dist = None
        if needs_length:
            check_one_length_source(n_tokens, output_tokens_distribution)
            if n_tokens is None:
                dist = self._grouped(self._distribution(output_tokens_distribution))
        calibrator = self._calibrator
        out = {
            "quantiles": {
                t: calibrator.quantiles(coef, n_tokens, dist, levels, t) for t in targets
            },
            "attainment": None,
            "interval": None,
        }
        if objectives:
            limits = _limits(objectives, len(coef))
            out["attainment"] = calibrator.attainment(coef, n_tokens, dist, **limits)
        if confidence is not None:
            out["interval"] = {
                "prefill": calibrator.prefill_interval(coef, confidence) if with_prefill else None,
                "total": calibrator.decode_interval(
                    coef, n_tokens, dist, confidence, per_token=False
                ),
            }
        return out

    def predict_slo_attainment(
        self,
        X,
        *,
        ttft_ms=None,
        tpot_ms=None,
        e2e_ms=None,
        output_tokens=None,
        output_tokens_distribution=None,
        load=None,
    ):
        """Probability that a request meets every latency objective given.

        From the calibrated predictive distribution (the calibration requests'
        joint prefill and decode errors around this model's prediction, see
        :meth:`predict_interval`) and, where ``output_tokens`` is not given,
        the output-length distribution.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        ttft_ms : float or array-like of shape (n_samples,), default=None
            Time-to-first-token objective: prefill ``<= ttft_ms``.
        tpot_ms : float or array-like of shape (n_samples,), default=None
            Time-per-output-token objective: decode total / ``N <= tpot_ms``.
        e2e_ms : float or array-like of shape (n_samples,), default=None
            End-to-end objective: prefill + decode total ``<= e2e_ms``.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request; else ``N`` is drawn from the distribution.
        output_tokens_distribution : dict or array-like, default=None
            ``{"values": ..., "probabilities": ...}`` or a sample of output
            lengths; ``None`` uses ``output_tokens_distribution_``. Over more
            than ``length_groups`` distinct lengths it is read in groups (see
            :class:`~sklat.LatencyEstimator`).
        load : float or dict, default=None
            One load for every row, for a model with load features
            (``load_features_``): a number for its one load feature, or
            ``{feature: value}``; ``X`` then leaves those columns out.
            ``None``: ``X`` holds them.

        Returns
        -------
        probability : ndarray of shape (n_samples,), float64
            In ``[0, 1]``, in steps of ``1 / n_calibration`` for a known ``N``.
        """
        check_is_fitted(self)
        objectives = {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2e_ms": e2e_ms}
        self._check_objectives(objectives)
        coef, n_tokens = self._encode(X, output_tokens, load)
        return self._attainment(coef, n_tokens, objectives, output_tokens_distribution)

    def _check_objectives(self, objectives):
        """Refuse ``objectives`` (``{"ttft_ms": ..., ...}``) that name none,
        or that need a prefill head this model lacks."""
        if all(v is None for v in objectives.values()):
            raise ValueError("give at least one objective: ttft_ms, tpot_ms or e2e_ms.")
        if objectives.get("ttft_ms") is not None or objectives.get("e2e_ms") is not None:
            self._check_prefill_head()

    def _attainment(self, coef, n_tokens, objectives, output_tokens_distribution):
        """:meth:`predict_slo_attainment` of rows already encoded (``coef``,
        ``n_tokens``: :meth:`_encode`'s), objectives already checked."""
        check_one_length_source(n_tokens, output_tokens_distribution)
        limits = _limits(objectives, len(coef))
        dist = (
            None
            if n_tokens is not None
            else self._grouped(self._distribution(output_tokens_distribution))
        )
        return self._calibrator.attainment(coef, n_tokens, dist, **limits)


def _limits(objectives, n_samples):
    """``{"ttft", "tpot", "e2e"}``: the objectives given in ``objectives``
    (``{"ttft_ms": ..., ...}``, absent or None where not given), checked, as
    the calibrator's attainment takes them."""
    return {
        key: None
        if objectives.get(f"{key}_ms") is None
        else check_threshold(objectives[f"{key}_ms"], n_samples, f"{key}_ms")
        for key in ("ttft", "tpot", "e2e")
    }
