"""The fitted attributes that the fitted objects hold, read as properties.

:class:`FittedAttributes` is a mixin of :class:`~sklat.LatencyEstimator`: the
curve (:class:`~sklat._curve.Curve`), its feature transform and the calibration
(:class:`~sklat._calibrator.Calibrator`) keep these values, and each property
reads one of them. An unfitted estimator has none (``AttributeError``, so
``hasattr`` is False). The estimator's docstring documents them.
"""


class FittedAttributes:
    """Read-only fitted attributes of a :class:`~sklat.LatencyEstimator`."""

    @property
    def _curve(self):
        """The fitted curve: the one its calibration calibrates."""
        return self._calibrator.curve

    @property
    def step_scale_(self):
        """Median per-token decode latency of the training requests."""
        return self._curve.step_scale

    @property
    def prefill_scale_(self):
        """Median prefill latency, or None without a prefill head."""
        return self._curve.prefill_scale

    @property
    def output_tokens_distribution_(self):
        """The training output lengths: ``{"values", "probabilities"}``."""
        return self._curve.lengths

    @property
    def max_output_tokens_(self):
        """Longest output seen in training."""
        return self._curve.max_output_tokens

    @property
    def position_basis_(self):
        """The position basis curves tabulated at positions ``1..len``."""
        return self._curve.basis_table

    @property
    def context_features_(self):
        """Indices of the features whose sum is the context length."""
        return self._curve.context_features

    @property
    def load_features_(self):
        """Indices of the load features."""
        return self._curve.load_features

    @property
    def decode_load_features_(self):
        """Indices of the load features that the decode's costs see."""
        return self._curve.decode_load_features

    @property
    def prefill_load_features_(self):
        """Indices of the load features that the prefill's costs see."""
        return self._curve.prefill_load_features

    @property
    def context_scale_(self):
        """``S``: the median of ``context_0 + N`` over the training requests."""
        return self._curve.context_scale

    @property
    def feature_range_(self):
        """Minimum and maximum of each feature over the training requests."""
        return self._curve.feature_range

    @property
    def cost_scales_(self):
        """Recalibration multipliers of the cost terms (all 1 after fit)."""
        return self._curve.scales

    @property
    def scale_slopes_(self):
        """Recalibration slopes on the standardised features (all 0 after fit)."""
        return self._curve.slopes

    @property
    def feature_log_mask_(self):
        """Features that are log-transformed."""
        return self._curve.transform.log_mask

    @property
    def feature_log_shift_(self):
        """``0`` for ``log(x)``, ``1`` for ``log1p(x)``."""
        return self._curve.transform.log_shift

    @property
    def feature_mean_(self):
        """Means of the (log-transformed) features."""
        return self._curve.transform.mean

    @property
    def feature_scale_(self):
        """Standard deviations of the (log-transformed) features."""
        return self._curve.transform.scale

    @property
    def conformity_scores_(self):
        """Normalised signed log errors of the calibration requests."""
        return self._calibrator.scores

    @property
    def position_scores_(self):
        """Absolute log errors of the calibration requests' steps, and weights."""
        return self._calibrator.position_scores

    @property
    def difficulty_tree_(self):
        """Difficulty models of the decode total and of the prefill."""
        return self._calibrator.difficulty_trees

    @property
    def point_factors_(self):
        """Per output, the multiplier of the curve's centre for ``point="relative"``."""
        return self._calibrator.point_factors


# Names of the public properties above: a pickle of 0.6 stored these values
# themselves (see LatencyEstimator.__setstate__).
FittedAttributes.NAMES = tuple(
    name
    for name, value in vars(FittedAttributes).items()
    if isinstance(value, property) and not name.startswith("_")
)
