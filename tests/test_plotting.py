"""Displays: what is drawn, not only that nothing raised."""

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sklat.plotting import (  # noqa: E402
    CoverageDisplay,
    LatencyCurveDisplay,
    TotalLatencyDisplay,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_curve_from_estimator_draws_predictions(fitted, small_data):
    X = small_data.X.iloc[:3]
    positions = np.arange(1, 51)
    measured = [None, np.full(20, 30.0), None]
    disp = LatencyCurveDisplay.from_estimator(
        fitted, X, positions=positions, measured=measured, labels=["a", "b", "c"]
    )
    assert len(disp.lines_) == 3 and len(disp.measured_) == 1
    expected = fitted.predict_positions(X, positions)
    for line, row in zip(disp.lines_, expected):
        np.testing.assert_array_equal(line.get_xdata(), positions)
        np.testing.assert_allclose(line.get_ydata(), row)
    offsets = disp.measured_[0].get_offsets()
    np.testing.assert_array_equal(offsets[:, 0], np.arange(1, 21))
    np.testing.assert_array_equal(offsets[:, 1], 30.0)
    assert [t.get_text() for t in disp.ax_.get_legend().get_texts()] == ["a", "b", "c"]
    assert disp.ax_.get_xlabel() == "token position"
    assert disp.ax_.get_ylabel() == "decode latency (ms / token)"
    assert disp.figure_ is disp.ax_.figure


def test_curve_from_predictions_with_reference_on_given_axes():
    fig, ax = plt.subplots()
    disp = LatencyCurveDisplay.from_predictions(
        [1, 2, 3], [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]], reference=[[1, 1, 1], [2, 2, 2]], ax=ax
    )
    assert disp.ax_ is ax
    assert len(disp.lines_) == 2 and len(disp.reference_lines_) == 2
    np.testing.assert_array_equal(disp.reference_lines_[1].get_ydata(), [2, 2, 2])
    assert disp.reference_lines_[0].get_linestyle() == "--"
    assert disp.lines_[0].get_color() == disp.reference_lines_[0].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == [
        "config 0",
        "config 0 (reference)",
    ]


def test_plot_returns_self_and_redraws():
    disp = LatencyCurveDisplay(positions=np.array([1, 2]), latencies=np.array([[1.0, 2.0]]))
    assert disp.plot() is disp
    _, ax = plt.subplots()
    assert disp.plot(ax=ax, line_kw={"color": "red"}).ax_ is ax
    assert disp.lines_[0].get_color() == "red"


def test_curve_errors():
    with pytest.raises(ValueError, match="latencies has 2 columns for 3 positions"):
        LatencyCurveDisplay.from_predictions([1, 2, 3], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="labels has 1 entries for 2 curves"):
        LatencyCurveDisplay.from_predictions([1], [[1.0], [2.0]], labels=["x"])


def test_total_display(fitted, small_data):
    d = small_data
    disp = TotalLatencyDisplay.from_estimator(fitted, d.X, d.y, output_tokens=d.output_tokens)
    offsets = disp.scatter_.get_offsets()
    np.testing.assert_allclose(offsets[:, 0], d.y["T_LLM_decode"])
    np.testing.assert_allclose(offsets[:, 1], fitted.predict_total(d.X, d.output_tokens))
    lo, hi = disp.line_.get_xdata()
    assert lo <= offsets.min() and hi >= offsets.max()
    assert disp.ax_.get_xscale() == "log"
    assert disp.ax_.get_xlabel() == "measured T_LLM_decode (ms)"
    with pytest.raises(ValueError, match="y_true has 2 values but y_pred has 1"):
        TotalLatencyDisplay.from_predictions([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        # A NaN was drawn as nothing, and a value <= 0 left out of the log axes.
        ([1.0, np.nan], [1.0, 2.0], r"y_true must be finite \(no NaN or inf\); entry 1 is nan"),
        ([1.0, -2.0], [1.0, 2.0], r"y_true must be positive latencies \(> 0\); entry 1"),
        ([1.0, 2.0], [0.0, 2.0], r"y_pred must be positive latencies \(> 0\); entry 0"),
        ([], [], "y_true and y_pred are empty"),
    ],
)
def test_total_display_refuses_what_it_cannot_draw(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        TotalLatencyDisplay.from_predictions(y_true, y_pred)


def test_displays_refuse_a_y_that_does_not_match_X(fitted, small_data):
    # A y of another length or width was taken as it came: the last column
    # of a 3-column y was plotted, and a short y was blamed on output_tokens.
    d = small_data
    y = d.y.to_numpy()
    for display in (TotalLatencyDisplay, CoverageDisplay):
        with pytest.raises(ValueError, match=f"y has 5 rows but X has {len(y)} samples"):
            display.from_estimator(fitted, d.X, y[:5], output_tokens=d.output_tokens)
        with pytest.raises(ValueError, match=r"y must have 1 column \(T_LLM_decode\) or 2"):
            display.from_estimator(fitted, d.X, np.c_[y, y[:, :1]], output_tokens=d.output_tokens)


def test_coverage_display_from_estimator(fitted, small_data):
    d = small_data
    confidences = (0.5, 0.9)
    disp = CoverageDisplay.from_estimator(
        fitted, d.X, d.y, output_tokens=d.output_tokens, confidences=confidences, n_buckets=3
    )
    y = d.y["T_LLM_decode"].to_numpy()
    for j, c in enumerate(confidences):
        bounds = fitted.predict_interval(d.X, d.output_tokens, confidence=c)
        expected = np.mean((bounds[:, 0] <= y) & (y <= bounds[:, 1]))
        assert disp.overall[j] == pytest.approx(expected)
    assert len(disp.lines_) == len(disp.labels) == 3 and disp.counts.sum() == len(y)
    np.testing.assert_allclose(disp.overall_line_.get_ydata(), disp.overall)
    np.testing.assert_allclose(disp.overall_line_.get_xdata(), confidences)
    assert disp.ax_.get_xlabel() == "nominal coverage"
    # Buckets by output length: their counts add up and their weighted
    # coverage is the overall coverage.
    np.testing.assert_allclose(disp.counts @ disp.coverage / disp.counts.sum(), disp.overall)
    per_token = CoverageDisplay.from_estimator(
        fitted,
        d.X.assign(output_tokens=d.output_tokens),
        d.y,
        target="per_token",
        confidences=[0.8],
    )
    total = CoverageDisplay.from_estimator(
        fitted, d.X, d.y, output_tokens=d.output_tokens, confidences=[0.8]
    )
    np.testing.assert_allclose(per_token.overall, total.overall)


def test_coverage_display_errors(fitted, small_data):
    d = small_data
    with pytest.raises(ValueError, match="needs output_tokens"):
        CoverageDisplay.from_estimator(fitted, d.X, d.y)
    with pytest.raises(ValueError, match="one confidence per interval"):
        CoverageDisplay.from_predictions(
            [1.0], np.ones((1, 2, 2)), confidences=[0.9], output_tokens=[3]
        )
    with pytest.raises(ValueError, match="n_buckets must be an integer >= 1"):
        CoverageDisplay.from_predictions(
            [1.0], np.ones((1, 2, 1)), confidences=[0.9], output_tokens=[3], n_buckets=0
        )
    with pytest.raises(ValueError, match="y_true has 2 values but y_intervals has 1"):
        CoverageDisplay.from_predictions(
            [1.0, 2.0], np.ones((1, 2, 1)), confidences=[0.9], output_tokens=[3, 3]
        )
    with pytest.raises(ValueError, match="output_tokens has 2 entries but y_true has 1 values"):
        CoverageDisplay.from_predictions(
            [1.0], np.ones((1, 2, 1)), confidences=[0.9], output_tokens=[3, 3]
        )


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    disp = TotalLatencyDisplay(y_true=[1.0], y_pred=[1.0])
    with pytest.raises(ImportError, match=r"pip install 'sklat\[plot\]'"):
        disp.plot()


def test_coverage_display_leaves_out_empty_length_buckets():
    # Two requests: the quantile edges of 4 buckets leave two of them empty.
    intervals = np.array([[[9.0], [11.0]], [[18.0], [25.0]]])
    display = CoverageDisplay.from_predictions(
        [10.0, 30.0], intervals, output_tokens=[6, 24], confidences=[0.9], n_buckets=4
    )
    assert display.labels == ["N 6-9", "N 20-24"]
    np.testing.assert_array_equal(display.coverage[:, 0], [1.0, 0.0])
    np.testing.assert_array_equal(display.counts, [1, 1])


def test_save_report_figures_writes_each_figure(fitted, small_data, tmp_path):
    from sklat.plotting import save_report_figures

    d = small_data
    files = save_report_figures(
        fitted, d.X, d.y, output_tokens=d.output_tokens, output_dir=tmp_path, coverage=False
    )
    assert files == ["latency_curves.png", "total_decode.png"]
    assert all((tmp_path / f).stat().st_size > 0 for f in files)
    assert not (tmp_path / "coverage.png").exists()


def test_curve_from_estimator_at_a_load(small_data):
    from sklat import LatencyEstimator

    d = small_data
    X = d.X.assign(concurrency=np.resize([1.0, 2.0, 4.0], len(d.X)))
    est = LatencyEstimator(max_epochs=3, random_state=0, n_threads=1)
    est.fit(X, d.y, output_tokens=d.output_tokens)
    configs, positions = d.X.iloc[:2], np.arange(1, 11)
    curves = {}
    for load in (1, 4):
        disp = LatencyCurveDisplay.from_estimator(est, configs, positions=positions, load=load)
        expected = est.predict_positions(configs, positions, load=load)
        for line, row in zip(disp.lines_, expected):
            np.testing.assert_allclose(line.get_ydata(), row)
        curves[load] = expected
    assert (curves[4] > curves[1]).all()
    with pytest.raises(
        ValueError, match=r"X lacks the load feature column\(s\) \[.concurrency.\]: give"
    ):
        LatencyCurveDisplay.from_estimator(est, configs, positions=positions)
