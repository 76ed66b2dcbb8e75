"""Fitting the curve and its calibration: one net with a held-out calibration
split, a cross-fitted ensemble, or one net calibrated by nets trained without
each fold (the ``n_folds`` rule: :func:`sklat._splits.cross_fit_folds`).

The functions take the estimator whose parameters they read and whose trained
nets (``nets_``, ``net_``, ``history_``, ``total_norm_``) they set.
"""

import numpy as np

from ._calibrator import Calibrator
from ._curve import Curve
from ._distribution import empirical_distribution
from ._domain import feature_range
from ._features import FeatureTransform, context_lengths
from ._net import RequestData
from ._splits import (
    calibrates_only,
    calibration_split,
    cross_fit_folds,
    measurement_groups,
    unseen,
    validation_split,
)
from ._threads import auto_threads, torch_threads
from ._training import best_epoch, net_kwargs, step_work, train, warn_unconverged
from ._validation import feature_labeller


def fit_objects(est, requests, roles, seed):
    """``(curve, calibrator)`` of ``est`` trained on ``requests`` (checked
    :class:`~sklat._requests.Requests`), as its ``n_folds`` asks; ``roles``:
    the :class:`~sklat._features.FeatureRoles` of the features."""
    X_arr, n_tokens, n = requests.X, requests.output_tokens, len(requests)
    # Repeats of a measurement stay on one side of every split.
    groups = measurement_groups(X_arr, n_tokens)
    folds = cross_fit_folds(X_arr, n_tokens, est.n_folds, seed, groups)
    if folds is None:
        fit_rows, cal_rows = calibration_split(n, est.calibration_fraction, seed, groups)
        fit_part = requests.take(fit_rows)
        curve, held_out = _fit_one_net(est, fit_part, roles, seed)
        calibrator = Calibrator.fit(
            curve,
            fit_part,
            requests.take(cal_rows),
            # The difficulty tree is judged on errors out of sample: a
            # request whose repeat trained the net is not.
            held_out=unseen(held_out, groups[fit_rows]),
            n_threads=est.n_threads,
        )
    elif calibrates_only(est.n_folds, n):
        # Many requests of few measurements: the model is one net trained
        # on every request, every configuration included. Nets trained
        # as it was (as many epochs), each without one fold, give every
        # request an error on a net that never saw its measurement.
        curve, _ = _fit_one_net(est, requests, roles, seed)
        no_stopping = np.zeros(0, dtype=np.int64)
        fold_curve = _fit_curve(
            est,
            requests,
            roles,
            [
                ((seed + k) % 2**31, np.flatnonzero(folds != k), no_stopping)
                for k in range(folds.max() + 1)
            ],
            kept=False,
            max_epochs=best_epoch(est.net_),
        )
        calibrator = Calibrator.fit_cross(
            fold_curve, requests, folds, n_threads=est.n_threads
        ).calibrating(curve)
    else:
        curve = _fit_curve(
            est,
            requests,
            roles,
            [
                ((seed + k) % 2**31, None, np.flatnonzero(folds == k))
                for k in range(folds.max() + 1)
            ],
        )
        calibrator = Calibrator.fit_cross(curve, requests, folds, n_threads=est.n_threads)
    return curve, calibrator


def _fit_one_net(est, part, roles, seed):
    """``(curve, held_out)``: one net trained on ``part``, stopped early on
    ``validation_fraction`` of it (the rows ``held_out``), drawn request
    by request."""
    _, held_out = validation_split(len(part), est.validation_fraction, seed)
    return _fit_curve(est, part, roles, [(seed, None, held_out)]), held_out


def _fit_curve(est, part, roles, trainings, *, kept=True, max_epochs=None):
    """Train the curve on the requests of ``part`` (checked Requests): the
    average of one net per ``(seed, rows, held_out)`` of ``trainings``,
    trained on the rows ``rows`` of ``part`` (None: all) but those at the
    positions ``held_out`` of them, which stop it early. ``kept``: the
    nets are the fitted model's (``nets_``; a ``ConvergenceWarning`` if
    their training looks unfinished). ``max_epochs``: instead of the
    parameter's."""
    X_arr, n_tokens, decode, prefill = part.X, part.output_tokens, part.decode, part.prefill
    label = feature_labeller(est)
    context_features = roles.context
    context = context_lengths(X_arr, context_features, label)
    transform = FeatureTransform.fit(X_arr, est.log_features, label, roles.scaling)
    # What the net and the curve are built from (the fitted attributes
    # of the same names).
    fitted = {
        "n_features_in_": est.n_features_in_,
        "context_features_": context_features,
        "load_features_": roles.load,
        "decode_load_features_": roles.decode_load,
        "prefill_load_features_": roles.prefill_load,
        "context_scale_": float(max(1.0, np.median(context + n_tokens))),
        "step_scale_": float(np.median(decode / n_tokens)),
        "prefill_scale_": float(np.median(prefill)) if prefill is not None else None,
        "max_output_tokens_": int(n_tokens.max()),
        "total_norm_": float(n_tokens.mean()),
    }
    data = RequestData(
        x=transform.transform(X_arr, label),
        output_tokens=n_tokens,
        context=(context / fitted["context_scale_"]).astype(np.float32),
        total=(decode / fitted["step_scale_"]).astype(np.float32),
        prefill=(
            None if prefill is None else (prefill / fitted["prefill_scale_"]).astype(np.float32)
        ),
        segments=part.segments.scaled(fitted["step_scale_"]),
    )
    params = est.get_params(deep=False)
    if max_epochs is not None:
        params["max_epochs"] = max_epochs
    work = step_work(params, est.n_features_in_, fitted["max_output_tokens_"])
    with torch_threads(auto_threads(est.n_threads, work)):
        kwargs = net_kwargs(fitted, est.device_)
        nets = []
        for k, (seed, rows, held_out) in enumerate(trainings):
            subset = data if rows is None else data.subset(rows)
            if params["verbose"] and not kept:
                print(
                    f"calibration: net {k + 1} of {len(trainings)}, "
                    f"{params['max_epochs']} epochs on {len(subset)} requests"
                )
            elif params["verbose"] and len(trainings) > 1:
                print(
                    f"cross-fitting: net {k + 1} of {len(trainings)}, stopped early on "
                    f"{len(held_out)} of {len(subset)} requests"
                )
            nets.append(train(params, subset, seed=seed, net_kwargs=kwargs, held_out=held_out))
        if kept:
            warn_unconverged(params, nets)
            est.nets_, est.net_, est.history_ = nets, nets[0], nets[0].history
            est.total_norm_ = fitted["total_norm_"]
        return Curve(
            nets,
            transform=transform,
            feature_range=feature_range(X_arr),
            context_features=context_features,
            load_features=roles.load,
            decode_load_features=roles.decode_load,
            prefill_load_features=roles.prefill_load,
            context_scale=fitted["context_scale_"],
            step_scale=fitted["step_scale_"],
            prefill_scale=fitted["prefill_scale_"],
            lengths=empirical_distribution(n_tokens),
            feature_names=getattr(est, "feature_names_in_", None),
            hidden_size=est.hidden_size,
        )
