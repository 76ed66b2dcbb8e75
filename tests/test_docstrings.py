"""Numpydoc sections of the public API are complete: every parameter and
return value documented and described."""

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

import sklat  # noqa: E402
import sklat.metrics  # noqa: E402
from sklat import plotting  # noqa: E402

# Parameters documented and described, a Returns section with descriptions,
# a docstring at all.
CHECKS = {"PR01", "PR02", "PR07", "RT01", "RT03", "GL08"}

PUBLIC = ["sklat.LatencyEstimator"] + [
    f"sklat.LatencyEstimator.{m}"
    for m in (
        "fit",
        "predict",
        "predict_positions",
        "predict_total",
        "predict_prefill",
        "predict_budget",
        "predict_interval",
        "predict_slo_attainment",
        "in_domain",
        "score",
        "recalibrate",
    )
]
for _cls in ("LatencyCurveDisplay", "TotalLatencyDisplay", "CoverageDisplay"):
    PUBLIC += [f"sklat.plotting.{_cls}"] + [
        f"sklat.plotting.{_cls}.{m}"
        for m in ("from_estimator", "from_predictions", "plot")
        if hasattr(getattr(plotting, _cls), m)
    ]
PUBLIC += ["sklat.save", "sklat.load", "sklat.cli.main", "sklat.plotting.save_report_figures"]
PUBLIC += ["sklat.control.choose", "sklat.control.check_drift", "sklat.control.capacity"]
PUBLIC += ["sklat.acquire.profile_model", "sklat.acquire.profile_endpoint"]
PUBLIC += ["sklat.acquire.read_benchmark"]
PUBLIC += [f"sklat.metrics.{name}" for name in sklat.metrics.__all__]
PUBLIC += [
    f"sklat.io.{name}"
    for name in (
        "load_results",
        "read_table",
        "demo_results_dir",
        "read_benchmark",
        "write_results",
    )
]
PUBLIC += [
    f"sklat.datasets.{name}"
    for name in (
        "make_positioned_latency",
        "true_decode_curve",
        "true_prefill",
        "write_demo_results",
    )
]


@pytest.mark.parametrize("name", PUBLIC)
def test_numpydoc_sections_complete(name):
    errors = [
        f"{code}: {message}"
        for code, message in numpydoc_validate.validate(name)["errors"]
        if code in CHECKS
    ]
    assert not errors, errors
