"""``sklat recalibrate``: adapt a trained model to a new setting from a few
measured requests (see :meth:`sklat.LatencyEstimator.recalibrate`)."""

import json
from pathlib import Path

import numpy as np

from .. import metrics
from .._constants import MODEL_FILE
from .._domain import quiet_extrapolation
from .._version import library_versions
from ._io import check_output_dir, load_model, measured_results
from ._options import add_model_option, add_option, add_results_options

RECALIBRATION_FILE = "recalibration.json"


def add_recalibrate_parser(sub):
    parser = sub.add_parser(
        "recalibrate",
        help="adapt a trained model to a new setting from a few measured requests",
        description="Refit the cost-term multipliers and the calibration of a trained "
        "model on the requests of --results_dir (the model's setting moved: another GPU, "
        "engine, dtype or attention kernel), and write the adapted model and "
        f"{RECALIBRATION_FILE} to --output_dir.",
    )
    add_model_option(parser)
    add_results_options(parser, "results of the new setting")
    add_option(parser, "output_dir", type=Path, required=True, help="folder to write to")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into an existing, non-empty --output_dir"
    )
    parser.set_defaults(func=cmd_recalibrate)


def cmd_recalibrate(args, argv):
    # The model (torch, skorch) loads only for the commands that use one, so that
    # `sklat --help` and the measuring commands stay light.
    from ..persistence import save

    check_output_dir(args.output_dir, args.overwrite)
    est = load_model(args.model, device=args.device)
    results_dir, res, y = measured_results(est, args)
    with quiet_extrapolation():
        before = metrics.mape(res.y["T_LLM_decode"], est.predict_total(res.X, res.output_tokens))
        est.recalibrate(res.X, y, res.output_tokens)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    save(est, args.output_dir / MODEL_FILE)
    report = {
        "n_requests": len(res.X),
        "cost_scales": [float(v) for v in est.cost_scales_],
        "scale_slopes": dict(zip(("decode", "prefill"), est.scale_slopes_.tolist())),
        "total_decode_mape_pct_before": before,
        # Each request predicted with multipliers fitted without it: its score
        # is log(y / y_hat), so |y_hat - y| / y = |exp(-score) - 1|.
        "total_decode_mape_pct_cross_fitted": float(
            100 * np.mean(np.abs(np.expm1(-est.conformity_scores_[:, 0])))
        ),
        "model": str(args.model),
        "results_dir": str(results_dir),
        "datasets": sorted(set(res.dataset)),
        "command": "sklat " + " ".join(argv),
        "versions": library_versions(),
    }
    (args.output_dir / RECALIBRATION_FILE).write_text(json.dumps(report, indent=2))
    decode = ", ".join(f"{v:.3g}" for v in est.cost_scales_[:3])
    print(
        f"sklat recalibrate: {len(res.X)} requests; decode multipliers (flat, context, shape) "
        f"{decode}; total-decode MAPE {before:.2f}% before, "
        f"{report['total_decode_mape_pct_cross_fitted']:.2f}% after (cross-fitted); wrote "
        f"{args.output_dir}/{{{MODEL_FILE}, {RECALIBRATION_FILE}}}"
    )
    return 0
