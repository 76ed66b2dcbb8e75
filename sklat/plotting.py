"""Plots in scikit-learn's Display style.

Each Display is built ``from_estimator`` or ``from_predictions`` and drawn by
``plot(ax=None)``, which returns the display with ``ax_`` and ``figure_`` set.
matplotlib is imported only when drawing; it comes with ``pip install
'sklat[plot]'``.
"""

import numpy as np

from ._constants import DECODE_COL
from ._validation import check_positions, select_targets

# Positions drawn by LatencyCurveDisplay.from_estimator when none are given.
_DEFAULT_MAX_POSITION = 256


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
        latencies = estimator.predict_positions(X, positions)
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
        y_true = np.asarray(y_true, dtype=np.float64).ravel()
        y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
        if y_true.shape != y_pred.shape:
            raise ValueError(f"y_true has {len(y_true)} values but y_pred has {len(y_pred)}.")
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
        y_arr = np.asarray(select_targets(y), dtype=np.float64)
        y_true = y_arr[:, -1] if y_arr.ndim == 2 else y_arr
        y_pred = estimator.predict_total(X, output_tokens)
        return cls.from_predictions(y_true, y_pred, ax=ax, **kwargs)
