"""The training losses as pure functions of tensors.

All latencies are in standardised units. ``kind`` selects the error measure:

- ``"log"``: squared log ratio, scale-free (a 10% miss costs the same on a
  20 ms step as on a 20 s total);
- ``"relative"``: squared relative error ``((pred - target) / target) ** 2``;
- ``"mse"``: the design document's plain squared error. Totals are divided by
  ``total_norm`` (the mean output length) so they live on the per-step scale.
"""

import torch

LOSS_KINDS = ("log", "relative", "mse")


def _squared_error(pred, target, kind):
    if kind == "log":
        return (torch.log(pred) - torch.log(target)) ** 2
    if kind == "relative":
        return ((pred - target) / target) ** 2
    return (pred - target) ** 2


def prefill_loss(pred, target, kind):
    """Mean error of the prefill head."""
    return _squared_error(pred, target, kind).mean()


def decode_total_loss(pred, target, kind, total_norm=1.0):
    """Mean error of the summed per-position predictions against the totals."""
    if kind == "mse":
        pred, target = pred / total_norm, target / total_norm
    return _squared_error(pred, target, kind).mean()


def positioned_loss(pred, target, step_weight, n_requests, kind):
    """Per-step error, each request weighted equally whatever its length.

    ``step_weight`` is ``1 / N`` of the request each step belongs to, so the
    weighted sum divided by ``n_requests`` is the mean over requests of the
    mean over their steps.
    """
    return (_squared_error(pred, target, kind) * step_weight).sum() / n_requests


def combined_loss(
    pred, target, *, kind, prefill_weight, decode_total_weight, positioned_weight, total_norm=1.0
):
    """``prefill_weight * prefill + decode_total_weight * total
    + positioned_weight * positioned``; absent terms count as zero.

    ``pred`` is the module's output dict; ``target`` holds ``total``,
    optionally ``prefill``, and ``steps``/``step_weight``/``n_step_requests``
    when the batch has per-step measurements.
    """
    loss = decode_total_weight * decode_total_loss(pred["total"], target["total"], kind, total_norm)
    if pred["prefill"] is not None and target.get("prefill") is not None:
        loss = loss + prefill_weight * prefill_loss(pred["prefill"], target["prefill"], kind)
    if pred["steps"] is not None and target.get("steps") is not None:
        loss = loss + positioned_weight * positioned_loss(
            pred["steps"], target["steps"], target["step_weight"], target["n_step_requests"], kind
        )
    return loss
