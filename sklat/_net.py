"""skorch plumbing: packed request batches, the loss criterion and the net.

A batch is built with vectorised numpy indexing (no Python loop over samples or
positions); timed decode segments come in the CSR layout of
:class:`sklat._requests.Segments`.
"""

import numpy as np
import torch
from skorch import NeuralNet
from skorch import callbacks as skorch_callbacks
from skorch.callbacks import Callback
from torch import nn

from ._loss import combined_loss
from .exceptions import TrainingDivergedError


class RequestData(torch.utils.data.Dataset):
    """Standardised training requests.

    Parameters
    ----------
    x : ndarray of shape (n, d), float32
    output_tokens : ndarray of shape (n,), int64
    context : ndarray of shape (n,), float32
        Context length at the first decode step, divided by the module's
        context scale.
    total : ndarray of shape (n,), float32
        Total decode latency in standardised units.
    prefill : ndarray of shape (n,) or None
    segments : sklat._requests.Segments
        Timed decode segments, their values in standardised units (float32).
    """

    def __init__(self, x, output_tokens, context, total, prefill, segments):
        self.x = x
        self.output_tokens = output_tokens
        self.context = context
        self.total = total
        self.prefill = prefill
        self.segments = segments
        self.segment_end = segments.ends

    def __len__(self):
        return len(self.output_tokens)

    def __getitem__(self, i):
        return self.batch(np.asarray([i]))

    def subset(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        return RequestData(
            self.x[rows],
            self.output_tokens[rows],
            self.context[rows],
            self.total[rows],
            None if self.prefill is None else self.prefill[rows],
            self.segments.take(rows),
        )

    def batch(self, rows):
        """``(inputs, targets)`` tensors for the requests ``rows``."""
        flat, lengths = self.segments.gather(rows)
        sample = np.repeat(np.arange(len(rows)), lengths)
        output_tokens = self.output_tokens[rows]
        tokens = self.segments.tokens[flat]
        end = self.segment_end[flat]
        inputs = PackedBatch(
            x=torch.from_numpy(self.x[rows]),
            output_tokens=torch.from_numpy(output_tokens),
            context=torch.from_numpy(self.context[rows]),
            segment_sample=torch.from_numpy(sample),
            segment_start=torch.from_numpy(end - tokens + 1),
            segment_end=torch.from_numpy(end),
        )
        targets = {"total": torch.from_numpy(self.total[rows])}
        if self.prefill is not None:
            targets["prefill"] = torch.from_numpy(self.prefill[rows])
        if len(flat):
            targets["segments"] = torch.from_numpy(self.segments.values[flat])
            targets["segment_tokens"] = torch.from_numpy(tokens.astype(np.float32))
            targets["segment_weight"] = torch.from_numpy(
                (tokens / output_tokens[sample]).astype(np.float32)
            )
            targets["n_segment_requests"] = int(np.count_nonzero(lengths))
        return inputs, targets


class PackedBatch:
    """Module inputs of one batch. ``len()`` is the number of requests, which
    is what skorch records as the batch size."""

    def __init__(self, **tensors):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors["output_tokens"])

    def to(self, device):
        return {k: v.to(device) for k, v in self.tensors.items()}


class BatchIterator:
    """Mini-batches over a :class:`RequestData`, reshuffled each epoch from a
    seeded generator so that two fits with the same seed see the same order."""

    def __init__(self, dataset, batch_size, shuffle=False, seed=0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._rng = np.random.RandomState(seed)

    def __len__(self):
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            yield self.dataset.batch(order[start : start + self.batch_size])


class WeightedLatencyLoss(nn.Module):
    """The criterion: ``prefill_weight * prefill + decode_total_weight *
    decode_total + positioned_weight * positioned`` (see :mod:`sklat._loss`)."""

    def __init__(
        self,
        kind="log",
        prefill_weight=2.0,
        decode_total_weight=1.0,
        positioned_weight=0.5,
        total_norm=1.0,
    ):
        super().__init__()
        self.kind = kind
        self.prefill_weight = prefill_weight
        self.decode_total_weight = decode_total_weight
        self.positioned_weight = positioned_weight
        self.total_norm = total_norm

    def forward(self, pred, target):
        return combined_loss(
            pred,
            target,
            kind=self.kind,
            prefill_weight=self.prefill_weight,
            decode_total_weight=self.decode_total_weight,
            positioned_weight=self.positioned_weight,
            total_norm=self.total_norm,
        )


class TrainingInterrupted(Exception):
    """Ctrl-C during training, carried past skorch (which would swallow a
    ``KeyboardInterrupt`` and return a half-trained net as if it had finished)."""


class _EarlyStop(KeyboardInterrupt):
    """How :class:`EarlyStopping` ends training: skorch stops on a
    ``KeyboardInterrupt``, and this one is told apart from Ctrl-C."""


class EarlyStopping(skorch_callbacks.EarlyStopping):
    """skorch's early stopping, whose stop is not taken for a Ctrl-C."""

    def on_epoch_end(self, net, **kwargs):
        try:
            return super().on_epoch_end(net, **kwargs)
        except KeyboardInterrupt:
            raise _EarlyStop from None


class LatencyNet(NeuralNet):
    """A skorch ``NeuralNet`` over :class:`RequestData` and packed batches."""

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except _EarlyStop:
            raise
        except KeyboardInterrupt:
            raise TrainingInterrupted from None

    def infer(self, x, **fit_params):
        module = self.module_
        averaging = dict(getattr(self, "callbacks_", ())).get("weight_averaging")
        if averaging is not None and averaging.active_ and not module.training:
            # Held-out batches are scored with the averaged weights.
            module = averaging.averaged_module
        return module(**x.to(self.device), **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in y_true.items()}
        loss = self.criterion_(y_pred, y_true)
        if not torch.isfinite(loss):
            epoch = len(self.history)
            hint = "The learning rate is probably too high for this data (lower `lr`)"
            if self.criterion_.kind != "log":
                hint += (
                    f", or the targets span too many orders of magnitude for "
                    f"loss={self.criterion_.kind!r} (use loss='log')"
                )
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch}: the loss became {loss.item()}. {hint}."
            )
        return loss


class WeightAveraging(Callback):
    """Keep an exponential moving average of the weights; score the held-out
    requests with it and end training with the averaged weights of the best
    epoch (lowest held-out loss), or of the last epoch without a held-out set.

    On a few hundred noisy requests the weights after any one mini-batch
    step jitter around the optimum, and a held-out loss of a few dozen
    requests is too noisy to pick the best of them; averaging removes most
    of that jitter. ``decay=0`` keeps the plain weights.

    Parameters
    ----------
    decay : float
        Weight of the previous average at each training step, in [0, 1).
    """

    def __init__(self, decay=0.98):
        self.decay = decay
        self.average_ = None

    @property
    def active_(self):
        """Whether training is running, so that held-out batches use the average."""
        return self.average_ is not None

    @property
    def averaged_module(self):
        return self.average_.module

    def on_train_begin(self, net, **kwargs):
        self.average_ = torch.optim.swa_utils.AveragedModel(
            net.module_,
            use_buffers=True,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(self.decay),
        )
        self.best_loss_ = np.inf
        self.best_state_ = None

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.average_.update_parameters(net.module_)

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1].get("valid_loss")
        if loss is not None and loss < self.best_loss_:
            self.best_loss_ = loss
            self.best_state_ = _clone_state(self.averaged_module)

    def on_train_end(self, net, **kwargs):
        state = self.best_state_
        if state is None:  # no held-out set (or no epoch ran): the last average
            state = _clone_state(self.averaged_module)
        net.module_.load_state_dict(state)
        # The copy of the module is not needed after training (nor pickled).
        self.average_ = self.best_state_ = None


def _clone_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
