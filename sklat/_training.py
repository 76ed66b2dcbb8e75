"""Building and training the skorch net of a :class:`~sklat.LatencyEstimator`.

The estimator hands over its parameters (``get_params()``) and the standardised requests
(:class:`~sklat._net.RequestData`); what comes back is a trained net, its
weights set to the averaged weights of the best held-out epoch.
"""

import re
import sys
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from skorch.callbacks import ProgressBar
from skorch.helper import predefined_split

from ._module import CostTermsLatencyModule, load_reach
from ._net import (
    BatchIterator,
    EarlyStopping,
    LatencyNet,
    TrainingInterrupted,
    WeightAveraging,
    WeightedLatencyLoss,
)

# Relative improvement of the held-out loss that counts as one (EarlyStopping).
_IMPROVEMENT_THRESHOLD = 1e-4
# A final training loss this many times the first epoch's means the
# optimisation went the wrong way (typically: the learning rate is too high).
_LOSS_RISE_FACTOR = 10.0
# skorch colours the best epochs' values; a log file or pipe gets plain text.
_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def _log_sink(text):
    """Print a line of skorch's epoch log, without colour codes unless the
    output is a terminal."""
    if not sys.stdout.isatty():
        text = _ANSI_CODES.sub("", text)
    print(text)


def step_work(params, n_features, max_output_tokens):
    """Rough multiply-adds of one training step, for the estimator
    parameters ``params``."""
    h = params["hidden_size"]
    return params["batch_size"] * (n_features * h + 2 * h * h) * 2 + max_output_tokens * h * h


def net_kwargs(fitted, device):
    """What the net's shape and loss depend on: from ``fitted``, a mapping of
    the fitted attributes ``n_features_in_``, ``prefill_scale_``,
    ``max_output_tokens_``, ``context_scale_``, ``context_features_``,
    ``load_features_`` (absent: none), ``decode_load_features_`` and
    ``prefill_load_features_`` (absent: every load feature) and
    ``total_norm_``."""
    return dict(
        n_features=fitted["n_features_in_"],
        with_prefill=fitted["prefill_scale_"] is not None,
        max_output_tokens=fitted["max_output_tokens_"],
        context_scale=fitted["context_scale_"],
        context_features=fitted["context_features_"],
        load_features=fitted.get("load_features_", ()),
        decode_load_features=fitted.get("decode_load_features_"),
        prefill_load_features=fitted.get("prefill_load_features_"),
        total_norm=fitted["total_norm_"],
        device=device,
    )


def module_kwargs(
    params,
    *,
    n_features,
    with_prefill,
    max_output_tokens,
    context_scale,
    context_features,
    load_features=(),
    decode_load_features=None,
    prefill_load_features=None,
):
    """Arguments of :class:`~sklat._module.CostTermsLatencyModule` for the
    estimator parameters ``params``."""
    return dict(
        n_features=n_features,
        hidden_size=params["hidden_size"],
        n_basis=params["n_basis"],
        n_cost_terms=params["n_cost_terms"],
        with_prefill=with_prefill,
        position_scale=float(max_output_tokens),
        context_scale=context_scale,
        context_features=[int(c) for c in context_features],
        load_features=[int(c) for c in load_features],
        decode_load_features=_indices(decode_load_features),
        prefill_load_features=_indices(prefill_load_features),
    )


def _indices(columns):
    return None if columns is None else [int(c) for c in columns]


def make_net(
    params,
    *,
    total_norm,
    device,
    seed=0,
    train_split=None,
    callbacks=(),
    initial_fit=None,
    **shape,
):
    """The skorch net for the estimator parameters ``params`` (``get_params()``)
    and the fitted scales; ``shape``: the other arguments of
    :func:`module_kwargs`."""
    module_args = module_kwargs(params, **shape)
    return LatencyNet(
        module=CostTermsLatencyModule,
        **{f"module__{k}": v for k, v in module_args.items()},
        module__initial_fit=initial_fit,
        criterion=WeightedLatencyLoss,
        criterion__kind=params["loss"],
        criterion__prefill_weight=params["prefill_weight"],
        criterion__decode_total_weight=params["decode_total_weight"],
        criterion__positioned_weight=params["positioned_weight"],
        criterion__total_norm=total_norm,
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=params["weight_decay"],
        optimizer__param_groups=[
            (pattern, {"weight_decay": params["config_mlp_weight_decay"]})
            for pattern in ("decode_mlp.*", "prefill_mlp.*")
        ],
        lr=params["lr"],
        max_epochs=params["max_epochs"],
        batch_size=params["batch_size"],
        iterator_train=BatchIterator,
        iterator_train__shuffle=True,
        iterator_train__seed=seed,
        iterator_valid=BatchIterator,
        train_split=train_split,
        callbacks=list(callbacks),
        **({"callbacks__print_log__sink": _log_sink} if params["verbose"] else {}),
        device=device,
        verbose=int(params["verbose"] > 0),
    )


def train(params, data, *, seed, net_kwargs, held_out):
    """Train a net on ``data`` (a RequestData); returns it in eval mode
    (:func:`warn_unconverged` tells whether its training looks unfinished).

    ``held_out``: rows of ``data`` that judge early stopping (none: no early
    stopping; :mod:`sklat._splits` draws them).

    Raises ``KeyboardInterrupt`` if training was interrupted (skorch alone
    would end training quietly and return a half-trained net).
    """
    callbacks = [("weight_averaging", WeightAveraging(params["weight_averaging"]))]
    train_split = None
    valid_rows = np.asarray(held_out, dtype=np.int64)
    fit_rows = np.setdiff1d(np.arange(len(data)), valid_rows)
    if len(valid_rows):
        valid = data.subset(valid_rows)
        data = data.subset(fit_rows)
        train_split = predefined_split(valid)
        callbacks.append(
            (
                "early_stopping",
                EarlyStopping(
                    monitor="valid_loss",
                    patience=params["n_iter_no_change"],
                    # WeightAveraging restores the best averaged weights.
                    threshold=_IMPROVEMENT_THRESHOLD,
                    load_best=False,
                    sink=_log_sink if params["verbose"] else _silent,
                ),
            )
        )
    if params["verbose"] >= 2:
        callbacks.append(("progress_bar", ProgressBar()))
    net = make_net(
        params,
        seed=seed,
        train_split=train_split,
        callbacks=callbacks,
        initial_fit=initial_fit(data, net_kwargs),
        **net_kwargs,
    )
    devices = [net_kwargs["device"]] if net_kwargs["device"].startswith("cuda") else []
    # Seed a private copy of torch's RNG: fitting leaves the caller's
    # global random state untouched.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            net.fit(data, None)
        except TrainingInterrupted:
            raise KeyboardInterrupt from None
    net.module_.eval()
    return net


def best_epoch(net):
    """The epoch (1-based) whose weights ``net`` ended with: that of its least
    held-out loss (the first of equal ones), else its last."""
    history = net.history
    if not len(history) or "valid_loss" not in history[-1]:
        return len(history)
    return int(np.argmin(history[:, "valid_loss"])) + 1


def warn_unconverged(params, nets):
    """One ``ConvergenceWarning`` if the training of the nets (one, or the
    members of a cross-fitted model) looks unfinished: the first one's
    reason, and for several nets how many share it."""
    messages = [m for m in (unconverged(params, net) for net in nets) if m is not None]
    if not messages:
        return
    if len(nets) > 1:
        messages[0] = f"{len(messages)} of the {len(nets)} cross-fitted nets: {messages[0]}"
    # Level 4: the estimator's fit (through _fit and _fit_curve).
    warnings.warn(messages[0], ConvergenceWarning, stacklevel=4)


def unconverged(params, net):
    """Why the training of ``net`` looks unfinished, as a warning's message,
    or None: the loss rose, or (where a held-out loss was recorded) it was
    still improving at ``max_epochs``."""
    history = net.history
    if not len(history):
        return None
    first, last = history[0, "train_loss"], history[-1, "train_loss"]
    if last > _LOSS_RISE_FACTOR * first:
        return (
            f"training made the loss worse (epoch 1: {first:.3g}, last epoch: "
            f"{last:.3g}); the learning rate lr={params['lr']} is probably too high for this "
            "data. Predictions are unreliable."
        )
    if "valid_loss" not in history[-1] or len(history) < params["max_epochs"]:
        return None
    best = best_epoch(net)
    if best >= len(history) - params["n_iter_no_change"] // 2:
        return (
            f"training stopped at max_epochs={params['max_epochs']} while the held-out loss "
            f"was still improving (best at epoch {best}); raise max_epochs (or lr) "
            "for a better fit."
        )
    return None


def initial_fit(data, shape):
    """Ridge fits of the log per-token average (on the features that are not
    context features) and of the log prefill (on all), in standardised
    units: where the power laws start. Each leaves out the load features its
    head does not see (``shape``: :func:`net_kwargs`), which would otherwise
    take a share of the fit that the head's costs cannot hold (the loads of
    one stretch of a request are correlated with the other's)."""
    z = data.x.astype(np.float64)
    keep = {head: np.ones(z.shape[1], dtype=bool) for head in ("decode", "prefill")}
    keep["decode"][np.asarray(shape["context_features"], dtype=np.int64)] = False
    reach = load_reach(
        shape["load_features"],
        shape.get("decode_load_features"),
        shape.get("prefill_load_features"),
    )
    for col, parts in reach.items():
        keep["decode"][col] &= "flat" in parts
        keep["prefill"][col] &= "prefill" in parts
    fits = {"decode": log_ridge(z, np.log(data.total / data.output_tokens), keep["decode"])}
    fits["prefill"] = (
        None if data.prefill is None else log_ridge(z, np.log(data.prefill), keep["prefill"])
    )
    return fits


def log_ridge(z, target, keep, alpha=1.0):
    """``(coef, intercept)`` of a ridge regression of ``target`` on the columns
    ``keep`` of ``z`` (zeros elsewhere)."""
    coef = np.zeros(z.shape[1])
    sub = z[:, keep]
    intercept = float(target.mean())
    if sub.shape[1]:
        centred = sub - sub.mean(axis=0)
        gram = centred.T @ centred + alpha * np.eye(sub.shape[1])
        coef[keep] = np.linalg.solve(gram, centred.T @ (target - intercept))
        intercept -= float(sub.mean(axis=0) @ coef[keep])
    return coef.astype(np.float32), intercept


def _silent(*args, **kwargs):
    """A sink that prints nothing (skorch callbacks take a callable)."""
