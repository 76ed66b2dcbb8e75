"""The scikit-learn façade: :class:`LatencyEstimator`."""

import numbers

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import (
    check_consistent_length, check_is_fitted, validate_data)
from skorch.callbacks import EarlyStopping, ProgressBar
from skorch.helper import predefined_split

from ._device import resolve_device
from ._distribution import (
    check_distribution, empirical_distribution, expected_position, survival)
from ._features import (
    LOG_FEATURES, FeatureTransform, context_lengths, resolve_context_features)
from ._loss import LOSS_KINDS
from ._module import CostTermsLatencyModule
from ._net import (
    BatchIterator,
    LatencyNet,
    RequestData,
    WeightAveraging,
    WeightedLatencyLoss,
)
from ._validation import (
    check_output_tokens, check_positioned_latencies,
    check_positions, check_targets, DECODE_COL, PREFILL_COL)

# Rows / positions evaluated at once at prediction time: bounds the
# intermediate memory whatever the number of configurations or the length.
_ROW_CHUNK = 8192
_POSITION_CHUNK = 65536
# Longest position whose basis values are tabulated at fit time.
_BASIS_TABLE_MAX = 65536
BUDGET_STRATEGIES = ("max", "position", "expectation")


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
    net_ : skorch.NeuralNet
        The trained skorch net; ``net_.module_`` is the torch module.
    history_ : skorch.callbacks.History
        Per-epoch training (and held-out) losses.
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
    """

    def __init__(
        self,
        prefill_weight=2.0,
        decode_total_weight=1.0,
        positioned_weight=0.5,
        *,
        loss="log",
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
        n_iter_no_change=20,
        log_features="auto",
        output_tokens_col="output_tokens",
        default_output_tokens=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.prefill_weight = prefill_weight
        self.decode_total_weight = decode_total_weight
        self.positioned_weight = positioned_weight
        self.loss = loss
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
        self.n_iter_no_change = n_iter_no_change
        self.log_features = log_features
        self.output_tokens_col = output_tokens_col
        self.default_output_tokens = default_output_tokens
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, output_tokens=None, positioned_latencies=None):
        """Train on requests whose total decode latency is known.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configuration features. A DataFrame may carry ``output_tokens``
            in the column ``output_tokens_col``.
        y : array-like of shape (n_samples,) or (n_samples, 2)
            ``T_LLM_decode``, or ``[T_prefill_total, T_LLM_decode]`` (a
            DataFrame is matched by these names). Milliseconds, > 0.
        output_tokens : array-like of shape (n_samples,), default=None
            Number of decoded tokens ``N`` of each request (integers >= 1).
        positioned_latencies : list of length n_samples, default=None
            Per request, ``None`` or its ``N`` per-step decode latencies.

        Returns
        -------
        self : LatencyEstimator
            The fitted estimator.
        """
        self._check_params()
        X_features, from_column = self._pop_output_tokens(X)
        if y is None:  # scikit-learn's own "requires y" error
            validate_data(self, X_features, y)
        X_arr = validate_data(self, X_features, dtype=np.float64,
                              ensure_all_finite=False)
        self._check_finite_features(X_arr)
        decode, prefill, two_columns = check_targets(_select_target_columns(y))
        self.n_outputs_ = 2 if two_columns else 1
        check_consistent_length(X_arr, decode)
        n = X_arr.shape[0]
        n_tokens = self._resolve_output_tokens(output_tokens, from_column, n)
        step_values, step_offsets = check_positioned_latencies(
            positioned_latencies, n_tokens)

        transform = FeatureTransform.fit(X_arr, self.log_features, self._feature_label)
        self.feature_log_mask_ = transform.log_mask
        self.feature_log_shift_ = transform.log_shift
        self.feature_mean_ = transform.mean
        self.feature_scale_ = transform.scale
        self.context_features_ = resolve_context_features(
            self.context_features, getattr(self, "feature_names_in_", None),
            self.n_features_in_)
        context = context_lengths(X_arr, self.context_features_, self._feature_label)
        self.context_scale_ = float(max(1.0, np.median(context + n_tokens)))
        self.step_scale_ = float(np.median(decode / n_tokens))
        self.prefill_scale_ = float(np.median(prefill)) if prefill is not None else None
        self.output_tokens_distribution_ = empirical_distribution(n_tokens)
        self.max_output_tokens_ = int(n_tokens.max())
        self.device_ = resolve_device(self.device)

        data = RequestData(
            x=self._transform_features(X_arr),
            output_tokens=n_tokens,
            context=(context / self.context_scale_).astype(np.float32),
            total=(decode / self.step_scale_).astype(np.float32),
            prefill=(None if prefill is None
                     else (prefill / self.prefill_scale_).astype(np.float32)),
            step_values=(step_values / self.step_scale_).astype(np.float32),
            step_offsets=step_offsets,
        )
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        self.net_ = self._train(data, seed, total_norm=float(n_tokens.mean()))
        self.history_ = self.net_.history
        self._tabulate_basis()
        return self

    def _tabulate_basis(self):
        """Evaluate the position encoder once for positions 1..max(N) seen in
        training (capped): predictions then look positions up instead of
        running the network, which keeps a single budget check cheap."""
        n = min(self.max_output_tokens_, _BASIS_TABLE_MAX)
        self.position_basis_ = self._run_basis(np.arange(1, n + 1))

    def _train(self, data, seed, total_norm):
        rng = np.random.RandomState(seed)
        n = len(data)
        n_valid = int(round(self.validation_fraction * n))
        callbacks = [("weight_averaging", WeightAveraging(self.weight_averaging))]
        train_split = None
        if n_valid >= 1 and n - n_valid >= 1:
            order = rng.permutation(n)
            valid = data.subset(np.sort(order[:n_valid]))
            data = data.subset(np.sort(order[n_valid:]))
            train_split = predefined_split(valid)
            callbacks.append(("early_stopping", EarlyStopping(
                monitor="valid_loss", patience=self.n_iter_no_change,
                # WeightAveraging restores the best averaged weights.
                threshold=1e-4, load_best=False,
                sink=print if self.verbose else _silent)))
        if self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        net = self._make_net(seed, total_norm, train_split, callbacks,
                             initial_fit=self._initial_fit(data))
        devices = [self.device_] if self.device_.startswith("cuda") else []
        # Seed a private copy of torch's RNG: fitting leaves the caller's
        # global random state untouched.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            net.fit(data, None)
        net.module_.eval()
        return net

    def _initial_fit(self, data):
        """Ridge fits of the log per-token average (on the features that are not
        context features) and of the log prefill (on all), in standardised
        units: where the power laws start."""
        z = data.x.astype(np.float64)
        keep = np.ones(z.shape[1], dtype=bool)
        keep[self.context_features_] = False
        fits = {"decode": _log_ridge(z, np.log(data.total / data.output_tokens), keep)}
        fits["prefill"] = (None if data.prefill is None
                           else _log_ridge(z, np.log(data.prefill), np.ones_like(keep)))
        return fits

    def _make_net(self, seed, total_norm, train_split=None, callbacks=(),
                  initial_fit=None):
        """The skorch net for this estimator's parameters and fitted scales."""
        return LatencyNet(
            module=CostTermsLatencyModule,
            module__n_features=self.n_features_in_,
            module__hidden_size=self.hidden_size,
            module__n_basis=self.n_basis,
            module__n_cost_terms=self.n_cost_terms,
            module__with_prefill=self.prefill_scale_ is not None,
            module__position_scale=float(self.max_output_tokens_),
            module__context_scale=self.context_scale_,
            module__context_features=[int(c) for c in self.context_features_],
            module__initial_fit=initial_fit,
            criterion=WeightedLatencyLoss,
            criterion__kind=self.loss,
            criterion__prefill_weight=self.prefill_weight,
            criterion__decode_total_weight=self.decode_total_weight,
            criterion__positioned_weight=self.positioned_weight,
            criterion__total_norm=total_norm,
            optimizer=torch.optim.AdamW,
            optimizer__weight_decay=self.weight_decay,
            optimizer__param_groups=[
                (pattern, {"weight_decay": self.config_mlp_weight_decay})
                for pattern in ("decode_mlp.*", "prefill_mlp.*")],
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train=BatchIterator,
            iterator_train__shuffle=True,
            iterator_train__seed=seed,
            iterator_valid=BatchIterator,
            train_split=train_split,
            callbacks=list(callbacks),
            device=self.device_,
            verbose=int(self.verbose > 0),
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
        coef = self._encode(X)
        positions = check_positions(positions)
        phi = self._basis(positions)
        growth = positions / self.context_scale_
        out = np.empty((len(coef.flat), len(phi)))
        # Written in place, a chunk of rows at a time: no temporary of the
        # output's size, however many rows and positions.
        for start in range(0, len(coef.flat), _ROW_CHUNK):
            rows = slice(start, start + _ROW_CHUNK)
            chunk = out[rows]
            np.matmul(coef.shape[rows], phi.T, out=chunk)
            chunk += (coef.flat[rows] + coef.slope[rows] * coef.context[rows])[:, None]
            chunk += coef.slope[rows, None] * growth[None, :]
        return out

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
        coef = self._encode(X, output_tokens)
        if coef.output_tokens is None:
            return self._expected_total(coef, self.output_tokens_distribution_)
        n = coef.output_tokens
        # Exact sums of the basis over 1..N, shared by all requests.
        cumulative = np.cumsum(self._basis(np.arange(1, n.max() + 1)), axis=0)
        n = n.astype(np.float64)
        return (coef.flat * n
                + coef.slope * (coef.context * n + n * (n + 1) / (2 * self.context_scale_))
                + np.einsum("ik,ik->i", coef.shape, cumulative[coef.output_tokens - 1]))

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
        check_is_fitted(self)
        if self.prefill_scale_ is None:
            raise ValueError(
                "This LatencyEstimator was fitted with a 1-D y (T_LLM_decode only) "
                "and has no prefill head; fit it with y = [T_prefill_total, "
                "T_LLM_decode] to predict prefill.")
        return self._encode(X).prefill

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
        total = self.predict_total(X, output_tokens)
        if self.n_outputs_ == 1:
            return total
        return np.column_stack([self.predict_prefill(X), total])

    def score(self, X, y, output_tokens=None):
        """R² of :meth:`predict` (averaged over the columns of a 2-column ``y``).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations; a DataFrame may carry ``output_tokens`` as a column.
        y : array-like of shape (n_samples,) or (n_samples, 2)
            True targets, as in :meth:`fit`.
        output_tokens : int or array-like of shape (n_samples,), default=None
            ``N`` per request; see :meth:`predict_total`.

        Returns
        -------
        score : float
        """
        y = np.asarray(_select_target_columns(y), dtype=np.float64)
        return float(r2_score(y, self.predict(X, output_tokens)))

    def predict_budget(self, X, strategy="max", *, positions=(1, 5, 10, 20),
                       position=None, output_tokens_distribution=None):
        """Per-token decode latency to check against a budget, output length unknown.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations.
        strategy : {"max", "position", "expectation"}, default="max"
            - ``"max"``: the conservative maximum over the probe ``positions``;
            - ``"position"``: the latency at ``position``, by default the
              expected position of a decoded token under the output-length
              distribution (``E[N (N + 1) / 2] / E[N]``);
            - ``"expectation"``: the mean latency of a decoded token under the
              output-length distribution, ``E[sum_{p<=N} f(p)] / E[N]``.
        positions : sequence of int, default=(1, 5, 10, 20)
            Probe positions of ``"max"``.
        position : int, default=None
            Position of ``"position"``.
        output_tokens_distribution : dict or array-like, default=None
            ``{"values": ..., "probabilities": ...}`` or a sample of output
            lengths; ``None`` uses ``output_tokens_distribution_``.

        Returns
        -------
        budget : ndarray of shape (n_samples,), float64
            Milliseconds per token.
        """
        if strategy not in BUDGET_STRATEGIES:
            raise ValueError(
                f"strategy must be one of {BUDGET_STRATEGIES}; got {strategy!r}.")
        check_is_fitted(self)
        dist = (self.output_tokens_distribution_ if output_tokens_distribution is None
                else check_distribution(output_tokens_distribution))
        if strategy == "max":
            return self.predict_positions(X, positions).max(axis=1)
        if strategy == "position":
            if position is None:
                position = expected_position(dist)
            return self.predict_positions(X, [position])[:, 0]
        mean_length = float(np.dot(dist["values"], dist["probabilities"]))
        return self._expected_total(self._encode(X), dist) / mean_length

    # ----------------------------------------------------------- internals
    def _check_params(self):
        for name in ("prefill_weight", "decode_total_weight", "positioned_weight"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
        if self.decode_total_weight == 0 and self.positioned_weight == 0:
            raise ValueError(
                "decode_total_weight and positioned_weight are both 0: nothing "
                "would train the decode head.")
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}; got {self.loss!r}.")
        for name in ("hidden_size", "n_basis", "n_cost_terms", "max_epochs", "batch_size",
                     "n_iter_no_change"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
        for name in ("lr", "weight_decay", "config_mlp_weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
        if not (isinstance(self.weight_averaging, numbers.Real)
                and 0 <= self.weight_averaging < 1):
            raise ValueError("weight_averaging must be in [0, 1); got "
                             f"{self.weight_averaging!r}.")
        if not (isinstance(self.validation_fraction, numbers.Real)
                and 0 <= self.validation_fraction < 1):
            raise ValueError("validation_fraction must be in [0, 1); got "
                             f"{self.validation_fraction!r}.")
        if self.log_features not in LOG_FEATURES:
            raise ValueError("log_features must be 'auto', 'all' or 'none'; got "
                             f"{self.log_features!r}.")
        if self.default_output_tokens is not None:
            check_output_tokens([self.default_output_tokens], 1, "default_output_tokens")

    def _pop_output_tokens(self, X):
        """Split the ``output_tokens`` column off a DataFrame ``X``."""
        if isinstance(X, pd.DataFrame) and self.output_tokens_col in X.columns:
            return X.drop(columns=self.output_tokens_col), X[self.output_tokens_col]
        return X, None

    def _resolve_output_tokens(self, output_tokens, from_column, n):
        if output_tokens is not None and from_column is not None:
            raise ValueError(
                f"output_tokens was given both as an argument and as the column "
                f"{self.output_tokens_col!r} of X; give it once.")
        if output_tokens is None:
            output_tokens = from_column
        if output_tokens is None:
            if self.default_output_tokens is None:
                raise ValueError(
                    "output_tokens is required to fit: pass output_tokens=... (one "
                    f"integer >= 1 per sample), add a column {self.output_tokens_col!r} "
                    "to the DataFrame X, or set default_output_tokens.")
            output_tokens = self.default_output_tokens
        return check_output_tokens(output_tokens, n)

    def _check_finite_features(self, X_arr):
        bad = ~np.isfinite(X_arr)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"X column {self._feature_label(col)} must be finite (no NaN or inf); sample {row} "
                f"is {X_arr[row, col]}.")

    def _feature_label(self, col):
        names = getattr(self, "feature_names_in_", None)
        return repr(str(names[col])) if names is not None else f"{col}"

    def _transform_features(self, X_arr):
        transform = FeatureTransform(self.feature_log_mask_, self.feature_log_shift_,
                                     self.feature_mean_, self.feature_scale_)
        return transform.transform(X_arr, self._feature_label)

    def _module(self):
        # net_.device follows the weights, also after unpickling a CUDA-trained
        # net on a CPU-only machine (skorch maps it to "cpu").
        return self.net_.module_, torch.device(self.net_.device)

    def _encode(self, X, output_tokens=None):
        """The decode curve's coefficients for the rows of X, in milliseconds.

        Returns a Bunch with ``flat`` (n,), ``slope`` (n,) (per unit of
        ``(context_0 + p) / S``), ``shape`` (n, K), ``context`` (n,)
        (``context_0 / S``), ``prefill`` (n,) or None, and ``output_tokens``
        (validated, or None).
        """
        check_is_fitted(self)
        X_features, from_column = self._pop_output_tokens(X)
        X_arr = validate_data(self, X_features, reset=False, dtype=np.float64,
                              ensure_all_finite=False)
        self._check_finite_features(X_arr)
        n = X_arr.shape[0]
        if output_tokens is None and from_column is not None:
            output_tokens = from_column
        n_tokens = None if output_tokens is None else check_output_tokens(output_tokens, n)
        x = self._transform_features(X_arr)
        context = context_lengths(X_arr, self.context_features_, self._feature_label)
        module, device = self._module()
        parts = []
        with torch.no_grad():
            for start in range(0, n, _ROW_CHUNK):
                chunk = torch.from_numpy(x[start:start + _ROW_CHUNK]).to(device)
                parts.append(module.encode(chunk))
        coef = {key: _cat_numpy([p[key] for p in parts])
                for key in ("flat", "slope", "shape", "prefill")
                if parts[0][key] is not None}
        step = self.step_scale_
        return Bunch(
            flat=step * coef["flat"], slope=step * coef["slope"],
            shape=step * coef["shape"].reshape(n, module.n_basis),
            context=context / self.context_scale_,
            prefill=(self.prefill_scale_ * coef["prefill"] if "prefill" in coef else None),
            output_tokens=n_tokens)

    def _basis(self, positions):
        """Basis curves at ``positions`` (int array), float64 of shape (P, K);
        constant past the longest training request."""
        positions = np.minimum(positions, self.max_output_tokens_)
        table = self.position_basis_
        if positions.max() <= len(table):
            return table[positions - 1]
        out = np.empty((len(positions), table.shape[1]))
        known = positions <= len(table)
        out[known] = table[positions[known] - 1]
        out[~known] = self._run_basis(positions[~known])
        return out

    def _run_basis(self, positions):
        """The position encoder on ``positions``, a chunk at a time."""
        module, device = self._module()
        parts = []
        with torch.no_grad():
            for start in range(0, len(positions), _POSITION_CHUNK):
                chunk = torch.from_numpy(positions[start:start + _POSITION_CHUNK])
                parts.append(module.basis(chunk.to(device)).double().cpu().numpy())
        return np.concatenate(parts, axis=0)

    def _expected_total(self, coef, dist):
        """Total decode latency with ``N`` drawn from ``dist``:
        ``sum_p f(p) P(N >= p)``."""
        surv = survival(dist)
        values = dist["values"].astype(np.float64)
        mean_n = float(np.dot(dist["probabilities"], values))
        mean_triangle = float(np.dot(dist["probabilities"], values * (values + 1) / 2))
        basis_sum = self._basis(np.arange(1, len(surv) + 1)).T @ surv
        return (coef.flat * mean_n
                + coef.slope * (coef.context * mean_n + mean_triangle / self.context_scale_)
                + coef.shape @ basis_sum)


def _log_ridge(z, target, keep, alpha=1.0):
    """``(coef, intercept)`` of a ridge regression of ``target`` on the columns
    ``keep`` of ``z`` (zeros elsewhere)."""
    coef = np.zeros(z.shape[1])
    sub = z[:, keep]
    intercept = float(target.mean())
    if sub.shape[1]:
        centred = sub - sub.mean(axis=0)
        gram = centred.T @ centred + alpha * np.eye(sub.shape[1])
        coef[keep] = np.linalg.solve(gram, centred.T @ (target - intercept))
        intercept -= float(sub.mean(axis=0) @ coef[keep])
    return coef.astype(np.float32), intercept



def _cat_numpy(tensors):
    if not tensors:
        return np.zeros(0)
    return torch.cat(tensors).double().cpu().numpy()


def _silent(*args, **kwargs):
    """A sink that prints nothing (skorch callbacks take a callable)."""


def _select_target_columns(y):
    """Order a DataFrame ``y`` as ``[T_prefill_total, T_LLM_decode]``."""
    if isinstance(y, pd.DataFrame):
        cols = set(y.columns)
        if {PREFILL_COL, DECODE_COL} <= cols:
            return y[[PREFILL_COL, DECODE_COL]]
        if DECODE_COL in cols and y.shape[1] == 1:
            return y[DECODE_COL]
    return y
