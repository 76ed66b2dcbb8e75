"""A fitted model's split-conformal calibration, as one object.

:class:`Calibrator` owns the difficulty trees (fitted on the point model's own
training requests), the conformity scores of the calibration requests and the
per-step scores; given a :class:`~sklat._curve.Curve` and the coefficients of
new requests it gives intervals, one-sided bounds and SLO attainment. The
arithmetic (ranks, trees, mixture quantiles) is in :mod:`sklat._conformal`.
"""

import functools

import numpy as np

from ._conformal import (
    TREE_NODES,
    attainment,
    difficulty_inputs,
    finite_bounds,
    fit_difficulty,
    interval_rank,
    mixture_quantiles,
    position_bound,
    symmetric,
    tree_value,
)
from ._score_scale import (
    CHECK_LEVEL,
    MIN_NARROWING,
    SCORE_POWERS,
    choose_power,
    cross_validated_width,
    shifted,
    to_scale,
)

# Per-step latencies of one calibration request kept for per-position
# intervals (evenly spaced): bounds the model file's size.
STEPS_KEPT = 64
# Held-out requests needed to judge a difficulty tree or a score scale (at
# the level CHECK_LEVEL, by MIN_NARROWING as a scale is: a tree of noise can
# look a hair narrower on a few dozen requests), and the folds the held-out
# requests are cut into to compare scales (each bounded by the others).
_MIN_HELD_OUT = 20
_SCALE_FOLDS = 5


class Calibrator:
    """Calibration of a fitted curve.

    The scores are read-only once given (their sorted copies are kept).

    Parameters
    ----------
    difficulty_trees : ndarray of shape (n_outputs, 3, TREE_NODES)
        Difficulty trees of the decode total and (if fitted) of the prefill,
        see :func:`sklat._conformal.fit_difficulty`.
    scores : ndarray of shape (n_calibration, n_outputs)
        Normalised signed errors of the calibration requests on each output's
        scale (column 0: decode total, column 1: prefill).
    position_scores : ndarray of shape (n_steps, 2)
        Absolute log errors of per-step latencies of the calibration requests
        and their weights (each request weighs 1).
    powers : ndarray of shape (n_outputs,), default=None
        The Box-Cox power of each output's scale (:mod:`sklat._score_scale`;
        0: log errors, the default).
    """

    def __init__(self, difficulty_trees, scores, position_scores, powers=None):
        self.difficulty_trees = difficulty_trees
        self.scores = scores
        self.position_scores = position_scores
        self.powers = np.zeros(scores.shape[1]) if powers is None else np.asarray(powers, float)

    def __setstate__(self, state):
        # Pickles of 0.8 and earlier calibrated on log errors.
        state.setdefault("powers", np.zeros(state["scores"].shape[1]))
        self.__dict__.update(state)

    @classmethod
    def fit(cls, curve, fit_part, cal_part, *, held_out=None, n_threads="auto"):
        """Difficulty trees from the errors of ``curve`` on ``fit_part`` (the
        requests it was trained on), scores from ``cal_part`` (held out of
        training), both :class:`~sklat._requests.Requests`. A tree is kept
        only where it narrows the intervals of the requests ``held_out`` (rows
        of ``fit_part`` held out of the weights for early stopping; their
        errors are out of sample): a tree of in-sample errors can mistake what
        the model memorised for what is easy. The scale of the errors is
        chosen on the same held-out requests (log errors with fewer than
        ``_MIN_HELD_OUT``), so the calibration requests stay out of every
        choice and split conformal's guarantee stays exact."""
        predicted = _predictions(curve, fit_part, n_threads)
        inputs = difficulty_inputs(predicted[2].z, fit_part.output_tokens)
        if held_out is not None and len(held_out) < _MIN_HELD_OUT:
            held_out = None
        trees, powers = [], []
        for j, (measured, y_hat) in enumerate(_outputs(fit_part, predicted)):
            # The prefill does not depend on the output length.
            x = inputs if j == 0 else inputs[:, :-1]
            tree, power = _difficulty_and_scale(measured, y_hat, x, held_out)
            trees.append(tree)
            powers.append(power)
        trees = np.stack(trees)
        scores = np.zeros((len(cal_part), len(trees)))
        if len(cal_part):
            scores = cls(trees, scores, None, powers).score(curve, cal_part, n_threads=n_threads)
        return cls(trees, scores, _position_scores(curve, cal_part, n_threads), np.array(powers))

    @classmethod
    def fit_cross(cls, curve, requests, folds, *, n_threads="auto"):
        """Cross-fitted calibration of an ensemble ``curve`` whose member
        ``k`` was trained on every request of ``requests`` outside fold ``k``
        (``folds``: the fold of each request): each request is scored by the
        member that did not see it, so every request calibrates. The
        difficulty is flat: a tree fitted on the very errors it would
        normalise makes them look smaller than a new request's. The scale of
        the errors is chosen on the same out-of-fold errors, fold by fold."""
        n_outputs = 1 if requests.prefill is None else 2
        predicted = [np.zeros(len(requests)) for _ in range(n_outputs)]
        steps = []
        for k in range(folds.max() + 1):
            rows = np.flatnonzero(folds == k)
            member, part = curve.member(k), requests.take(rows)
            decode, prefill, _ = _predictions(member, part, n_threads)
            predicted[0][rows] = decode
            if prefill is not None:
                predicted[1][rows] = prefill
            steps.append(_position_scores(member, part, n_threads))
        predicted = (predicted[0], predicted[1] if n_outputs == 2 else None, None)
        powers = [
            choose_power({p: cross_validated_width(y, y_hat, folds, p) for p in SCORE_POWERS})
            for y, y_hat in _outputs(requests, predicted)
        ]
        scores = np.column_stack([e for e in _errors(requests, predicted, powers) if e is not None])
        trees = np.stack([flat_tree(np.zeros((3, TREE_NODES)))] * n_outputs)
        return cls(trees, scores, np.concatenate(steps), np.array(powers))

    def score(self, curve, part, *, n_threads="auto"):
        """(n, n_outputs): the conformity scores of the requests of ``part``
        (:class:`~sklat._requests.Requests`; ``prefill`` may be None)."""
        predicted = _predictions(curve, part, n_threads)
        decode, prefill = _errors(part, predicted, self.powers)
        coef = predicted[2]
        scores = np.zeros((len(part), self.scores.shape[1]))
        scores[:, 0] = decode / self.sigma_total(coef.z, part.output_tokens)
        if prefill is not None:
            scores[:, 1] = prefill / self.sigma_prefill(coef.z)
        return scores

    # ------------------------------------------------------------ difficulty
    def sigma_total(self, z, lengths):
        """Difficulty of the decode total at standardised features ``z`` and
        output ``lengths``."""
        return np.exp(tree_value(self.difficulty_trees[0], difficulty_inputs(z, lengths)))

    def sigma_prefill(self, z):
        """Difficulty of the prefill at standardised features ``z``."""
        inputs = difficulty_inputs(z, np.ones(len(z)))
        return np.exp(tree_value(self.difficulty_trees[1], inputs))

    # ---------------------------------------------------------------- scores
    def check_ready(self):
        """Raise ``ValueError`` when there are no calibration requests."""
        if not len(self.scores):
            raise ValueError(
                "this LatencyEstimator holds no calibration requests; fit it with "
                "calibration_fraction > 0 on enough requests to predict intervals or "
                "probabilities."
            )

    def sorted_scores(self, target):
        """Sorted scores of the decode total, or of the prefill (``target="prefill"``)."""
        self.check_ready()
        return self._sorted[1 if target == "prefill" else 0]

    @functools.cached_property
    def _sorted(self):
        # Sorted once: a decision sorts nothing but its own values.
        return [np.sort(column) for column in self.scores.T]

    @functools.cached_property
    def _symmetric_decode(self):
        return symmetric(self._sorted[0])

    def predictive(self, curve, coef, output_tokens, dist):
        """``(center, sigma, weights, lengths)`` of the decode total: (n, 1)
        for known ``output_tokens``, else (n, J) over the ``J`` lengths of
        ``dist`` with probabilities ``weights``; ``lengths`` (float, the
        shape of ``center``) the output length of each."""
        if output_tokens is not None:
            center = curve.total(coef, output_tokens)[:, None]
            spread = self.sigma_total(coef.z, output_tokens)[:, None]
            return center, spread, np.ones(1), output_tokens[:, None].astype(np.float64)
        values = dist["values"]
        center = curve.totals_at(coef, values)
        J, n = len(values), len(coef)
        spread = self.sigma_total(np.repeat(coef.z, J, axis=0), np.tile(values, n)).reshape(n, J)
        lengths = np.broadcast_to(values.astype(np.float64)[None, :], center.shape)
        return center, spread, dist["probabilities"], lengths

    # ------------------------------------------------------------- intervals
    def decode_interval(self, curve, coef, output_tokens, dist, confidence, *, per_token):
        """(n, 2) bounds of the decode total (or per-token latency)."""
        scores = self.sorted_scores("total")
        n = len(scores)
        k = interval_rank(n, confidence, "for an interval")
        center, spread, weights, lengths = self.predictive(curve, coef, output_tokens, dist)
        # |e|_(k) is the (n + k)-th of the 2n symmetrised scores, -|e|_(k)
        # the (n - k + 1)-th: for one length, exactly y_hat * exp(+-sigma |e|_(k))
        # on the log scale.
        levels = [(n - k + 1) / (2 * n), (n + k) / (2 * n)]
        bounds = mixture_quantiles(
            center,
            spread,
            weights,
            self._symmetric_decode,
            levels,
            power=self.powers[0],
            divisor=lengths if per_token else None,
        )
        return finite_bounds(bounds)

    def prefill_interval(self, coef, confidence):
        """(n, 2) bounds of the prefill."""
        scores = self.sorted_scores("prefill")
        k = interval_rank(len(scores), confidence, "for an interval")
        sigma, bound = self.sigma_prefill(coef.z), np.sort(np.abs(scores))[k - 1]
        power = self.powers[1]
        low = shifted(coef.prefill, sigma, -bound, power)
        return finite_bounds(np.column_stack([low, shifted(coef.prefill, sigma, bound, power)]))

    def position_bound(self, confidence):
        """The absolute log error bounding a per-step latency at ``confidence``."""
        if not len(self.position_scores):
            raise ValueError(
                "target='position' needs calibration requests with per-step data "
                "(positioned_latencies, or decode_segments of one token); this model has none."
            )
        return position_bound(self.position_scores, confidence, "with per-step data")

    def position_interval(self, values, confidence):
        """(n, P, 2) bounds of per-step latencies ``values`` (n, P)."""
        bound = self.position_bound(confidence)
        return finite_bounds(np.stack([values * np.exp(-bound), values * np.exp(bound)], axis=2))

    def upper_rank(self, confidence):
        """Sorted decode scores and the rank of a one-sided upper bound at
        ``confidence``."""
        scores = self.sorted_scores("total")
        return scores, interval_rank(len(scores), confidence, "for an upper bound")

    def upper_at_length(self, point, z, length, confidence):
        """The calibrated upper bound at ``confidence`` of ``point`` (a
        per-token latency at output ``length``)."""
        scores, k = self.upper_rank(confidence)
        spread = self.sigma_total(z, np.full(len(point), length))
        total = shifted(point * length, spread, scores[k - 1], self.powers[0])
        return finite_bounds(total / length)

    def upper_per_token(self, curve, coef, dist, confidence):
        """Upper ``confidence`` quantile of the per-token latency, ``N`` drawn
        from ``dist``."""
        scores, k = self.upper_rank(confidence)
        center, spread, weights, lengths = self.predictive(curve, coef, None, dist)
        bound = mixture_quantiles(
            center,
            spread,
            weights,
            scores,
            [k / len(scores)],
            power=self.powers[0],
            divisor=lengths,
        )
        return finite_bounds(bound[:, 0])

    def attainment(self, curve, coef, output_tokens, dist, *, ttft, tpot, e2e):
        """Per row, the probability that every objective given holds (each
        (n,) or None; ``ttft`` and ``e2e`` need a prefill)."""
        self.check_ready()
        kwargs = {}
        if tpot is not None or e2e is not None:
            center, spread, weights, lengths = self.predictive(curve, coef, output_tokens, dist)
            kwargs.update(total=center, total_sigma=spread, lengths=lengths, weights=weights)
        if ttft is not None or e2e is not None:
            kwargs.update(prefill=coef.prefill, prefill_sigma=self.sigma_prefill(coef.z))
        scores, powers = self.scores, self.powers
        if scores.shape[1] == 1:
            scores = np.column_stack([scores[:, 0], np.zeros(len(scores))])
            powers = np.append(powers, 0.0)
        return attainment(scores=scores, ttft=ttft, tpot=tpot, e2e=e2e, powers=powers, **kwargs)


def _difficulty_and_scale(measured, predicted, inputs, held_out):
    """``(tree, power)`` of one output (``measured`` and ``predicted``
    latencies of the training requests, their difficulty ``inputs``): per
    scale of :data:`~sklat._score_scale.SCORE_POWERS`, a difficulty tree of
    the errors on that scale, kept only where it narrows the intervals of the
    requests ``held_out`` (rows; None: log errors, the tree kept), and the
    scale whose held-out intervals are narrowest (:func:`choose_power`)."""
    powers = SCORE_POWERS if held_out is not None else (0.0,)
    options = {}
    for power in powers:
        errors = to_scale(measured, power) - to_scale(predicted, power)
        tree = fit_difficulty(inputs, errors)
        if held_out is None:
            return tree, 0.0
        tree = _narrowing_tree(tree, errors[held_out], inputs[held_out])
        sigma = np.exp(tree_value(tree, inputs[held_out]))
        folds = np.arange(len(held_out)) % _SCALE_FOLDS
        width = cross_validated_width(measured[held_out], predicted[held_out], folds, power, sigma)
        options[power] = (tree, width)
    power = choose_power({p: width for p, (_, width) in options.items()})
    return options[power][0], power


def _narrowing_tree(tree, errors, inputs):
    """``tree``, or a flat one (difficulty 1 everywhere) unless it narrows
    the ``CHECK_LEVEL`` intervals of held-out requests by
    ``MIN_NARROWING``: their mean ``sigma`` times the quantile of their
    normalised ``errors`` against the quantile of their plain errors;
    ``inputs`` are their difficulty inputs."""
    sigma = np.exp(tree_value(tree, inputs))
    normalised = np.mean(sigma) * np.quantile(np.abs(errors) / sigma, CHECK_LEVEL)
    plain = np.quantile(np.abs(errors), CHECK_LEVEL)
    return tree if normalised < (1 - MIN_NARROWING) * plain else flat_tree(tree)


def flat_tree(tree):
    """A single leaf of value 0 in ``tree``'s layout: difficulty 1 for every
    request."""
    flat = np.zeros_like(tree)
    flat[0] = -1
    return flat


def _predictions(curve, part, n_threads):
    """``(decode, prefill or None, coef)``: the predictions of ``curve`` for
    the requests of ``part`` (as for a new request) and their coefficients."""
    coef = curve.encode(part.X, n_threads=n_threads, warn=False)
    decode = curve.total(coef, part.output_tokens)
    return decode, None if part.prefill is None else coef.prefill, coef


def _errors(part, predicted, powers):
    """Signed errors ``(decode, prefill or None)`` of the ``predicted``
    latencies (see :func:`_predictions`) of ``part``'s requests, each on its
    output's scale (``powers``)."""
    decode = to_scale(part.decode, powers[0]) - to_scale(predicted[0], powers[0])
    if part.prefill is None:
        return decode, None
    return decode, to_scale(part.prefill, powers[1]) - to_scale(predicted[1], powers[1])


def _outputs(part, predicted):
    """``(measured, predicted)`` of the decode total and (if measured) of the
    prefill of ``part``'s requests."""
    out = [(part.decode, predicted[0])]
    if part.prefill is not None:
        out.append((part.prefill, predicted[1]))
    return out


def _position_scores(curve, part, n_threads):
    """``(m, 2)``: absolute log errors of the per-step latencies (one-token
    segments) of the requests of ``part`` that have them, with weights
    ``1 / (steps kept)``, so that every request weighs 1. At most
    ``STEPS_KEPT`` evenly spaced steps per request. A segment of several
    tokens times their sum, not any one step, so it says nothing of a single
    position's spread and is left out."""
    segments = part.segments
    single = segments.tokens == 1
    rows = np.unique(segments.owner[single])
    if not len(rows):
        return np.zeros((0, 2))
    ends = segments.ends
    offsets = segments.offsets
    coef = curve.encode(part.X[rows], n_threads=n_threads, warn=False)
    out = []
    for j, i in enumerate(rows):
        mine = offsets[i] + np.flatnonzero(single[offsets[i] : offsets[i + 1]])
        keep = mine[np.unique(np.linspace(0, len(mine) - 1, STEPS_KEPT).round().astype(np.int64))]
        values = curve.at(coef.take(slice(j, j + 1)), ends[keep])[0]
        errors = np.abs(np.log(segments.values[keep]) - np.log(values))
        out.append(np.column_stack([errors, np.full(len(errors), 1.0 / len(errors))]))
    return np.concatenate(out)
