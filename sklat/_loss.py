"""The training losses as pure functions of tensors.

All latencies are in standardised units. ``kind`` selects the error measure:

- ``"log"``: squared log ratio, scale-free (a 10% miss costs the same on a
  20 ms step as on a 20 s total);
- ``"relative"``: squared relative error ``((pred - target) / target) ** 2``;
- ``"mse"``: the design document's plain squared error. Totals are divided by
  ``total_norm`` (the mean output length) so they live on the per-step scale.
"""

import torch


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


def segment_loss(pred, target, tokens, weight, n_requests, kind):
    """Error of the predicted sums over timed decode segments.

    A segment of ``k`` tokens is compared as its per-token average (``mse``;
    the ratio is the same for ``log`` and ``relative``), so that a per-step
    measurement (one token) counts exactly as before. ``weight`` is ``k / N``
    of the request each segment belongs to, so the weighted sum divided by
    ``n_requests`` is the mean over requests of the token-weighted mean error
    over their segments: each request weighs the same, however finely it was
    timed.
    """
    if kind == "mse":
        pred, target = pred / tokens, target / tokens
    return (_squared_error(pred, target, kind) * weight).sum() / n_requests


def combined_loss(
    pred, target, *, kind, prefill_weight, decode_total_weight, positioned_weight, total_norm=1.0
):
    """``prefill_weight * prefill + decode_total_weight * total
    + positioned_weight * segments``; absent terms count as zero.

    ``pred`` is the module's output dict; ``target`` holds ``total``,
    optionally ``prefill``, and ``segments``/``segment_tokens``/
    ``segment_weight``/``n_segment_requests`` when the batch has timed
    decode segments (per-step measurements are one-token segments).
    """
    loss = decode_total_weight * decode_total_loss(pred["total"], target["total"], kind, total_norm)
    if pred["prefill"] is not None and target.get("prefill") is not None:
        loss = loss + prefill_weight * prefill_loss(pred["prefill"], target["prefill"], kind)
    if pred["segments"] is not None and target.get("segments") is not None:
        loss = loss + positioned_weight * segment_loss(
            pred["segments"],
            target["segments"],
            target["segment_tokens"],
            target["segment_weight"],
            target["n_segment_requests"],
            kind,
        )
    return loss
