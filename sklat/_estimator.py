"""The scikit-learn façade: :class:`LatencyEstimator`.

A prediction goes straight down: the estimator checks its input
(:mod:`sklat._validation`), the fitted :class:`~sklat._curve.Curve` encodes
the configurations and evaluates the curve, the fitted
:class:`~sklat._calibrator.Calibrator` turns it into intervals, bounds and
probabilities. Fitting checks the parameters (:mod:`sklat._params`), trains
the net (:mod:`sklat._training`) and builds those two objects.

Internal interface: ``_curve`` and ``_calibrator`` hold the fitted objects;
they are set by ``fit`` and by :func:`sklat._state.restore_state`, and the
public fitted attributes documented below are read from them.
"""

from functools import partial

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from . import _budget
from ._calibrator import Calibrator
from ._choice import best, check_min_attainment, meets, split_candidates
from ._conformal import check_confidence
from ._constants import BUDGET_STRATEGIES, INTERVAL_TARGETS, POINTS
from ._curve import Curve
from ._device import resolve_device
from ._drift import feature_table, outside_share, rank_test
from ._distribution import check_distribution, empirical_distribution
from ._domain import feature_range, warn_lengths
from ._features import (
    FeatureTransform,
    context_lengths,
    feature_label,
    resolve_context_features,
    warn_if_standardised,
)
from ._net import RequestData
from ._params import PARAMETER_CONSTRAINTS, check_params
from ._recalibration import recalibrated
from ._requests import Requests
from ._sklearn_compat import check_sample_weight
from ._splits import (
    calibrates_only,
    calibration_split,
    cross_fit_folds,
    measurement_groups,
    unseen,
    validation_split,
)
from ._threads import auto_threads, torch_threads
from ._training import best_epoch, net_kwargs, step_work, train, warn_unconverged
from ._validation import (
    check_decode_segments,
    check_output_tokens,
    check_positions,
    check_targets,
    check_threshold,
    first_true,
    select_targets,
    split_output_tokens,
)

# Fitted attributes read from the fitted objects: name -> (object, attribute).
_CURVE_ATTRIBUTES = {
    "step_scale_": "step_scale",
    "prefill_scale_": "prefill_scale",
    "output_tokens_distribution_": "lengths",
    "max_output_tokens_": "max_output_tokens",
    "position_basis_": "basis_table",
    "context_features_": "context_features",
    "context_scale_": "context_scale",
    "feature_range_": "feature_range",
    "cost_scales_": "scales",
    "scale_slopes_": "slopes",
}
_TRANSFORM_ATTRIBUTES = {
    "feature_log_mask_": "log_mask",
    "feature_log_shift_": "log_shift",
    "feature_mean_": "mean",
    "feature_scale_": "scale",
}
_CALIBRATOR_ATTRIBUTES = {
    "conformity_scores_": "scores",
    "position_scores_": "position_scores",
    "difficulty_tree_": "difficulty_trees",
    "point_factors_": "point_factors",
}


def _read_only(path, doc):
    """A property reading ``self.<path>``; an unfitted estimator has none
    (AttributeError, so ``hasattr`` is False)."""
    owner, *rest = path.split(".")

    def get(self):
        value = getattr(self, owner)
        for name in rest:
            value = getattr(value, name)
        return value

    return property(get, doc=doc)


def _check_one_length_source(output_tokens, distribution):
    if output_tokens is not None and distribution is not None:
        raise ValueError(
            "give output_tokens (N known, as argument or column) or "
            "output_tokens_distribution (N unknown), not both."
        )


class LatencyEstimator(RegressorMixin, BaseEstimator):
    """Per-position decode latency learnt from total decode latencies.

    A torch model predicts the decode latency ``f(c, p)`` of configuration
    ``c`` at every token position ``p``; it is trained so that
    ``sum_{p=1..N} f(c, p)`` matches each request's measured total decode
    latency ``T_LLM_decode``, jointly with a prefill head, and with per-step
    measurements as extra supervision where they exist::

        loss = prefill_weight * prefill + decode_total_weight * decode_total
             + positioned_weight * positioned

    The decode latency is a sum of positive cost terms, as a decode step's
    time is::

        f(c, p) = A(c) + B(c) * (context_0(c) + p) / S + sum_k h_k(c) phi_k(p)

    a flat cost per step (weights read), a cost growing with the running
    context (KV cache read; ``context_0`` is the sum of ``context_features``),
    and a learnt shape (start-up effects, saturation) mixing ``n_basis``
    positive position curves. ``A`` and ``B`` are sums of ``n_cost_terms``
    positive power laws of the features, so costs such as ``layers x experts
    + layers`` are expressed exactly; an MLP corrects every per-configuration
    quantity where features interact otherwise. The curve is positive and
    smooth where data is thin, its learnt shape is held constant past the
    longest training request (only the context term keeps its trend), and the
    summed loss costs ``O(batch + max(N))``.

    Parameters
    ----------
    prefill_weight : float, default=2.0
        Weight of the prefill error (ignored when ``y`` is 1-D).
    decode_total_weight : float, default=1.0
        Weight of the summed-position total decode error.
    positioned_weight : float, default=0.5
        Weight of the per-step error, for requests with per-step data.
    loss : {"log", "relative", "mse"}, default="log"
        Error measure of every term. ``"log"`` (squared log ratio) is
        scale-free, so short and long requests count alike; ``"mse"`` is the
        squared error on standardised latencies.
    point : {"relative", "center"}, default="relative"
        What the point predictions (:meth:`predict_total`,
        :meth:`predict_positions`, :meth:`predict_prefill`, :meth:`predict`
        and :meth:`predict_budget` without ``confidence``) are.
        ``"relative"``: the value with the least expected relative error,
        the curve's centre times ``point_factors_``, a factor per output
        fitted on out-of-sample errors (below 1 when slow outliers skew the
        measurements, as on a busy machine); ``"center"``: the centre the
        loss fits (for ``loss="log"`` the typical, median-like latency),
        about which :meth:`predict_interval` is symmetric on the log scale.
        Intervals, SLO attainment, :meth:`choose` and :meth:`check_drift`
        use the predictive distribution and do not depend on it; it can be
        changed after fitting.
    hidden_size : int, default=64
        Width of the hidden layers of the config and position encoders.
    n_basis : int, default=8
        Number of position basis curves mixed per configuration.
    n_cost_terms : int, default=3
        Positive power laws of the features summed in the flat cost, in the
        context cost and in the prefill.
    context_features : "auto", None or list of str or int, default="auto"
        Columns whose sum is the context length at the first decode step (the
        prompt, vision tokens included); the context term grows with
        ``context_0 + p``. ``"auto"``: ``vision_tokens`` and ``text_tokens``
        where ``X`` has them; ``None`` (or no such column): no context term,
        so that past the longest training request the curve stays flat. Names
        need a DataFrame ``X``; indices count features (without the
        ``output_tokens`` column).
    lr : float, default=3e-3
        Learning rate of the AdamW optimiser.
    weight_decay : float, default=1e-4
        AdamW weight decay of the position encoder and of the linear part of
        the config encoder.
    config_mlp_weight_decay : float, default=0.1
        AdamW weight decay of the config encoder's MLP, which corrects a
        linear map of the (log-scaled, standardised) features. Larger values
        keep configuration effects closer to log-linear (less variance on a
        few hundred noisy requests); smaller ones let strongly interacting
        features (model x hardware x parallelism) through.
    weight_averaging : float, default=0.98
        Decay of the exponential moving average of the weights taken after
        every training step. The average is what the held-out loss scores
        and what the fitted model keeps (from its best epoch); it smooths
        out mini-batch noise. ``0`` keeps the plain weights.
    max_epochs : int, default=200
        Maximum number of passes over the training requests.
    batch_size : int, default=64
        Requests per mini-batch.
    validation_fraction : float, default=0.1
        Fraction of the training requests held out (seeded) to stop early and
        keep the best (averaged) weights. ``0`` trains for ``max_epochs`` on
        all data; so does a training set too small to hold out one request.
        Unused by a model averaged over folds (``n_folds``).
    calibration_fraction : float, default=0.2
        Fraction of the requests (``int(calibration_fraction * n_samples)``,
        seeded) held out of training to calibrate :meth:`predict_interval`,
        :meth:`predict_slo_attainment` and the ``confidence`` of
        :meth:`predict_budget` (split conformal prediction). ``0`` trains on
        all requests and gives no intervals. An interval of confidence ``c``
        needs at least ``1 / (1 - c) - 1`` calibration requests (9 for 90%,
        19 for 95%). Repeats of a measurement (equal features and output
        length) calibrate together, so that the calibration errors are those
        of measurements the net never saw: with at least 10 distinct
        measurements, whole ones are drawn until at least
        ``int(calibration_fraction * n_samples)`` requests are held out.
        Unused by a cross-fitted model (``n_folds``), whose folds calibrate.
    n_folds : "auto", int or None, default="auto"
        Cross-fitting, for data too scarce to set requests aside. With ``k``
        folds (seeded), ``k`` nets are trained, each on every request outside
        one fold and stopped early on that fold; the fitted curve is their
        average, and each request's error under the net that did not train
        on it calibrates the intervals. Every request then trains the model,
        and all of them calibrate it (``validation_fraction`` and
        ``calibration_fraction`` are unused); fitting costs ``k`` nets.
        Repeats of a measurement (equal features and output length) share a
        fold, so that no request calibrates through a net that saw it
        measured again. ``None``: one net, stopped early on
        ``validation_fraction`` and calibrated on ``calibration_fraction`` of
        the requests (split conformal prediction). ``"auto"``: 5 folds from
        10 to 499 requests holding at least 10 distinct configurations;
        from 500 requests of 10 to 499 distinct measurements (few
        configurations measured many times), 5 folds that only calibrate:
        the model is one net trained on every request (stopped early on
        ``validation_fraction``), and five more, each trained as many epochs
        without one fold, give the out-of-fold errors (fitting costs six
        nets; ``calibration_fraction`` is unused); ``None`` otherwise.
    n_iter_no_change : int, default=20
        Epochs without improvement of the held-out loss before stopping.
    log_features : {"auto", "all", "none"}, default="auto"
        Which features are log-transformed before standardisation, so that a
        linear map of them is a power law: ``log(x)``, or ``log1p(x)`` for a
        feature that holds zeros. ``"auto"``: every non-negative feature;
        ``"all"``: the same, but a negative feature is an error; ``"none"``:
        no feature.
    output_tokens_col : str, default="output_tokens"
        Column of a DataFrame ``X`` holding ``output_tokens``; it is removed
        from the features.
    default_output_tokens : int or None, default=None
        Output length assumed at fit time when ``output_tokens`` is given
        neither as argument nor as column. ``None`` makes it required.
    device : str, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:<index>"``.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and the held-out split.
    n_threads : "auto" or int, default="auto"
        torch CPU threads while training and predicting. ``"auto"``: one
        thread for work as small as this model's usual size (more threads gain
        nothing there, and lose 3-5x as soon as another process competes for a
        core), torch's default for larger work. The caller's setting is
        restored afterwards.
    verbose : int, default=0
        ``1`` prints a line per epoch, ``2`` adds a progress bar per epoch.

    Attributes
    ----------
    n_features_in_ : int
        Number of configuration features seen in :meth:`fit`.
    n_outputs_ : int
        ``1`` (``y`` was ``T_LLM_decode``) or ``2`` (``[T_prefill_total,
        T_LLM_decode]``): the width of :meth:`predict`'s output.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Feature names, when ``X`` was a DataFrame with string column names.
    nets_ : list of skorch.NeuralNet
        The trained skorch nets of the model: one, or one per fold
        (``n_folds``), whose average is the model (nets that only calibrate
        are not kept). ``nets_[k].module_`` is a torch module.
    net_ : skorch.NeuralNet
        The first of ``nets_``.
    history_ : skorch.callbacks.History
        Per-epoch training (and held-out) losses of ``net_``.
    device_ : str
        The device training ran on.
    step_scale_ : float
        Median per-token decode latency of the training requests (the unit
        of the model's internal decode outputs).
    prefill_scale_ : float or None
        Median prefill latency, or ``None`` if fitted without prefill.
    output_tokens_distribution_ : dict
        ``{"values": ..., "probabilities": ...}``: the output lengths seen in
        training, used when ``output_tokens`` is unknown at prediction.
    max_output_tokens_ : int
        Longest output seen in training.
    position_basis_ : ndarray of shape (min(`max_output_tokens_`, 65536), `n_basis`)
        The position basis curves ``phi_k(p)`` tabulated at positions
        ``1..len``; later positions are computed on demand (the curves are
        constant past `max_output_tokens_`).
    context_features_ : ndarray of int
        Indices of the features whose sum is the context length.
    context_scale_ : float
        ``S``: the median of ``context_0 + N`` over the training requests.
    feature_log_mask_ : ndarray of shape (`n_features_in_`,), bool
        Features that are log-transformed.
    feature_log_shift_ : ndarray of shape (`n_features_in_`,)
        ``0`` for ``log(x)``, ``1`` for ``log1p(x)`` (features holding zeros).
    feature_mean_ : ndarray of shape (`n_features_in_`,)
        Means of the (log-transformed) features.
    feature_scale_ : ndarray of shape (`n_features_in_`,)
        Standard deviations of the (log-transformed) features.
    total_norm_ : float
        Mean output length of the training requests (divides the total-decode
        error of ``loss="mse"``).
    feature_range_ : ndarray of shape (2, `n_features_in_`)
        Minimum and maximum of each feature over the training requests: the
        domain of :meth:`in_domain`. Beyond the range widened by its own width
        on each side (in log-scaled units for log-scaled features), a feature
        is evaluated at that edge, so every prediction is finite.
    conformity_scores_ : ndarray of shape (n_calibration, `n_outputs_`)
        Normalised signed log errors of the calibration requests (column 0:
        decode total, column 1: prefill).
    point_factors_ : ndarray of shape (`n_outputs_`,)
        Per output (decode total, then prefill), the multiplier of the
        curve's centre with the least mean relative error over out-of-sample
        requests (the out-of-fold ones of a cross-fitted model, else the
        calibration requests, else those held out for early stopping; 1
        with fewer than 20): the median of ``measured / centre`` weighted by
        ``centre / measured``. Used with ``point="relative"``.
    position_scores_ : ndarray of shape (n_steps, 2)
        Absolute log errors of the per-step latencies of the calibration
        requests that have them (at most 64 evenly spaced steps each), and
        their weights (``1 / steps kept``: each request weighs 1). Empty
        without per-step data.
    difficulty_tree_ : ndarray of shape (`n_outputs_`, 3, 15)
        Difficulty models of the decode total and of the prefill: regression
        trees (depth 3) of the training requests' log absolute errors on the
        standardised features and ``log N`` (the prefill's ignore ``N``),
        fitted on the training requests' errors (a cross-fitted model's: on
        every request's out-of-fold error). ``sigma`` is the exponential of a
        tree's value, shifted so that the median difficulty is 1. A one-net
        model keeps a tree only where it narrows the 90% intervals of the
        requests held out for early stopping (out-of-sample errors) by 5%, a
        cross-fitted one only where trees fitted without each fold narrow the
        mean width in ms of the out-of-fold 90% intervals by 5%; else, and
        after :meth:`recalibrate`, it is a single leaf of value 0 (every
        request alike). Per node of a complete binary tree: input index
        (``-1``: leaf), threshold, value.
    cost_scales_ : ndarray of shape (3 + M,)
        Multipliers of the decode's flat, context and shape terms and of the
        prefill's ``M = n_cost_terms`` power laws (none without a prefill
        head), set by :meth:`recalibrate`; all 1 after :meth:`fit`.
    scale_slopes_ : ndarray of shape (`n_outputs_`, `n_features_in_`)
        Per output (decode, then prefill), the slope of the log of the
        recalibration's multiplier on each standardised feature (``(log-scaled
        x - feature_mean_) / feature_scale_``): a request's decode terms are
        multiplied by ``exp(z @ scale_slopes_[0])`` besides
        ``cost_scales_``. Set by :meth:`recalibrate` where its requests show
        that the slowdown differs between configurations; all 0 after
        :meth:`fit`.

    See Also
    --------
    sklat.datasets.make_positioned_latency : Synthetic requests with known curves.

    Examples
    --------
    >>> from sklat import LatencyEstimator
    >>> from sklat.datasets import make_positioned_latency
    >>> data = make_positioned_latency(n_samples=200, random_state=0)
    >>> est = LatencyEstimator(max_epochs=5, random_state=0)
    >>> est.fit(data.X, data.y, output_tokens=data.output_tokens)
    LatencyEstimator(max_epochs=5, random_state=0)
    >>> est.predict_positions(data.X.iloc[:2], positions=[1, 5, 10, 20]).shape
    (2, 4)
    >>> est.predict(data.X.iloc[:3], output_tokens=[8, 16, 32]).shape
    (3, 2)
    >>> est.predict_interval(data.X.iloc[:3], output_tokens=[8, 16, 32]).shape
    (3, 2)
    """

    def __init__(
        self,
        prefill_weight=2.0,
        decode_total_weight=1.0,
        positioned_weight=0.5,
        *,
        loss="log",
        point="relative",
        hidden_size=64,
        n_basis=8,
        n_cost_terms=3,
        context_features="auto",
        lr=3e-3,
        weight_decay=1e-4,
        config_mlp_weight_decay=0.1,
        weight_averaging=0.98,
        max_epochs=200,
        batch_size=64,
        validation_fraction=0.1,
        calibration_fraction=0.2,
        n_folds="auto",
        n_iter_no_change=20,
        log_features="auto",
        output_tokens_col="output_tokens",
        default_output_tokens=None,
        device="auto",
        n_threads="auto",
        random_state=None,
        verbose=0,
    ):
        self.prefill_weight = prefill_weight
        self.decode_total_weight = decode_total_weight
        self.positioned_weight = positioned_weight
        self.loss = loss
        self.point = point
        self.hidden_size = hidden_size
        self.n_basis = n_basis
        self.n_cost_terms = n_cost_terms
        self.context_features = context_features
        self.lr = lr
        self.weight_decay = weight_decay
        self.config_mlp_weight_decay = config_mlp_weight_decay
        self.weight_averaging = weight_averaging
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.calibration_fraction = calibration_fraction
        self.n_folds = n_folds
        self.n_iter_no_change = n_iter_no_change
        self.log_features = log_features
        self.output_tokens_col = output_tokens_col
        self.default_output_tokens = default_output_tokens
        self.device = device
        self.n_threads = n_threads
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        tags.non_deterministic = False
        return tags

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS

    def __sklearn_is_fitted__(self):
        return hasattr(self, "_calibrator")

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, output_tokens=None, positioned_latencies=None, decode_segments=None):
        """Train on requests whose total decode latency is known.

        A fit that fails (bad input, a diverged training, Ctrl-C, which is
        re-raised as ``KeyboardInterrupt``) leaves the estimator as it was:
        fitted with its previous state, or unfitted.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configuration features. A DataFrame may carry ``output_tokens``
            in the column ``output_tokens_col``.
        y : array-like of shape (n_samples,) or (n_samples, 2)
            ``T_LLM_decode``, or ``[T_prefill_total, T_LLM_decode]`` (a
            DataFrame must name its columns so). Milliseconds, > 0.
        output_tokens : array-like of shape (n_samples,), default=None
            Number of decoded tokens ``N`` of each request (integers in
            ``1..MAX_OUTPUT_TOKENS``).
        positioned_latencies : list of length n_samples, default=None
            Per request, ``None`` or its ``N`` per-step decode latencies.
        decode_segments : list of length n_samples, default=None
            Per request, ``None`` or a pair ``(tokens, ms)`` of equal-length
            lists: timed decode segments (for example the gaps between the
            events of a token stream, an event carrying several tokens) that
            cover positions ``1..N`` in order, ``tokens[j]`` positions taking
            ``ms[j]`` milliseconds. The loss compares the predicted sum over
            each segment's positions with its time (weighted by
            ``positioned_weight``); per-step latencies are one-token
            segments. A request may have per-step latencies or segments, not
            both.

        Returns
        -------
        self : LatencyEstimator
            The fitted estimator.
        """
        previous = {k: v for k, v in vars(self).items() if self._is_fitted_state(k)}
        try:
            return self._fit(X, y, output_tokens, positioned_latencies, decode_segments)
        except BaseException:
            for key in [k for k in vars(self) if self._is_fitted_state(k)]:
                delattr(self, key)
            vars(self).update(previous)
            raise

    @staticmethod
    def _is_fitted_state(name):
        return name in ("_curve", "_calibrator") or (
            name.endswith("_") and not name.startswith("_")
        )

    def _fit(self, X, y, output_tokens, positioned_latencies, decode_segments):
        check_params(self)
        X_features, from_column = split_output_tokens(X, self.output_tokens_col)
        if y is None:  # scikit-learn's own "requires y" error
            validate_data(self, X_features, y)
        X_arr = validate_data(self, X_features, dtype=np.float64, ensure_all_finite=False)
        self._check_finite_features(X_arr)
        decode, prefill, two_columns = check_targets(y)
        check_consistent_length(X_arr, decode)
        n = X_arr.shape[0]
        n_tokens = self._resolve_output_tokens(output_tokens, from_column, n)
        segments = check_decode_segments(decode_segments, positioned_latencies, n_tokens)
        names = getattr(self, "feature_names_in_", None)
        context_features = resolve_context_features(
            self.context_features, names, self.n_features_in_
        )
        # Checked on every request before the calibration split, so that an
        # error names the sample as the caller numbers it.
        context_lengths(X_arr, context_features, self._feature_label)
        if self.log_features == "auto":
            warn_if_standardised(X_arr, self._feature_label)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        requests = Requests(X_arr, decode, prefill, n_tokens, segments)
        self.n_outputs_ = 2 if two_columns else 1
        self.device_ = resolve_device(self.device)
        # Repeats of a measurement stay on one side of every split.
        groups = measurement_groups(X_arr, n_tokens)
        folds = cross_fit_folds(X_arr, n_tokens, self.n_folds, seed, groups)
        if folds is None:
            fit_rows, cal_rows = calibration_split(n, self.calibration_fraction, seed, groups)
            fit_part = requests.take(fit_rows)
            curve, held_out = self._fit_one_net(fit_part, context_features, seed)
            calibrator = Calibrator.fit(
                curve,
                fit_part,
                requests.take(cal_rows),
                # The difficulty tree is judged on errors out of sample: a
                # request whose repeat trained the net is not.
                held_out=unseen(held_out, groups[fit_rows]),
                n_threads=self.n_threads,
            )
        elif calibrates_only(self.n_folds, n):
            # Many requests of few measurements: the model is one net trained
            # on every request, every configuration included. Nets trained
            # as it was (as many epochs), each without one fold, give every
            # request an error on a net that never saw its measurement.
            curve, _ = self._fit_one_net(requests, context_features, seed)
            no_stopping = np.zeros(0, dtype=np.int64)
            fold_curve = self._fit_curve(
                requests,
                context_features,
                [
                    ((seed + k) % 2**31, np.flatnonzero(folds != k), no_stopping)
                    for k in range(folds.max() + 1)
                ],
                kept=False,
                max_epochs=best_epoch(self.net_),
            )
            calibrator = Calibrator.fit_cross(fold_curve, requests, folds, n_threads=self.n_threads)
        else:
            curve = self._fit_curve(
                requests,
                context_features,
                [
                    ((seed + k) % 2**31, None, np.flatnonzero(folds == k))
                    for k in range(folds.max() + 1)
                ],
            )
            calibrator = Calibrator.fit_cross(curve, requests, folds, n_threads=self.n_threads)
        self._curve, self._calibrator = curve, calibrator
        return self

    def _fit_one_net(self, part, context_features, seed):
        """``(curve, held_out)``: one net trained on ``part``, stopped early on
        ``validation_fraction`` of it (the rows ``held_out``), drawn request
        by request."""
        _, held_out = validation_split(len(part), self.validation_fraction, seed)
        return self._fit_curve(part, context_features, [(seed, None, held_out)]), held_out

    def _fit_curve(self, part, context_features, trainings, *, kept=True, max_epochs=None):
        """Train the curve on the requests of ``part`` (checked Requests): the
        average of one net per ``(seed, rows, held_out)`` of ``trainings``,
        trained on the rows ``rows`` of ``part`` (None: all) but those at the
        positions ``held_out`` of them, which stop it early. ``kept``: the
        nets are the fitted model's (``nets_``; a ``ConvergenceWarning`` if
        their training looks unfinished). ``max_epochs``: instead of the
        parameter's."""
        X_arr, n_tokens, decode, prefill = part.X, part.output_tokens, part.decode, part.prefill
        context = context_lengths(X_arr, context_features, self._feature_label)
        transform = FeatureTransform.fit(X_arr, self.log_features, self._feature_label)
        # What the net and the curve are built from (the fitted attributes
        # of the same names).
        fitted = {
            "n_features_in_": self.n_features_in_,
            "context_features_": context_features,
            "context_scale_": float(max(1.0, np.median(context + n_tokens))),
            "step_scale_": float(np.median(decode / n_tokens)),
            "prefill_scale_": float(np.median(prefill)) if prefill is not None else None,
            "max_output_tokens_": int(n_tokens.max()),
            "total_norm_": float(n_tokens.mean()),
        }
        data = RequestData(
            x=transform.transform(X_arr, self._feature_label),
            output_tokens=n_tokens,
            context=(context / fitted["context_scale_"]).astype(np.float32),
            total=(decode / fitted["step_scale_"]).astype(np.float32),
            prefill=(
                None if prefill is None else (prefill / fitted["prefill_scale_"]).astype(np.float32)
            ),
            segments=part.segments.scaled(fitted["step_scale_"]),
        )
        params = self.get_params(deep=False)
        if max_epochs is not None:
            params["max_epochs"] = max_epochs
        work = step_work(params, self.n_features_in_, fitted["max_output_tokens_"])
        with torch_threads(auto_threads(self.n_threads, work)):
            kwargs = net_kwargs(fitted, self.device_)
            nets = []
            for k, (seed, rows, held_out) in enumerate(trainings):
                subset = data if rows is None else data.subset(rows)
                if params["verbose"] and not kept:
                    print(
                        f"calibration: net {k + 1} of {len(trainings)}, "
                        f"{params['max_epochs']} epochs on {len(subset)} requests"
                    )
                elif params["verbose"] and len(trainings) > 1:
                    print(
                        f"cross-fitting: net {k + 1} of {len(trainings)}, stopped early on "
                        f"{len(held_out)} of {len(subset)} requests"
                    )
                nets.append(train(params, subset, seed=seed, net_kwargs=kwargs, held_out=held_out))
            if kept:
                warn_unconverged(params, nets)
                self.nets_, self.net_, self.history_ = nets, nets[0], nets[0].history
                self.total_norm_ = fitted["total_norm_"]
            return Curve(
                nets,
                transform=transform,
                feature_range=feature_range(X_arr),
                context_features=context_features,
                context_scale=fitted["context_scale_"],
                step_scale=fitted["step_scale_"],
                prefill_scale=fitted["prefill_scale_"],
                lengths=empirical_distribution(n_tokens),
                feature_names=getattr(self, "feature_names_in_", None),
                hidden_size=self.hidden_size,
            )

    # ------------------------------------------------------------ predict
    def predict_positions(self, X, positions):
        """Per-token decode latency at the given positions.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations (an ``output_tokens`` column is ignored).
        positions : array-like of int
            Token positions, ``1`` being the first decode step.

        Returns
        -------
        latencies : ndarray of shape (n_samples, n_positions), float64
            Milliseconds per token.
        """
        positions = check_positions(positions)
        coef, _ = self._encode(X)
        warn_lengths(positions, self.max_output_tokens_, "position")
        return self._point(self._curve.at(coef, positions))

    def predict_total(self, X, output_tokens=None):
        """Total decode latency, the sum of :meth:`predict_positions` over ``1..N``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request. If neither this nor the column is given, the
            expectation over ``output_tokens_distribution_`` is returned.

        Returns
        -------
        totals : ndarray of shape (n_samples,), float64
            Milliseconds.
        """
        return self._total(*self._encode(X, output_tokens))

    def _total(self, coef, n_tokens):
        if n_tokens is None:
            return self._point(self._curve.expected_total(coef, self._curve.lengths))
        return self._point(self._curve.total(coef, n_tokens))

    def _point(self, centre, output=0):
        """Point predictions of ``output`` (0: decode, 1: prefill) from the
        curve's ``centre``, as the ``point`` parameter asks."""
        if self.point == "center":
            return centre
        if self.point != "relative":  # set after fitting, so not checked by fit
            raise ValueError(
                f"point must be one of {sorted(POINTS)} to predict; got {self.point!r}."
            )
        return centre * self._calibrator.point_factors[output]

    def predict_prefill(self, X):
        """Prefill latency per configuration.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations.

        Returns
        -------
        prefill : ndarray of shape (n_samples,), float64
            Milliseconds.
        """
        self._check_prefill_head()
        return self._point(self._encode(X)[0].prefill, 1)

    def _check_prefill_head(self):
        check_is_fitted(self)
        if self.prefill_scale_ is None:
            raise ValueError(
                "This LatencyEstimator was fitted with a 1-D y (T_LLM_decode only) "
                "and has no prefill head; fit it with y = [T_prefill_total, "
                "T_LLM_decode] to predict prefill."
            )

    def predict(self, X, output_tokens=None):
        """Predict targets of the same shape as ``y`` in :meth:`fit`.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request; see :meth:`predict_total`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, 2), float64
            ``T_LLM_decode``, or ``[T_prefill_total, T_LLM_decode]``.
        """
        coef, n_tokens = self._encode(X, output_tokens)
        total = self._total(coef, n_tokens)
        if self.n_outputs_ == 1:
            return total
        return np.column_stack([self._point(coef.prefill, 1), total])

    def score(self, X, y, output_tokens=None, sample_weight=None):
        """R² of :meth:`predict` (averaged over the columns of a 2-column ``y``).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        y : array-like of shape (n_samples,) or (n_samples, 2)
            True targets, as in :meth:`fit`.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request; see :meth:`predict_total`.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the requests in the R².

        Returns
        -------
        score : float
            The coefficient of determination R² (1 is a perfect prediction).
        """
        y = np.asarray(select_targets(y), dtype=np.float64)
        y_pred = self.predict(X, output_tokens)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, y_pred)
        return float(r2_score(y, y_pred, sample_weight=sample_weight))

    def predict_budget(
        self,
        X,
        strategy="max",
        *,
        positions=None,
        position=None,
        output_tokens_distribution=None,
        output_tokens_quantile=0.95,
        confidence=None,
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
            Probe positions of ``"max"`` instead of ``1..L``, e.g. the design
            document's ``(1, 5, 10, 20)`` (``sklat.PROBE_POSITIONS``).
        position : int, default=None
            Position of ``"position"``.
        output_tokens_distribution : dict or array-like, default=None
            ``{"values": ..., "probabilities": ...}`` or a sample of output
            lengths; ``None`` uses ``output_tokens_distribution_``.
        output_tokens_quantile : float, default=0.95
            Quantile of the output-length distribution up to which ``"max"``
            takes the curve's maximum.
        confidence : float in (0, 1), default=None
            If given, an upper confidence bound instead of the point: the
            curve's centre (the point of ``point="center"``) times the
            calibrated upper factor of a request's per-token decode latency
            (one-sided, at this confidence) at the output length the strategy
            looks at (``L``, the largest probe, the position); for
            ``"expectation"``, the upper ``confidence`` quantile of the
            per-token latency with ``N`` drawn from the distribution. See
            :meth:`predict_interval`.

        Returns
        -------
        budget : ndarray of shape (n_samples,), float64
            Milliseconds per token.
        """
        if not isinstance(strategy, str) or strategy not in BUDGET_STRATEGIES:
            raise ValueError(f"strategy must be one of {BUDGET_STRATEGIES}; got {strategy!r}.")
        check_is_fitted(self)
        quantile = check_confidence(output_tokens_quantile, "output_tokens_quantile")
        if confidence is not None:
            confidence = check_confidence(confidence)
        dist = self._distribution(output_tokens_distribution)
        if strategy == "max":
            positions = None if positions is None else check_positions(positions)
            budget = partial(_budget.max_budget, dist=dist, positions=positions, quantile=quantile)
        elif strategy == "position":
            budget = partial(_budget.position_budget, probe=_budget.probe_position(dist, position))
        else:
            budget = partial(_budget.expectation_budget, dist=dist)
        coef, _ = self._encode(X)
        point, length = budget(self._curve, coef)
        if length is not None:
            warn_lengths([length], self.max_output_tokens_, "position")
        if confidence is None:
            return self._point(point)
        if length is None:
            return self._calibrator.upper_per_token(self._curve, coef, dist, confidence)
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
    ):
        """Calibrated prediction interval, in milliseconds.

        Split conformal prediction: the requests held out of training
        (``calibration_fraction``) give the distribution of the model's
        normalised log errors, ``e = (log y - log y_hat) / sigma(x, N)``,
        where ``sigma`` (a model of how hard a request is, fitted on the
        training requests' errors) widens the interval where the model is
        less sure. The interval is ``y_hat * exp(+-sigma(x, N) * |e|_(k))``
        (``y_hat``: the curve's centre, the point of ``point="center"``),
        ``|e|_(k)`` the ``k = ceil((n + 1) * confidence)``-th smallest absolute
        calibration score. If requests are exchangeable (the new request is
        drawn like the training requests), it holds the true value with
        probability at least ``confidence`` (over the calibration requests and
        the new request), and at most ``1 / (n_calibration + 1)`` more.
        A cross-fitted model (``n_folds``) calibrates on every request's error
        under the net that did not train on it, normalised by a ``sigma``
        fitted without its fold (or a flat one); its interval is centred on
        the average of the nets, which the guarantee does not cover (see the
        user guide's "Prediction intervals").

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
            lengths; ``None`` uses ``output_tokens_distribution_``.
        positions : array-like of int, default=None
            Positions of ``target="position"`` (required there).

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
            values = self.predict_positions(X, positions)
            return self._calibrator.position_interval(values, confidence)
        if target == "prefill":
            self._check_prefill_head()
            return self._calibrator.prefill_interval(self._encode(X)[0], confidence)
        coef, n_tokens = self._encode(X, output_tokens)
        _check_one_length_source(n_tokens, output_tokens_distribution)
        return self._calibrator.decode_interval(
            self._curve,
            coef,
            n_tokens,
            self._distribution(output_tokens_distribution),
            confidence,
            per_token=target == "per_token",
        )

    def predict_slo_attainment(
        self,
        X,
        *,
        ttft_ms=None,
        tpot_ms=None,
        e2e_ms=None,
        output_tokens=None,
        output_tokens_distribution=None,
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
            lengths; ``None`` uses ``output_tokens_distribution_``.

        Returns
        -------
        probability : ndarray of shape (n_samples,), float64
            In ``[0, 1]``, in steps of ``1 / n_calibration`` for a known ``N``.
        """
        check_is_fitted(self)
        objectives = {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2e_ms": e2e_ms}
        if all(v is None for v in objectives.values()):
            raise ValueError("give at least one objective: ttft_ms, tpot_ms or e2e_ms.")
        if ttft_ms is not None or e2e_ms is not None:
            self._check_prefill_head()
        coef, n_tokens = self._encode(X, output_tokens)
        _check_one_length_source(n_tokens, output_tokens_distribution)
        limits = {
            k.removesuffix("_ms"): None if v is None else check_threshold(v, len(coef), k)
            for k, v in objectives.items()
        }
        dist = None if n_tokens is not None else self._distribution(output_tokens_distribution)
        return self._calibrator.attainment(self._curve, coef, n_tokens, dist, **limits)

    def choose(
        self,
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
        :meth:`predict_slo_attainment`'s. The choice is the candidate whose
        probability reaches ``min_attainment`` and that is best by ``prefer``
        (the first in order without a preference); when none reaches it, the
        candidate with the highest probability, with ``met=False``.

        Parameters
        ----------
        candidates : DataFrame or array-like of shape (n_candidates, n_features)
            The configurations to choose from. A DataFrame may hold other
            columns (such as ``prefer``'s) beside the model's features, and an
            ``output_tokens`` column.
        ttft_ms, tpot_ms, e2e_ms : float or array-like of shape (n_candidates,), default=None
            Objectives, as in :meth:`predict_slo_attainment`; at least one.
        output_tokens : int or array-like of shape (n_candidates,), default=None
            ``N``, if known; else it is drawn from the output-length distribution.
        output_tokens_distribution : dict or array-like, default=None
            As in :meth:`predict_slo_attainment`.
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
        >>> from sklat.datasets import make_positioned_latency
        >>> d = make_positioned_latency(n_samples=200, random_state=0)
        >>> est = LatencyEstimator(max_epochs=5, random_state=0).fit(
        ...     d.X, d.y, output_tokens=d.output_tokens)
        >>> candidates = d.X.iloc[:5].assign(quality=[0.2, 0.9, 0.5, 0.7, 0.1])
        >>> choice = est.choose(candidates, tpot_ms=20.0, min_attainment=0.8, prefer="quality")
        >>> choice.attainment.shape
        (5,)
        """
        check_is_fitted(self)
        min_attainment = check_min_attainment(min_attainment)
        X, preference = split_candidates(
            candidates,
            getattr(self, "feature_names_in_", None),
            [self.output_tokens_col],
            prefer,
        )
        attainment = self.predict_slo_attainment(
            X,
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
            e2e_ms=e2e_ms,
            output_tokens=output_tokens,
            output_tokens_distribution=output_tokens_distribution,
        )
        index = best(attainment, min_attainment, preference)
        return Bunch(
            index=index,
            attainment=attainment,
            met=bool(meets(attainment[index], min_attainment)),
        )

    def recalibrate(self, X, y, output_tokens=None):
        """Adapt the fitted model to a new setting from a few measured requests.

        For a model moved to another GPU, engine, dtype or attention kernel:
        the curve's shape is kept and one multiplier per cost term is refitted
        on the new requests, the decode's three (the flat cost, the context
        cost, the learnt shape) and the prefill's ``n_cost_terms`` power laws
        (``cost_scales_``); the per-term multipliers are drawn towards a
        common one, so that a few requests move the balance of the terms only
        as far as they show it. From 20 requests on, the log of each output's
        multiplier may also change linearly with the standardised features
        (``scale_slopes_``: a wider MoE layer slows a configuration that runs
        more experts more), penalised, with the penalty (or no slopes) chosen
        by the requests' cross-fitted error. The calibration
        scores are then the new requests' own, cross-fitted (each request's
        score comes from factors fitted without it: leave-one-out up to 50
        requests, 10 folds beyond), so intervals and SLO attainment describe
        the new setting. The difficulty model is reset (every request alike:
        which requests the old setting found hard need not carry over); the
        per-step scores of ``target="position"`` intervals are kept. The
        estimator is changed in place (persist it, or ``copy.deepcopy`` it
        first to keep the original).

        Coverage: cross-fitted scores are not exactly exchangeable with a new
        request's error (the factors of a prediction are fitted on all the
        requests), so the split-conformal guarantee of :meth:`fit` does not
        hold exactly; with a handful of multipliers it is close (measured in
        ``benchmarks/recalibration.py``). An interval of confidence ``c``
        needs ``1 / (1 - c) - 1`` requests, as in :meth:`predict_interval`.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations of the new setting's requests (the fitted
            features); a DataFrame may carry ``output_tokens`` as a column.
        y : array-like of shape (n_samples,) or (n_samples, 2)
            Their latencies, with as many columns as in :meth:`fit`.
        output_tokens : array-like of shape (n_samples,), default=None
            ``N`` of each request (required, as argument or column).

        Returns
        -------
        self : LatencyEstimator
            The recalibrated estimator.
        """
        check_is_fitted(self)
        X_arr, decode, prefill, n_tokens = self._check_measured(X, y, output_tokens, "recalibrate")
        if (1 if prefill is None else 2) != self.n_outputs_:
            raise ValueError(
                f"y must have {self.n_outputs_} column(s), as in fit; got "
                f"{1 if prefill is None else 2}."
            )
        self._curve, self._calibrator = recalibrated(
            self._curve, self._calibrator, X_arr, decode, prefill, n_tokens, self.n_threads
        )
        return self

    def check_drift(self, X, y, output_tokens=None, *, alpha=0.01, confidence=0.9):
        """Test whether recent requests still fit the model.

        Each recent request's error is scored as the calibration requests'
        were (its log error over its difficulty). Without drift, recent and
        calibration scores are exchangeable, so a rank test of their absolute
        values is exact: a one-sided Mann-Whitney U test for the decode total
        (and the prefill, where ``y`` has it), Bonferroni-combined. A
        scheduled job can refit or :meth:`recalibrate` when ``drift`` is True.

        Parameters
        ----------
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
        check_is_fitted(self)
        alpha = check_confidence(alpha, "alpha")
        confidence = check_confidence(confidence)
        self._calibrator.check_ready()
        X_arr, decode, prefill, n_tokens = self._check_measured(X, y, output_tokens, "check_drift")
        if prefill is not None and self.n_outputs_ == 1:
            raise ValueError("y has a prefill column but this model has no prefill head.")
        recent = self._calibrator.score(
            self._curve, Requests.totals(X_arr, decode, prefill, n_tokens), n_threads=self.n_threads
        )
        outputs = {"decode": 0} if prefill is None else {"decode": 0, "prefill": 1}
        calibration = self.conformity_scores_
        p_values = {k: rank_test(recent[:, j], calibration[:, j]) for k, j in outputs.items()}
        p_value = min(1.0, len(p_values) * min(p_values.values()))
        shares = {
            k: outside_share(recent[:, j], calibration[:, j], confidence)
            for k, j in outputs.items()
        }
        names = getattr(self, "feature_names_in_", None)
        names = (
            [f"x{j}" for j in range(self.n_features_in_)]
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

    def in_domain(self, X, output_tokens=None):
        """Whether each request lies inside the training domain.

        A request is inside when every feature lies within its range over the
        training requests, and ``output_tokens`` (if given) is at most the
        longest training request's; outside, a prediction is an extrapolation
        (and predicting warns with an
        :class:`~sklat.exceptions.ExtrapolationWarning`).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request.

        Returns
        -------
        inside : ndarray of shape (n_samples,), bool
            ``True`` where the request lies inside the training domain.
        """
        check_is_fitted(self)
        X_arr, n_tokens = self._check_X(X, output_tokens)
        inside = self._curve.inside(X_arr)
        if n_tokens is not None:
            inside &= n_tokens <= self.max_output_tokens_
        return inside

    def _distribution(self, given):
        if given is None:
            return self._curve.lengths
        dist = check_distribution(given)
        warn_lengths(dist["values"], self.max_output_tokens_, "output_tokens_distribution value")
        return dist

    # ----------------------------------------------------------- internals
    def _resolve_output_tokens(self, output_tokens, from_column, n):
        if output_tokens is not None and from_column is not None:
            raise ValueError(
                f"output_tokens was given both as an argument and as the column "
                f"{self.output_tokens_col!r} of X; give it once."
            )
        if output_tokens is None:
            output_tokens = from_column
        if output_tokens is None:
            if self.default_output_tokens is None:
                raise ValueError(
                    "output_tokens is required to fit: pass output_tokens=... (one "
                    f"integer >= 1 per sample), add a column {self.output_tokens_col!r} "
                    "to the DataFrame X, or set default_output_tokens."
                )
            output_tokens = self.default_output_tokens
        return check_output_tokens(output_tokens, n)

    def _as_known_features(self, X):
        """``X`` as float64 when it is exactly what ``fit`` saw (a DataFrame
        with the fitted columns in order, or a numeric array without names
        when fitted without names), else None. scikit-learn's validate_data
        then has nothing to check or warn about; skipping it keeps a one-row
        budget check within a small multiple of the network's own time."""
        names = getattr(self, "feature_names_in_", None)
        if not isinstance(X, (pd.DataFrame, np.ndarray)) or X.ndim != 2 or X.shape[0] < 1:
            return None  # validate_data raises the usual errors (e.g. 0 samples)
        if isinstance(X, pd.DataFrame):
            if names is None or list(X.columns) != list(names):
                return None
            try:
                return X.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                return None
        if names is None and X.shape[1] == self.n_features_in_ and X.dtype.kind in "iuf":
            return X.astype(np.float64, copy=False)
        return None

    def _check_finite_features(self, X_arr):
        first = first_true(~np.isfinite(X_arr))
        if first is not None:
            row, col = first
            raise ValueError(
                f"X column {self._feature_label(col)} must be finite (no NaN or inf); "
                f"sample {row} is {X_arr[row, col]}."
            )

    def _feature_label(self, col):
        return feature_label(getattr(self, "feature_names_in_", None), col)

    def _check_X(self, X, output_tokens):
        """``X`` as the fitted features (float64) and ``output_tokens`` (checked,
        or None)."""
        X_features, from_column = split_output_tokens(X, self.output_tokens_col)
        X_arr = self._as_known_features(X_features)
        if X_arr is None:
            X_arr = validate_data(
                self, X_features, reset=False, dtype=np.float64, ensure_all_finite=False
            )
        self._check_finite_features(X_arr)
        if output_tokens is None and from_column is not None:
            output_tokens = from_column
        n_tokens = None if output_tokens is None else check_output_tokens(output_tokens, len(X_arr))
        return X_arr, n_tokens

    def _check_measured(self, X, y, output_tokens, method):
        """Measured requests of the fitted features: ``(X, decode, prefill or
        None, output_tokens)``, all checked; ``method`` names the caller."""
        X_arr, n_tokens = self._check_X(X, output_tokens)
        if n_tokens is None:
            raise ValueError(f"{method} needs output_tokens (argument or column), one per request.")
        decode, prefill, _ = check_targets(y)
        check_consistent_length(X_arr, decode)
        if len(decode) < 2:
            raise ValueError(f"{method} needs at least 2 requests; got {len(decode)}.")
        return X_arr, decode, prefill, n_tokens

    def _encode(self, X, output_tokens=None):
        """Check ``X`` (and ``output_tokens``), warn about values outside the
        training domain; ``(coefficients, output_tokens or None)``."""
        check_is_fitted(self)
        X_arr, n_tokens = self._check_X(X, output_tokens)
        if n_tokens is not None:
            warn_lengths(n_tokens, self.max_output_tokens_, "output_tokens")
        return self._curve.encode(X_arr, n_threads=self.n_threads), n_tokens

    # ------------------------------------------------------------- pickling
    def __setstate__(self, state):
        super().__setstate__(state)
        # Pickles of 0.7 and earlier: no n_folds parameter (they trained as
        # n_folds=None does), one net.
        vars(self).setdefault("n_folds", None)
        # 0.8 and earlier predicted the curve's centre.
        vars(self).setdefault("point", "center")
        if "net_" in vars(self) and "nets_" not in vars(self):
            self.nets_ = [self.net_]
        if "_calibrator" not in vars(self) and "net_" in vars(self):
            _upgrade_pickled_state(self)


def _upgrade_pickled_state(est):
    """A 0.6 pickle stored the fitted attributes themselves: move them into
    the fitted objects."""
    from ._state import assemble_fitted

    stored = {k: vars(est).pop(k) for k in _FITTED_PROPERTIES if k in vars(est)}
    for name in ("n_features_in_", "n_outputs_", "total_norm_", "feature_names_in_"):
        stored[name] = vars(est).get(name)
    assemble_fitted(est, stored)


for _name, _attr in _CURVE_ATTRIBUTES.items():
    setattr(LatencyEstimator, _name, _read_only(f"_curve.{_attr}", f"See ``Curve.{_attr}``."))
for _name, _attr in _TRANSFORM_ATTRIBUTES.items():
    setattr(
        LatencyEstimator,
        _name,
        _read_only(f"_curve.transform.{_attr}", f"See ``FeatureTransform.{_attr}``."),
    )
for _name, _attr in _CALIBRATOR_ATTRIBUTES.items():
    setattr(
        LatencyEstimator, _name, _read_only(f"_calibrator.{_attr}", f"See ``Calibrator.{_attr}``.")
    )
_FITTED_PROPERTIES = (*_CURVE_ATTRIBUTES, *_TRANSFORM_ATTRIBUTES, *_CALIBRATOR_ATTRIBUTES)
