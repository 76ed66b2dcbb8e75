"""``sklat check``: do recent requests still fit a trained model? Exit status
1 when they do not (see :func:`sklat.control.check_drift`), so a cron
job or a CI step can act on it."""

from .._domain import quiet_extrapolation
from ..control import check_drift
from ._io import load_model, measured_results
from ._options import add_model_option, add_option, add_results_options

# Exit status of a significant drift (2 is a user error, as everywhere).
DRIFT_STATUS = 1


def add_check_parser(sub):
    parser = sub.add_parser(
        "check",
        help="test whether recent requests still fit a trained model (exit 1 on drift)",
        description="Score the requests of --results_dir as the model's calibration "
        "requests were and test whether their errors grew (a rank test, exact when "
        "nothing changed). Prints the p-value, the share of requests outside the "
        "calibrated 90% intervals against its nominal rate, and the features the "
        f"errors follow; exits with status {DRIFT_STATUS} when the drift is significant "
        "at --alpha.",
    )
    add_model_option(parser)
    add_results_options(parser, "recent results")
    add_option(parser, "alpha", type=float, default=0.01, help="significance level (0.01)")
    parser.set_defaults(func=cmd_check)


def cmd_check(args, argv):

    est = load_model(args.model, device=args.device)
    _, res, y = measured_results(est, args)
    with quiet_extrapolation():
        report = check_drift(est, res.X, y, res.output_tokens, alpha=args.alpha)
    verdict = "DRIFT" if report.drift else "no drift"
    shares = ", ".join(
        f"{name} {share:.0%} outside the 90% intervals" for name, share in report.outside.items()
    )
    print(
        f"sklat check: {verdict} at alpha={args.alpha:g} (p = {report.p_value:.3g}, "
        f"{report.n_requests} requests): {shares} (nominal {report.nominal_outside:.0%})"
    )
    print(report.features.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return DRIFT_STATUS if report.drift else 0
