"""The scikit-learn façade: :class:`LatencyEstimator`.

A prediction goes straight down: the estimator checks its input once
(:func:`sklat._validation.check_features`), the fitted
:class:`~sklat._curve.Curve` checks the values it needs and encodes the
configurations, and the fitted :class:`~sklat._calibrator.Calibrator`, which
owns that curve, turns it into totals, intervals, bounds and probabilities.
Fitting checks the parameters (:mod:`sklat._params`) and builds the
calibrated curve (:mod:`sklat._fitting`). Decisions and monitoring on a
fitted estimator are in :mod:`sklat.control`.

Internal interface: ``_calibrator`` holds the fitted objects (``_curve`` is
its curve); it is set by ``fit``, ``recalibrate`` and
:func:`sklat._state.restore_state`, and the public fitted attributes are read
from it (:class:`sklat._fitted.FittedAttributes`).
"""

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import check_random_state
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from . import control
from ._conformal import min_calibration
from ._constants import POINTS
from ._device import resolve_device
from ._distribution import check_distribution, grouped
from ._domain import warn_lengths
from ._features import (
    FeatureTransform,
    check_load,
    context_lengths,
    resolve_roles,
    warn_if_standardised,
)
from ._fitted import FittedAttributes
from ._fitting import fit_objects
from ._load_input import with_load
from ._params import PARAMETER_CONSTRAINTS, check_params
from ._predict_calibrated import CalibratedPredictionsMixin
from ._recalibration import recalibrated
from ._requests import Requests
from ._sklearn_compat import check_sample_weight
from ._state import assemble_fitted
from ._validation import (
    check_decode_segments,
    check_features,
    check_finite_features,
    check_no_text,
    check_measured,
    check_positions,
    check_targets,
    feature_labeller,
    resolve_output_tokens,
    select_targets,
    split_output_tokens,
)

# The confidence whose calibration needs recalibrate warns about.
_WARN_CONFIDENCE = 0.9


class LatencyEstimator(CalibratedPredictionsMixin, FittedAttributes, RegressorMixin, BaseEstimator):
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
        Intervals, SLO attainment, :func:`sklat.control.choose` and
        :func:`sklat.control.check_drift` use the predictive distribution
        and do not depend on it; it can be changed after fitting.
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
    load_features : "auto", None or list of str or int, default="auto"
        Columns that measure the load the request met: the requests in
        flight beside it (``concurrency``, as :func:`sklat.acquire.profile_endpoint`
        and the importers record it), a KV-cache usage, a queue length. Each
        cost (flat, context, shape and prefill) is a sum of terms
        ``a(config) * load^b`` with ``b >= 0``: smooth, non-decreasing in the
        load, and keeping its trend past the largest trained load (with an
        :class:`~sklat.exceptions.ExtrapolationWarning`). ``"auto"``:
        ``concurrency`` where ``X`` has it; ``None``: no load feature (such a
        column is then an ordinary feature). Values must be ``>= 0``. These
        reach the decode curve's costs, and the prefill's as
        ``prefill_load_features`` says.
    prefill_load_features : "auto", None or list of str or int, default="auto"
        Columns that measure the load the request's prefill met, which shape
        the prefill's costs (the time to first token) as ``load_features``
        shape the decode's: the requests in flight when it was sent
        (``in_flight_at_start``) and those of them still waiting for their
        first token (``waiting_at_start``), as
        :func:`sklat.acquire.profile_endpoint` and the importers record them.
        The time to first token is a wait in the queue the request joined, and
        a load measured over the decode does not tell it: an open-loop
        request's decode shares the batch with requests sent after it.
        ``"auto"``: ``in_flight_at_start`` and ``waiting_at_start`` where
        ``X`` has them, else the ``load_features`` (a column of both lists
        reaches both heads); ``None``: the prefill sees no load. A column
        named here and not in ``load_features`` is a load feature that only
        the prefill sees.
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
        seeded; whole measurements where repeats exist) held out of training
        to calibrate intervals, SLO attainment and budgets with
        ``confidence`` (split conformal prediction). ``0`` gives no intervals.
        A confidence ``c`` needs at least ``1 / (1 - c) - 1`` calibration
        requests. Unused by a cross-fitted model (``n_folds``).
    n_folds : "auto", int or None, default="auto"
        Cross-fitting, for data too scarce to set requests aside: ``k`` nets
        (seeded folds; repeats of a measurement share one), each trained
        without one fold and stopped early on it; the model is their average
        and every request's out-of-fold error calibrates it
        (``validation_fraction`` and ``calibration_fraction`` are unused).
        ``None``: one net, stopped on ``validation_fraction`` and calibrated
        on ``calibration_fraction``. ``"auto"`` (the one statement of the
        rule, which the CLI and guides refer to): 5 folds from 10 to 499
        requests holding at least 10 distinct configurations; from 500
        requests of 10 to 499 distinct measurements, one net trained on every
        request, calibrated by 5 more trained as many epochs without one fold
        each; ``None`` otherwise.
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
    length_groups : int or None, default=128
        How finely the intervals, quantiles and SLO attainment with the
        output length unknown read an output-length distribution over more
        than ``length_groups`` distinct lengths: its probability is cut into
        ``length_groups`` equal windows, the consecutive lengths that start
        in one window form a group, evaluated at its mean length, and a
        length holding a window's probability or more stays alone. At most
        ``2 * length_groups`` groups, so the cost no longer grows with the
        distribution's support; a group of several lengths holds less than
        ``2 / length_groups`` of the probability. Where a request's meeting
        an objective changes once over the lengths (a curve that keeps one
        direction), an attainment is off by less than that (1.6 points at
        128), and a quantile is the exact one of a level off by less than
        that. ``None``: every length, exactly. The expected totals of
        :meth:`predict_total` and the budgets' lengths read every length.
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
    load_features_ : ndarray of int
        Indices of the load features (of either head).
    decode_load_features_, prefill_load_features_ : ndarray of int
        Indices of the load features that the decode curve's costs and the
        prefill's see.
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
        Difficulty models of the decode total and of the prefill: depth-3
        regression trees of the log absolute errors on the standardised
        features and ``log N`` (per node of a complete binary tree: input
        index, ``-1`` for a leaf, threshold, value); ``sigma`` is the
        exponential of a tree's value. Kept only where it narrows held-out
        90% intervals by 5%, else a single leaf of value 0 (every request
        alike; so after :meth:`recalibrate`). See the user guide,
        "Trusting a prediction".
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
        load_features="auto",
        prefill_load_features="auto",
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
        length_groups=128,
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
        self.load_features = load_features
        self.prefill_load_features = prefill_load_features
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
        self.length_groups = length_groups
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
        return name == "_calibrator" or (name.endswith("_") and not name.startswith("_"))

    def _fit(self, X, y, output_tokens, positioned_latencies, decode_segments):
        check_params(self)
        X_features, from_column = split_output_tokens(X, self.output_tokens_col)
        if y is None:  # scikit-learn's own "requires y" error
            validate_data(self, X_features, y)
        check_no_text(X_features)
        X_arr = validate_data(self, X_features, dtype=np.float64, ensure_all_finite=False)
        label = feature_labeller(self)
        check_finite_features(X_arr, label)
        decode, prefill, two_columns = check_targets(y)
        check_consistent_length(X_arr, decode)
        n_tokens = resolve_output_tokens(self, output_tokens, from_column, X_arr.shape[0])
        segments = check_decode_segments(decode_segments, positioned_latencies, n_tokens)
        names = getattr(self, "feature_names_in_", None)
        roles = resolve_roles(
            self.context_features,
            self.load_features,
            names,
            self.n_features_in_,
            self.prefill_load_features,
        )
        roles = roles._replace(
            scaling=FeatureTransform.log_scaling(X_arr, self.log_features, label)
        )
        # Checked on every request before the calibration split, so that an
        # error names the sample as the caller numbers it.
        context_lengths(X_arr, roles.context, label)
        check_load(X_arr, roles.load, label, names)
        if self.log_features == "auto":
            warn_if_standardised(X_arr, label)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        requests = Requests(X_arr, decode, prefill, n_tokens, segments)
        self.n_outputs_ = 2 if two_columns else 1
        self.device_ = resolve_device(self.device)
        _, self._calibrator = fit_objects(self, requests, roles, seed)
        return self

    # ------------------------------------------------------------ predict
    def predict_positions(self, X, positions, *, load=None):
        """Per-token decode latency at the given positions.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations (an ``output_tokens`` column is ignored).
        positions : array-like of int
            Token positions, ``1`` being the first decode step.
        load : float or dict, default=None
            One load for every row, as in :meth:`predict_slo_attainment`;
            ``X`` then leaves the load columns out.

        Returns
        -------
        latencies : ndarray of shape (n_samples, n_positions), float64
            Milliseconds per token.
        """
        positions = check_positions(positions)
        coef, _ = self._encode(X, load=load)
        warn_lengths(positions, self.max_output_tokens_, "position")
        return self._point(self._curve.at(coef, positions))

    def predict_total(self, X, output_tokens=None, *, load=None):
        """Total decode latency, the sum of :meth:`predict_positions` over ``1..N``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request. If neither this nor the column is given, the
            expectation over ``output_tokens_distribution_`` is returned.
        load : float or dict, default=None
            One load for every row, as in :meth:`predict_slo_attainment`;
            ``X`` then leaves the load columns out.

        Returns
        -------
        totals : ndarray of shape (n_samples,), float64
            Milliseconds.
        """
        return self._total(*self._encode(X, output_tokens, load))

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

    def predict_prefill(self, X, *, load=None):
        """Prefill latency per configuration.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations.
        load : float or dict, default=None
            One load for every row, as in :meth:`predict_slo_attainment`;
            ``X`` then leaves the load columns out.

        Returns
        -------
        prefill : ndarray of shape (n_samples,), float64
            Milliseconds.
        """
        self._check_prefill_head()
        return self._point(self._encode(X, load=load)[0].prefill, 1)

    def _check_prefill_head(self):
        check_is_fitted(self)
        if self.prefill_scale_ is None:
            raise ValueError(
                "This LatencyEstimator was fitted with a 1-D y (T_LLM_decode only) "
                "and has no prefill head; fit it with y = [T_prefill_total, "
                "T_LLM_decode] to predict prefill."
            )

    def predict(self, X, output_tokens=None, *, load=None):
        """Predict targets of the same shape as ``y`` in :meth:`fit`.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request; see :meth:`predict_total`.
        load : float or dict, default=None
            One load for every row, as in :meth:`predict_slo_attainment`;
            ``X`` then leaves the load columns out.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, 2), float64
            ``T_LLM_decode``, or ``[T_prefill_total, T_LLM_decode]``.
        """
        coef, n_tokens = self._encode(X, output_tokens, load)
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

    def choose(self, candidates, **kwargs):
        """Deprecated alias of :func:`sklat.control.choose` (``choose(self, candidates, ...)``).

        .. deprecated:: 0.14
           Removed in 0.15; call :func:`sklat.control.choose`.
        """
        _deprecated("choose")
        return control.choose(self, candidates, **kwargs)

    def recalibrate(self, X, y, output_tokens=None):
        """Adapt the fitted model to a new setting from a few measured requests.

        For a model moved to another GPU, engine, dtype or attention kernel:
        the curve's shape is kept and one multiplier per cost term
        (``cost_scales_``), and from 20 requests slopes on the standardised
        features (``scale_slopes_``), are refitted on the new requests, whose
        cross-fitted errors become the calibration scores; the difficulty
        model is reset. The estimator changes in place (``copy.deepcopy`` it
        first to keep the original). An interval of confidence ``c`` needs
        ``1 / (1 - c) - 1`` requests. See :doc:`/controlling`, "Recalibrate",
        for the model and its coverage.

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
        X_arr, decode, prefill, n_tokens = check_measured(self, X, y, output_tokens, "recalibrate")
        if (1 if prefill is None else 2) != self.n_outputs_:
            raise ValueError(
                f"y must have {self.n_outputs_} column(s), as in fit; got "
                f"{1 if prefill is None else 2}."
            )
        needed = min_calibration(_WARN_CONFIDENCE)
        if len(decode) < needed:
            warnings.warn(
                f"recalibrate got {len(decode)} requests: its intervals and SLO "
                f"probabilities at {_WARN_CONFIDENCE:.0%} need at least {needed} "
                "(1 / (1 - confidence) - 1); recalibrate on more requests to predict them.",
                UserWarning,
                stacklevel=2,
            )
        self._calibrator = recalibrated(
            self._calibrator, X_arr, decode, prefill, n_tokens, self.n_threads
        )
        return self

    def check_drift(self, X, y, output_tokens=None, **kwargs):
        """Deprecated alias of :func:`sklat.control.check_drift` (``check_drift(self, X, y, ...)``).

        .. deprecated:: 0.14
           Removed in 0.15; call :func:`sklat.control.check_drift`.
        """
        _deprecated("check_drift")
        return control.check_drift(self, X, y, output_tokens, **kwargs)

    def in_domain(self, X, output_tokens=None, *, load=None):
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
        load : float or dict, default=None
            One load for every row, as in :meth:`predict_slo_attainment`;
            ``X`` then leaves the load columns out.

        Returns
        -------
        inside : ndarray of shape (n_samples,), bool
            ``True`` where the request lies inside the training domain.
        """
        X_arr, n_tokens = self._checked(X, output_tokens, load)
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

    def _grouped(self, dist):
        """``dist`` as the calibrated predictions read it: on at most
        ``2 * length_groups`` lengths (see the parameter)."""
        groups = self.length_groups
        if groups is not None and (
            isinstance(groups, (bool, np.bool_))
            or not isinstance(groups, (int, np.integer))
            or groups < 1
        ):
            raise ValueError(f"length_groups must be None or an integer >= 1; got {groups!r}.")
        return grouped(dist, groups)

    # ----------------------------------------------------------- internals
    def _checked(self, X, output_tokens, load):
        """``X`` with the ``load`` given for every row, and ``output_tokens``,
        checked as the fitted features: ``(X_arr, output_tokens or None)``."""
        check_is_fitted(self)
        return check_features(self, with_load(self, X, load), output_tokens)

    def _check_rows(self, X, output_tokens=None):
        """Raise ``ValueError`` (naming the sample) for what predicting on
        ``X`` would refuse, without encoding it."""
        X_arr, _ = self._checked(X, output_tokens, None)
        self._curve.check(X_arr)

    def _encode(self, X, output_tokens=None, load=None):
        """Check ``X`` (with the ``load`` given for every row, and
        ``output_tokens``) once, warn about values outside the training
        domain; ``(coefficients, output_tokens or None)``."""
        X_arr, n_tokens = self._checked(X, output_tokens, load)
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
        # 0.16 and earlier read every length of a distribution; their files
        # now read them as a new model does.
        vars(self).setdefault("length_groups", 128)
        # 0.14 and earlier had no load features.
        vars(self).setdefault("load_features", None)
        # 0.17 and earlier: the prefill saw the load features, as "auto" does
        # without the columns of the instant a request was sent.
        vars(self).setdefault("prefill_load_features", "auto")
        if "net_" in vars(self) and "nets_" not in vars(self):
            self.nets_ = [self.net_]
        if "_calibrator" not in vars(self) and "net_" in vars(self):
            # A 0.6 pickle stored the fitted attributes themselves: move them
            # into the fitted objects.
            stored = {k: vars(self).pop(k) for k in self.NAMES if k in vars(self)}
            for name in ("n_features_in_", "n_outputs_", "total_norm_", "feature_names_in_"):
                stored[name] = vars(self).get(name)
            assemble_fitted(self, stored)
        elif "_curve" in vars(self):
            # 0.7 to 0.13 held the curve beside its calibration.
            self._calibrator.curve = vars(self).pop("_curve")


def _deprecated(method):
    warnings.warn(
        f"LatencyEstimator.{method} is deprecated since 0.14 and will be removed in 0.15; "
        f"call sklat.control.{method}(estimator, ...) instead.",
        FutureWarning,
        stacklevel=3,
    )
