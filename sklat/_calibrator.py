"""A fitted model's split-conformal calibration, as one object.

:class:`Calibrator` owns the difficulty trees (fitted on the point model's own
training requests, or cross-fitted on out-of-fold errors), the conformity
scores of the calibration requests and the per-step scores, and the
:class:`~sklat._curve.Curve` it calibrates; given the coefficients of new
requests (from that curve) it gives intervals, one-sided bounds and SLO
attainment: the model's predictive distribution. The arithmetic (ranks, trees,
mixture quantiles) is in :mod:`sklat._conformal`.
"""

import copy
import functools

import numpy as np

from ._conformal import (
    TREE_NODES,
    attainment,
    difficulty_inputs,
    finite_bounds,
    fit_difficulty,
    interval_rank,
    joint_quantiles,
    mixture_quantiles,
    quantile_ranks,
    position_bound,
    relative_error_factor,
    symmetric,
    tree_value,
)

# Per-step latencies of one calibration request kept for per-position
# intervals (evenly spaced): bounds the model file's size.
STEPS_KEPT = 64
# Held-out requests needed to judge a difficulty tree (with fewer the
# difficulty is flat: an unchecked tree of in-sample errors can be far off on
# new requests), and the interval level it is judged at.
_MIN_HELD_OUT = 20
_CHECK_LEVEL = 0.9
# How much narrower a tree must make those intervals to be kept: a tree of
# noise can look a hair narrower on a few dozen requests.
_MIN_NARROWING = 0.05


class Calibrator:
    """Calibration of a fitted curve.

    The scores are read-only once given (their sorted copies are kept).

    Parameters
    ----------
    difficulty_trees : ndarray of shape (n_outputs, 3, TREE_NODES)
        Difficulty trees of the decode total and (if fitted) of the prefill,
        see :func:`sklat._conformal.fit_difficulty`.
    scores : ndarray of shape (n_calibration, n_outputs)
        Normalised signed log errors of the calibration requests (column 0:
        decode total, column 1: prefill).
    position_scores : ndarray of shape (n_steps, 2)
        Absolute log errors of per-step latencies of the calibration requests
        and their weights (each request weighs 1).
    point_factors : ndarray of shape (n_outputs,), default=None
        Per output, the multiplier of the curve's centre with the least mean
        relative error on out-of-sample requests
        (:func:`~sklat._conformal.relative_error_factor`); ``None``: all 1.
    curve : sklat._curve.Curve, default=None
        The curve calibrated: the centre of every interval and probability.
        ``fit`` and ``fit_cross`` set it; see :meth:`calibrating`.
    """

    def __init__(self, difficulty_trees, scores, position_scores, point_factors=None, curve=None):
        self.curve = curve
        self.difficulty_trees = difficulty_trees
        self.scores = scores
        self.position_scores = position_scores
        self.point_factors = (
            np.ones(scores.shape[1])
            if point_factors is None
            else np.asarray(point_factors, dtype=np.float64)
        )

    def __setstate__(self, state):
        # Pickles of 0.8 and earlier hold no point factors.
        # Pickles of 0.13 and earlier hold no curve (the estimator held it).
        self.__dict__.update(state)
        self.__dict__.setdefault("curve", None)
        if "point_factors" not in state:
            self.point_factors = np.ones(self.scores.shape[1])

    @classmethod
    def fit(cls, curve, fit_part, cal_part, *, held_out=None, n_threads="auto"):
        """Difficulty trees from the errors of ``curve`` on ``fit_part`` (the
        requests it was trained on), scores from ``cal_part`` (held out of
        training), both :class:`~sklat._requests.Requests`. A tree is kept
        only where it narrows the intervals of the requests ``held_out`` (rows
        of ``fit_part`` held out of the weights for early stopping whose
        errors are out of sample), and only if there are at least
        ``_MIN_HELD_OUT`` of them: a tree of in-sample errors can mistake what
        the model memorised for what is easy."""
        decode, prefill, coef = _log_errors(curve, fit_part, n_threads)
        errors = [decode] + ([prefill] if prefill is not None else [])
        held_out = np.zeros(0, dtype=np.int64) if held_out is None else np.asarray(held_out)
        if len(held_out) >= _MIN_HELD_OUT:
            inputs = difficulty_inputs(coef.z, fit_part.output_tokens)
            trees = [fit_difficulty(inputs, decode)]
            if prefill is not None:
                # The prefill does not depend on the output length.
                trees.append(fit_difficulty(inputs[:, :-1], prefill))
            trees = np.stack(
                _narrowing_trees(trees, [e[held_out] for e in errors], inputs[held_out])
            )
        else:
            trees = flat_trees(len(errors))
        scores = np.zeros((len(cal_part), len(trees)))
        # The point factors come from the calibration requests' plain log
        # errors, or without any from the requests held out for early
        # stopping (out of sample for the weights, though they chose the epoch).
        point_errors = [e[held_out] for e in errors]
        if len(cal_part):
            scores, cal_errors = cls(trees, scores, None)._scored(curve, cal_part, n_threads)
            point_errors = cal_errors[: len(trees)]
        factors = [relative_error_factor(e) for e in point_errors]
        return cls(trees, scores, _position_scores(curve, cal_part, n_threads), factors, curve)

    @classmethod
    def fit_cross(cls, curve, requests, folds, *, n_threads="auto"):
        """Cross-fitted calibration of an ensemble ``curve`` whose member
        ``k`` was trained on every request of ``requests`` outside fold ``k``
        (``folds``: the fold of each request): each request is scored by the
        member that did not see it, so every request calibrates. The
        difficulty is cross-fitted too (:func:`_cross_fitted_difficulty`): a
        tree fitted on the very errors it would normalise makes them look
        smaller than a new request's. The point factors come from the plain
        out-of-fold errors."""
        n_outputs = 1 if requests.prefill is None else 2
        errors = np.zeros((len(requests), n_outputs))
        z = None
        steps = []
        for k in range(folds.max() + 1):
            rows = np.flatnonzero(folds == k)
            member, part = curve.member(k), requests.take(rows)
            decode, prefill, coef = _log_errors(member, part, n_threads)
            errors[rows, 0] = decode
            if prefill is not None:
                errors[rows, 1] = prefill
            if z is None:
                z = np.zeros((len(requests), coef.z.shape[1]))
            z[rows] = coef.z
            steps.append(_position_scores(member, part, n_threads))
        inputs = difficulty_inputs(z, requests.output_tokens)
        measured = [requests.decode, requests.prefill]
        trees, scores = [], np.zeros_like(errors)
        # The prefill does not depend on the output length.
        for j, x in enumerate((inputs, inputs[:, :-1])[:n_outputs]):
            centres = measured[j] * np.exp(-errors[:, j])
            tree, scores[:, j] = _cross_fitted_difficulty(x, errors[:, j], centres, folds)
            trees.append(tree)
        factors = [relative_error_factor(column) for column in errors.T]
        return cls(np.stack(trees), scores, np.concatenate(steps), factors, curve)

    @classmethod
    def flat(cls, scores, position_scores, curve):
        """A calibrator of ``curve`` of flat difficulty (difficulty 1
        everywhere): its ``scores`` are plain out-of-sample log errors, so
        they give the point factors too."""
        factors = [relative_error_factor(column) for column in scores.T]
        return cls(flat_trees(scores.shape[1]), scores, position_scores, factors, curve)

    def calibrating(self, curve):
        """This calibration of another ``curve`` (the scores shared): a model
        that is one net, calibrated by the out-of-fold errors of nets trained
        without each fold."""
        other = copy.copy(self)
        other.curve = curve
        return other

    def score(self, part, *, n_threads="auto"):
        """(n, n_outputs): the conformity scores of the requests of ``part``
        (:class:`~sklat._requests.Requests`; ``prefill`` may be None)."""
        return self._scored(self.curve, part, n_threads)[0]

    def _scored(self, curve, part, n_threads):
        """The conformity scores of :meth:`score`, and the plain log errors
        ``[decode, prefill or None]`` they normalise."""
        decode, prefill, coef = _log_errors(curve, part, n_threads)
        scores = np.zeros((len(part), self.scores.shape[1]))
        scores[:, 0] = decode / self.sigma_total(coef.z, part.output_tokens)
        if prefill is not None:
            scores[:, 1] = prefill / self.sigma_prefill(coef.z)
        return scores, [decode, prefill]

    # ------------------------------------------------------------ difficulty
    def sigma_total(self, z, lengths):
        """Difficulty of the decode total at standardised features ``z`` and
        output ``lengths``."""
        return np.exp(tree_value(self.difficulty_trees[0], difficulty_inputs(z, lengths)))

    def sigma_over_lengths(self, z, values):
        """(n, J): :meth:`sigma_total` of every row of ``z`` at every output
        length of ``values``. The tree reads ``log N`` through a few
        thresholds: lengths between the same two thresholds take every branch
        alike, so the tree runs once per row and such run of lengths (not once
        per row and length), with the same comparisons as :func:`tree_value`."""
        tree = self.difficulty_trees[0]
        log_n = z.shape[1]  # the tree's last input
        splits = np.unique(tree[1][(tree[0] == log_n)])
        # tree_value compares the float32 inputs with the thresholds.
        keys = np.log(values.astype(np.float64)).astype(np.float32).astype(np.float64)
        segment = np.searchsorted(splits, keys, side="left")
        occupied, first = np.unique(segment, return_index=True)
        lengths = values[first]
        n, m = len(z), len(lengths)
        sigma = self.sigma_total(np.repeat(z, m, axis=0), np.tile(lengths, n)).reshape(n, m)
        return sigma[:, np.searchsorted(occupied, segment)]

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

    def predictive(self, coef, output_tokens, dist, *, per_token):
        """``(center, sigma, weights)`` of the decode total (or per-token
        latency): (n, 1) for known ``output_tokens``, else (n, J) over the
        ``J`` lengths of ``dist`` with probabilities ``weights``."""
        curve = self.curve
        if output_tokens is not None:
            center = curve.total(coef, output_tokens)[:, None]
            spread = self.sigma_total(coef.z, output_tokens)[:, None]
            if per_token:
                center = center / output_tokens[:, None]
            return center, spread, np.ones(1)
        values = dist["values"]
        center = curve.totals_at(coef, values)
        spread = self.sigma_over_lengths(coef.z, values)
        if per_token:
            center = center / values[None, :]
        return center, spread, dist["probabilities"]

    # ------------------------------------------------------------- intervals
    def decode_interval(self, coef, output_tokens, dist, confidence, *, per_token):
        """(n, 2) bounds of the decode total (or per-token latency)."""
        scores = self.sorted_scores("total")
        n = len(scores)
        k = interval_rank(n, confidence, "for an interval")
        center, spread, weights = self.predictive(coef, output_tokens, dist, per_token=per_token)
        # |e|_(k) is the (n + k)-th of the 2n symmetrised scores, -|e|_(k)
        # the (n - k + 1)-th: for one length, exactly y_hat * exp(+-sigma |e|_(k)).
        levels = [(n - k + 1) / (2 * n), (n + k) / (2 * n)]
        return finite_bounds(
            mixture_quantiles(center, spread, weights, self._symmetric_decode, levels)
        )

    def prefill_interval(self, coef, confidence):
        """(n, 2) bounds of the prefill."""
        scores = self.sorted_scores("prefill")
        k = interval_rank(len(scores), confidence, "for an interval")
        half = self.sigma_prefill(coef.z) * np.sort(np.abs(scores))[k - 1]
        return finite_bounds(
            np.column_stack([coef.prefill * np.exp(-half), coef.prefill * np.exp(half)])
        )

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
        """``point`` (a per-token latency at output ``length``) times the
        calibrated upper factor at ``confidence``."""
        scores, k = self.upper_rank(confidence)
        spread = self.sigma_total(z, np.full(len(point), length))
        return finite_bounds(point * np.exp(spread * scores[k - 1]))

    def upper_per_token(self, coef, dist, confidence):
        """Upper ``confidence`` quantile of the per-token latency, ``N`` drawn
        from ``dist``."""
        scores, k = self.upper_rank(confidence)
        center, spread, weights = self.predictive(coef, None, dist, per_token=True)
        bound = mixture_quantiles(center, spread, weights, scores, [k / len(scores)])
        return finite_bounds(bound[:, 0])

    def quantiles(self, coef, output_tokens, dist, levels, target):
        """(n, L): the predictive distribution's quantiles at ``levels`` of the
        decode total, the per-token latency, the prefill or the end-to-end
        latency (``target``: "total", "per_token", "prefill", "e2e"): the
        smallest value whose probability of not being exceeded reaches the
        level."""
        levels = np.asarray(levels, dtype=np.float64)
        if target == "prefill":
            scores = self.sorted_scores("prefill")
            values = scores[quantile_ranks(len(scores), levels) - 1]
            sigma = self.sigma_prefill(coef.z)
            return finite_bounds(coef.prefill[:, None] * np.exp(sigma[:, None] * values[None, :]))
        if target != "e2e":
            center, spread, weights = self.predictive(
                coef, output_tokens, dist, per_token=target == "per_token"
            )
            return finite_bounds(
                mixture_quantiles(center, spread, weights, self.sorted_scores("total"), levels)
            )
        self.check_ready()
        center, spread, weights = self.predictive(coef, output_tokens, dist, per_token=False)
        prefill_sigma = self.sigma_prefill(coef.z)
        return finite_bounds(
            joint_quantiles(
                coef.prefill, prefill_sigma, center, spread, weights, self.scores, levels
            )
        )

    def attainment(self, coef, output_tokens, dist, *, ttft, tpot, e2e):
        """Per row, the probability that every objective given holds (each
        (n,) or None; ``ttft`` and ``e2e`` need a prefill)."""
        self.check_ready()
        kwargs = {}
        if tpot is not None or e2e is not None:
            center, spread, weights = self.predictive(coef, output_tokens, dist, per_token=False)
            lengths = (
                output_tokens[:, None].astype(np.float64)
                if output_tokens is not None
                else dist["values"].astype(np.float64)[None, :]
            )
            kwargs.update(
                total=center,
                total_sigma=spread,
                lengths=np.broadcast_to(lengths, center.shape),
                weights=weights,
            )
        if ttft is not None or e2e is not None:
            kwargs.update(prefill=coef.prefill, prefill_sigma=self.sigma_prefill(coef.z))
        scores = self.scores
        if scores.shape[1] == 1:
            scores = np.column_stack([scores[:, 0], np.zeros(len(scores))])
        return attainment(scores=scores, ttft=ttft, tpot=tpot, e2e=e2e, **kwargs)


def _narrowing_trees(trees, errors, inputs):
    """``trees``, each replaced by a flat one (difficulty 1 everywhere) unless
    it narrows the ``_CHECK_LEVEL`` intervals of held-out requests by
    ``_MIN_NARROWING``: their mean ``sigma`` times the quantile of their
    normalised ``errors`` (one array per tree) against the quantile of their
    plain errors; ``inputs`` are their difficulty inputs."""
    out = []
    for tree, error, x in zip(trees, errors, (inputs, inputs[:, :-1])):
        sigma = np.exp(tree_value(tree, x))
        normalised = np.mean(sigma) * np.quantile(np.abs(error) / sigma, _CHECK_LEVEL)
        plain = np.quantile(np.abs(error), _CHECK_LEVEL)
        out.append(tree if normalised < (1 - _MIN_NARROWING) * plain else flat_trees(1)[0])
    return out


def _cross_fitted_difficulty(inputs, errors, centres, folds):
    """``(tree, scores)`` of one output of a cross-fitted calibration, from
    the out-of-fold log ``errors`` of its requests, their difficulty
    ``inputs``, their out-of-fold ``centres`` (ms) and ``folds``. The errors
    of fold ``k`` are normalised by a tree fitted on the other folds' errors
    (never on their own), a new request by the tree fitted on all of them
    (returned). The trees are kept only if, so judged, they narrow the mean
    width in ms of the ``_CHECK_LEVEL`` intervals of these requests by
    ``_MIN_NARROWING``; else the tree is flat and the scores are the errors.
    Judged in ms, not log units: the gain of a difficulty model is on the
    requests whose intervals are widest in ms, the long ones, and a check in
    log units almost never sees it (benchmarks/RESULTS.md)."""
    flat = flat_trees(1)[0]
    if len(errors) < _MIN_HELD_OUT:
        return flat, errors
    sigma = np.empty(len(errors))
    for k in range(folds.max() + 1):
        fold = folds == k
        tree = fit_difficulty(inputs[~fold], errors[~fold])
        sigma[fold] = np.exp(tree_value(tree, inputs[fold]))
    normalised = errors / sigma
    narrowed = _mean_width(centres, sigma, normalised)
    if narrowed < (1 - _MIN_NARROWING) * _mean_width(centres, np.ones(len(errors)), errors):
        return fit_difficulty(inputs, errors), normalised
    return flat, errors


def _mean_width(centres, sigma, scores):
    """Mean width (ms) of the intervals ``centres * exp(+-sigma * q)``, ``q``
    the ``_CHECK_LEVEL`` quantile of the absolute ``scores``."""
    half = sigma * np.quantile(np.abs(scores), _CHECK_LEVEL)
    return float(np.mean(centres * (np.exp(half) - np.exp(-half))))


def flat_trees(n_outputs):
    """(n_outputs, 3, TREE_NODES): difficulty trees that are a single leaf of
    value 0, difficulty 1 for every request."""
    flat = np.zeros((n_outputs, 3, TREE_NODES))
    flat[:, 0] = -1
    return flat


def _log_errors(curve, part, n_threads):
    """Signed log errors ``(decode, prefill or None)`` of ``curve`` on
    ``part``, and the coefficients (predicted as for a new request)."""
    coef = curve.encode(part.X, n_threads=n_threads, warn=False)
    decode = np.log(part.decode) - np.log(curve.total(coef, part.output_tokens))
    prefill = None if part.prefill is None else np.log(part.prefill) - np.log(coef.prefill)
    return decode, prefill, coef


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
