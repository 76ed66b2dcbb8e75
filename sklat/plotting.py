"""Plots in scikit-learn's Display style.

Each Display is built ``from_estimator`` or ``from_predictions`` and drawn by
``plot(ax=None)``, which returns the display with ``ax_`` and ``figure_`` set.
matplotlib is imported only when drawing; it comes with ``pip install
'sklat[plot]'``.
"""

import numpy as np

from ._conformal import min_calibration
from ._constants import DECODE_COL
from ._domain import quiet_extrapolation
from ._validation import (
    as_float_array,
    check_finite_positive,
    check_output_tokens,
    check_positions,
    check_target_rows,
    n_rows,
    split_output_tokens,
)
from .metrics import interval_coverage

# Positions drawn by LatencyCurveDisplay.from_estimator when none are given.
_DEFAULT_MAX_POSITION = 256
# save_report_figures: requests drawn in latency_curves.png, its range of
# positions, and the nominal coverages drawn in coverage.png.
_CURVES_DRAWN = 4
_CURVE_POSITIONS_MIN, _CURVE_POSITIONS_MAX = 64, 1024
_PLOTTED_CONFIDENCES = (0.5, 0.8, 0.9, 0.95)


def _pyplot(caller):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            f"{caller} needs matplotlib, an optional extra of sklat: pip install 'sklat[plot]'"
        ) from None
    return plt


def _axes(ax, caller):
    plt = _pyplot(caller)
    if ax is None:
        _, ax = plt.subplots()
    return ax


class LatencyCurveDisplay:
    """Decode latency against token position, one line per configuration.

    Parameters
    ----------
    positions : ndarray of shape (n_positions,)
        Token positions (1 = first decode step).
    latencies : ndarray of shape (n_configs, n_positions)
        Predicted per-token latency (ms).
    measured : list of (ndarray or None), default=None
        Per configuration, measured per-step latencies at positions
        ``1..len`` (drawn as points), or ``None``.
    reference : ndarray of shape (n_configs, n_positions), default=None
        Reference curves (e.g. the ground truth), drawn dashed.
    labels : list of str, default=None
        Legend label per configuration.

    Attributes
    ----------
    lines_ : list of matplotlib Line2D
        The predicted curves.
    reference_lines_ : list of matplotlib Line2D
        The reference curves (empty without ``reference``).
    measured_ : list of matplotlib PathCollection
        The measured points (one per configuration that has them).
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklat.plotting import LatencyCurveDisplay
    >>> disp = LatencyCurveDisplay.from_predictions(
    ...     [1, 2, 3], [[25.0, 30.0, 33.0]], labels=["config A"])
    >>> len(disp.lines_)
    1
    """

    def __init__(self, *, positions, latencies, measured=None, reference=None, labels=None):
        self.positions = positions
        self.latencies = latencies
        self.measured = measured
        self.reference = reference
        self.labels = labels

    def plot(self, ax=None, *, line_kw=None, measured_kw=None, reference_kw=None):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when ``None``.
        line_kw, measured_kw, reference_kw : dict, default=None
            Keyword arguments of ``ax.plot`` (curves, references) and
            ``ax.scatter`` (measured points).

        Returns
        -------
        display : LatencyCurveDisplay
            ``self``, drawn.
        """
        ax = _axes(ax, "LatencyCurveDisplay.plot")
        positions = np.asarray(self.positions)
        latencies = np.atleast_2d(np.asarray(self.latencies, dtype=np.float64))
        n = len(latencies)
        labels = self.labels or [f"config {i}" for i in range(n)]
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries for {n} curves.")
        self.lines_, self.reference_lines_, self.measured_ = [], [], []
        for i in range(n):
            (line,) = ax.plot(positions, latencies[i], label=labels[i], **(line_kw or {}))
            self.lines_.append(line)
            color = line.get_color()
            if self.reference is not None:
                (ref,) = ax.plot(
                    positions,
                    np.asarray(self.reference)[i],
                    "--",
                    color=color,
                    label=f"{labels[i]} (reference)",
                    **(reference_kw or {}),
                )
                self.reference_lines_.append(ref)
            steps = None if self.measured is None else self.measured[i]
            if steps is not None:
                steps = np.asarray(steps, dtype=np.float64)
                kw = {"s": 8, "alpha": 0.5, **(measured_kw or {})}
                # A leading underscore keeps the points out of the legend:
                # they share the colour of their curve.
                self.measured_.append(
                    ax.scatter(
                        np.arange(1, len(steps) + 1),
                        steps,
                        color=color,
                        label=f"_{labels[i]} (measured)",
                        **kw,
                    )
                )
        ax.set_xlabel("token position")
        ax.set_ylabel("decode latency (ms / token)")
        ax.legend(fontsize="small")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_predictions(
        cls, positions, latencies, *, measured=None, reference=None, labels=None, ax=None, **kwargs
    ):
        """Plot curves already predicted.

        Parameters
        ----------
        positions : array-like of shape (n_positions,)
            Token positions (1 = first decode step).
        latencies : array-like of shape (n_configs, n_positions)
            Predicted per-token latency (ms).
        measured : list of (ndarray or None), default=None
            Per configuration, measured per-step latencies at positions
            ``1..len`` (drawn as points), or ``None``.
        reference : ndarray of shape (n_configs, n_positions), default=None
            Reference curves (e.g. the ground truth), drawn dashed.
        labels : list of str, default=None
            Legend label per configuration.
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : LatencyCurveDisplay
            The display, drawn.
        """
        positions = check_positions(positions)
        latencies = np.atleast_2d(np.asarray(latencies, dtype=np.float64))
        if latencies.shape[1] != len(positions):
            raise ValueError(
                f"latencies has {latencies.shape[1]} columns for {len(positions)} positions."
            )
        return cls(
            positions=positions,
            latencies=latencies,
            measured=measured,
            reference=reference,
            labels=labels,
        ).plot(ax=ax, **kwargs)

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        *,
        positions=None,
        measured=None,
        reference=None,
        labels=None,
        load=None,
        ax=None,
        **kwargs,
    ):
        """Predict and plot the curves of the configurations ``X``.

        Parameters
        ----------
        estimator : LatencyEstimator
            A fitted estimator.
        X : array-like or DataFrame of shape (n_configs, n_features)
            Configurations to draw.
        positions : array-like of int, default=None
            ``None``: ``1..max_output_tokens_`` (at most 256).
        measured : list of (ndarray or None), default=None
            Per configuration, measured per-step latencies at positions
            ``1..len`` (drawn as points), or ``None``.
        reference : ndarray of shape (n_configs, n_positions), default=None
            Reference curves (e.g. the ground truth), drawn dashed.
        labels : list of str, default=None
            Legend label per configuration.
        load : float or dict, default=None
            For a model with load features: the load every curve is drawn at,
            as in :meth:`~sklat.LatencyEstimator.predict_positions` (``X`` then
            leaves the load columns out).
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : LatencyCurveDisplay
            The display, drawn.
        """
        if positions is None:
            positions = np.arange(1, min(estimator.max_output_tokens_, _DEFAULT_MAX_POSITION) + 1)
        latencies = estimator.predict_positions(X, positions, load=load)
        return cls.from_predictions(
            positions,
            latencies,
            measured=measured,
            reference=reference,
            labels=labels,
            ax=ax,
            **kwargs,
        )


class TotalLatencyDisplay:
    """Predicted against measured total decode latency, with the diagonal.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,)
        Measured ``T_LLM_decode`` (ms).
    y_pred : ndarray of shape (n_samples,)
        Predicted totals (ms).

    Attributes
    ----------
    scatter_ : matplotlib PathCollection
    line_ : matplotlib Line2D
        The ``y = x`` diagonal.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklat.plotting import TotalLatencyDisplay
    >>> disp = TotalLatencyDisplay.from_predictions([100.0, 200.0], [110.0, 190.0])
    >>> disp.scatter_.get_offsets().shape
    (2, 2)
    """

    def __init__(self, *, y_true, y_pred):
        self.y_true = y_true
        self.y_pred = y_pred

    def plot(self, ax=None, *, scatter_kw=None, log_scale=True):
        """Draw the scatter and the diagonal.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        scatter_kw : dict, default=None
            Keyword arguments of ``ax.scatter``.
        log_scale : bool, default=True
            Logarithmic axes (totals span orders of magnitude).

        Returns
        -------
        display : TotalLatencyDisplay
            ``self``, drawn.
        """
        ax = _axes(ax, "TotalLatencyDisplay.plot")
        y_true = np.asarray(self.y_true, dtype=np.float64)
        y_pred = np.asarray(self.y_pred, dtype=np.float64)
        self.scatter_ = ax.scatter(y_true, y_pred, **{"s": 10, "alpha": 0.6, **(scatter_kw or {})})
        lo = min(y_true.min(), y_pred.min())
        hi = max(y_true.max(), y_pred.max())
        (self.line_,) = ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        if log_scale:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"measured {DECODE_COL} (ms)")
        ax.set_ylabel(f"predicted {DECODE_COL} (ms)")
        ax.legend(fontsize="small")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_predictions(cls, y_true, y_pred, *, ax=None, **kwargs):
        """Plot totals already predicted.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            Measured ``T_LLM_decode`` (ms).
        y_pred : array-like of shape (n_samples,)
            Predicted totals (ms).
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : TotalLatencyDisplay
            The display, drawn.
        """
        y_true = as_float_array(y_true, "y_true").ravel()
        y_pred = as_float_array(y_pred, "y_pred").ravel()
        if y_true.shape != y_pred.shape:
            raise ValueError(f"y_true has {len(y_true)} values but y_pred has {len(y_pred)}.")
        if y_true.size == 0:
            raise ValueError("y_true and y_pred are empty: there is nothing to plot.")
        for values, name in ((y_true, "y_true"), (y_pred, "y_pred")):
            check_finite_positive(values, name, where="entry {}".format)
        return cls(y_true=y_true, y_pred=y_pred).plot(ax=ax, **kwargs)

    @classmethod
    def from_estimator(cls, estimator, X, y, *, output_tokens=None, ax=None, **kwargs):
        """Predict totals for ``X`` and plot them against ``y``.

        Parameters
        ----------
        estimator : LatencyEstimator
            A fitted estimator.
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations of the requests.
        y : array-like of shape (n_samples,) or (n_samples, 2), or DataFrame
            Measured ``T_LLM_decode`` (the last column of a 2-column ``y``; a
            DataFrame is matched by column names, as in ``fit``).
        output_tokens : array-like of shape (n_samples,), default=None
            ``N`` per request (or an ``output_tokens`` column of ``X``).
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : TotalLatencyDisplay
            The display, drawn.
        """
        y_true, _ = check_target_rows(y, n_rows(X))
        y_pred = estimator.predict_total(X, output_tokens)
        return cls.from_predictions(y_true, y_pred, ax=ax, **kwargs)


def _length_buckets(output_tokens, n_buckets):
    """Per request, the index of its output-length bucket (quantile edges),
    and the buckets' labels."""
    edges = np.unique(np.quantile(output_tokens, np.linspace(0, 1, n_buckets + 1)).round())
    if len(edges) < 2:
        edges = np.array([output_tokens.min(), output_tokens.max()], dtype=np.float64)
    index = np.clip(np.searchsorted(edges, output_tokens, side="right") - 1, 0, len(edges) - 2)
    # Bucket b holds edges[b] <= N < edges[b + 1]; the last one includes its top.
    last = len(edges) - 2
    labels = [f"N {int(edges[b])}-{int(edges[b + 1]) - (b < last)}" for b in range(len(edges) - 1)]
    # Quantile edges of a few requests can leave a bucket empty: it is not drawn.
    used = np.unique(index)
    return np.searchsorted(used, index), [labels[b] for b in used]


class CoverageDisplay:
    """Observed against nominal coverage of prediction intervals, overall and
    by output-length bucket.

    Points on the diagonal are calibrated intervals; below it, intervals hold
    the measured value less often than they claim.

    Parameters
    ----------
    confidences : ndarray of shape (n_confidences,)
        Nominal coverages.
    coverage : ndarray of shape (n_buckets, n_confidences)
        Observed coverage per output-length bucket.
    overall : ndarray of shape (n_confidences,)
        Observed coverage over all requests.
    labels : list of str
        Label per bucket (its output lengths).
    counts : ndarray of shape (n_buckets,)
        Requests per bucket.

    Attributes
    ----------
    lines_ : list of matplotlib Line2D
        One line per bucket.
    overall_line_ : matplotlib Line2D
        The overall coverage.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklat.plotting import CoverageDisplay
    >>> y = np.array([10.0, 20.0, 30.0, 40.0])
    >>> intervals = np.stack([np.c_[y - 1, y + 1], np.c_[y + 1, y + 2]], axis=2)
    >>> disp = CoverageDisplay.from_predictions(
    ...     y, intervals, confidences=[0.9, 0.5], output_tokens=[8, 16, 32, 64], n_buckets=2)
    >>> disp.overall.tolist()
    [1.0, 0.0]
    """

    def __init__(self, *, confidences, coverage, overall, labels, counts):
        self.confidences = confidences
        self.coverage = coverage
        self.overall = overall
        self.labels = labels
        self.counts = counts

    def plot(self, ax=None, *, line_kw=None):
        """Draw the diagonal, one line per bucket and the overall coverage.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        line_kw : dict, default=None
            Keyword arguments of the buckets' ``ax.plot``.

        Returns
        -------
        display : CoverageDisplay
            ``self``, drawn.
        """
        ax = _axes(ax, "CoverageDisplay.plot")
        nominal = np.asarray(self.confidences, dtype=np.float64)
        low = min(nominal.min(), np.min(self.coverage), np.min(self.overall)) - 0.05
        ax.plot([low, 1], [low, 1], "k--", lw=1, label="calibrated")
        self.lines_ = []
        for label, count, observed in zip(self.labels, self.counts, self.coverage):
            (line,) = ax.plot(
                nominal,
                observed,
                **{
                    "marker": "o",
                    "lw": 1,
                    "alpha": 0.8,
                    "label": f"{label} ({count})",
                    **(line_kw or {}),
                },
            )
            self.lines_.append(line)
        (self.overall_line_,) = ax.plot(
            nominal, self.overall, "k-", marker="s", lw=2, label=f"all ({int(np.sum(self.counts))})"
        )
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("observed coverage")
        ax.legend(fontsize="small")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_predictions(
        cls, y_true, y_intervals, *, confidences, output_tokens, n_buckets=4, ax=None, **kwargs
    ):
        """Plot the coverage of intervals already predicted.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            Measured values.
        y_intervals : array-like of shape (n_samples, 2, n_confidences)
            Lower and upper bounds at each confidence.
        confidences : array-like of shape (n_confidences,)
            The nominal coverage of each interval.
        output_tokens : array-like of shape (n_samples,)
            ``N`` per request, bucketed by its quantiles.
        n_buckets : int, default=4
            Number of output-length buckets (fewer when lengths repeat).
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : CoverageDisplay
            The display, drawn.
        """

        confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
        intervals = np.asarray(y_intervals, dtype=np.float64)
        if intervals.ndim == 2:
            intervals = intervals[:, :, None]
        if intervals.ndim != 3 or intervals.shape[2] != len(confidences):
            raise ValueError(
                "y_intervals must have shape (n_samples, 2, n_confidences) with one "
                f"confidence per interval; got {intervals.shape} for {len(confidences)} "
                "confidences."
            )
        y_true = as_float_array(y_true, "y_true")
        if len(y_true) != len(intervals):
            raise ValueError(
                f"y_true has {len(y_true)} values but y_intervals has {len(intervals)}."
            )
        n = check_output_tokens(output_tokens, len(y_true), against="y_true has {} values")
        if not (isinstance(n_buckets, int) and n_buckets >= 1):
            raise ValueError(f"n_buckets must be an integer >= 1; got {n_buckets!r}.")
        overall = interval_coverage(y_true, intervals)
        index, labels = _length_buckets(n, n_buckets)
        coverage = np.vstack(
            [
                interval_coverage(y_true[index == b], intervals[index == b])
                for b in range(len(labels))
            ]
        )
        counts = np.bincount(index, minlength=len(labels))
        return cls(
            confidences=confidences,
            coverage=coverage,
            overall=overall,
            labels=labels,
            counts=counts,
        ).plot(ax=ax, **kwargs)

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        output_tokens=None,
        target="total",
        confidences=(0.5, 0.8, 0.9, 0.95),
        n_buckets=4,
        ax=None,
        **kwargs,
    ):
        """Predict intervals for ``X`` and plot their coverage of ``y``.

        Parameters
        ----------
        estimator : LatencyEstimator
            A fitted estimator with calibration requests.
        X : array-like or DataFrame of shape (n_samples, n_features)
            Configurations of held-out requests (not used in fitting).
        y : array-like of shape (n_samples,) or (n_samples, 2), or DataFrame
            Measured targets, as in ``fit``.
        output_tokens : array-like of shape (n_samples,), default=None
            ``N`` per request (or an ``output_tokens`` column of ``X``).
        target : {"total", "per_token", "prefill"}, default="total"
            What the intervals bound (see ``predict_interval``).
        confidences : sequence of float, default=(0.5, 0.8, 0.9, 0.95)
            Nominal coverages drawn.
        n_buckets : int, default=4
            Number of output-length buckets.
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` creates a figure.
        **kwargs : dict
            Passed to :meth:`plot`.

        Returns
        -------
        display : CoverageDisplay
            The display, drawn.
        """
        if output_tokens is None:
            output_tokens = split_output_tokens(X, estimator.output_tokens_col)[1]
        if output_tokens is None:
            raise ValueError("CoverageDisplay needs output_tokens (argument or column of X).")
        decode, prefill = check_target_rows(y, n_rows(X))
        n = check_output_tokens(output_tokens, len(decode))
        if target == "prefill":
            if prefill is None:
                raise ValueError("target='prefill' needs y = [T_prefill_total, T_LLM_decode].")
            y_true = prefill
        else:
            y_true = decode / n if target == "per_token" else decode
        X_features = split_output_tokens(X, estimator.output_tokens_col)[0]
        intervals = np.stack(
            [
                estimator.predict_interval(X_features, n, target=target, confidence=c)
                for c in confidences
            ],
            axis=2,
        )
        return cls.from_predictions(
            y_true,
            intervals,
            confidences=confidences,
            output_tokens=n,
            n_buckets=n_buckets,
            ax=ax,
            **kwargs,
        )


def _representative(avg, measured, k=_CURVES_DRAWN):
    """Up to ``k`` requests to draw: those with per-step data first, then
    spread over the range of per-token averages ``avg``."""
    picks = [i for i in range(len(avg)) if measured[i] is not None][: k - 1]
    ordered = np.argsort(avg)
    for q in np.linspace(0, 1, k):
        if len(picks) >= k:
            break
        i = int(ordered[int(q * (len(ordered) - 1))])
        if i not in picks:
            picks.append(i)
    return picks


def save_report_figures(
    estimator,
    X,
    y,
    *,
    output_tokens,
    output_dir,
    positioned_latencies=None,
    names=None,
    coverage=True,
):
    """Write the report figures of ``sklat train`` to a folder.

    ``latency_curves.png`` (the predicted curves of a few representative
    requests, with their measured steps), ``total_decode.png`` (predicted
    against measured totals) and, with ``coverage=True`` and enough
    calibration requests, ``coverage.png`` (:class:`CoverageDisplay`).
    Requests outside the training domain are drawn without warnings.

    Parameters
    ----------
    estimator : LatencyEstimator
        A fitted estimator.
    X : DataFrame of shape (n_samples, n_features)
        The requests' configurations.
    y : DataFrame of shape (n_samples, 2)
        ``[T_prefill_total, T_LLM_decode]``.
    output_tokens : array-like of shape (n_samples,)
        ``N`` of each request.
    output_dir : path-like
        Existing folder to write to.
    positioned_latencies : list of length n_samples, default=None
        Per request, ``None`` or its measured steps (drawn as points).
    names : list of str, default=None
        A name per request for the legend; default ``"row i"`` (from 1).
    coverage : bool, default=True
        Also draw interval coverage (meaningful on held-out requests).

    Returns
    -------
    files : list of str
        The names of the files written.

    Examples
    --------
    >>> import tempfile
    >>> from sklat import LatencyEstimator
    >>> from sklat.datasets import make_positioned_latency
    >>> from sklat.plotting import save_report_figures
    >>> d = make_positioned_latency(80, random_state=0)
    >>> est = LatencyEstimator(max_epochs=5, random_state=0).fit(
    ...     d.X, d.y, output_tokens=d.output_tokens)
    >>> save_report_figures(est, d.X, d.y, output_tokens=d.output_tokens,
    ...                     output_dir=tempfile.mkdtemp())
    ['latency_curves.png', 'total_decode.png', 'coverage.png']
    """
    # matplotlib is the optional plot extra.
    import matplotlib

    matplotlib.use("Agg")
    plt = _pyplot("save_report_figures")
    from pathlib import Path

    output_dir = Path(output_dir)
    n = np.asarray(output_tokens)
    measured = list(positioned_latencies) if positioned_latencies is not None else [None] * len(n)
    names = names or [f"row {i + 1}" for i in range(len(n))]
    avg = np.asarray(y[DECODE_COL], dtype=np.float64) / n
    picks = _representative(avg, measured)
    longest = max([len(measured[i]) for i in picks if measured[i] is not None] + [0])
    positions = np.arange(1, min(max(longest, _CURVE_POSITIONS_MIN), _CURVE_POSITIONS_MAX) + 1)
    labels = [
        f"{names[i]}: " + ", ".join(f"{c}={X.iloc[i][c]:g}" for c in X.columns) for i in picks
    ]
    written = []
    with quiet_extrapolation():
        fig, ax = plt.subplots(figsize=(9, 5.5))
        LatencyCurveDisplay.from_estimator(
            estimator,
            X.iloc[picks],
            positions=positions,
            measured=[measured[i] for i in picks],
            labels=labels,
            ax=ax,
        )
        ax.set_title("Predicted decode latency by position (points: measured steps)")
        written.append(_save(plt, fig, output_dir, "latency_curves.png"))
        fig, ax = plt.subplots(figsize=(5.5, 5.5))
        TotalLatencyDisplay.from_estimator(estimator, X, y, output_tokens=n, ax=ax)
        ax.set_title("Total decode latency (validation requests)")
        written.append(_save(plt, fig, output_dir, "total_decode.png"))
        confidences = [
            c
            for c in _PLOTTED_CONFIDENCES
            if len(estimator.conformity_scores_) >= min_calibration(c)
        ]
        if coverage and confidences:
            fig, ax = plt.subplots(figsize=(5.5, 5.5))
            CoverageDisplay.from_estimator(
                estimator, X, y, output_tokens=n, confidences=confidences, ax=ax
            )
            ax.set_title("Decode-total interval coverage (validation requests)")
            written.append(_save(plt, fig, output_dir, "coverage.png"))
    return written


def _save(plt, fig, folder, name):
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name
