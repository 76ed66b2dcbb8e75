"""The torch module, the packed batches and the losses, against naive versions."""

import numpy as np
import pytest
import torch

from sklat._loss import combined_loss, decode_total_loss, positioned_loss, prefill_loss
from sklat._module import FactorizedLatencyModule
from sklat._net import BatchIterator, RequestData


def _module(n_features=3, prefill=True):
    torch.manual_seed(0)
    module = FactorizedLatencyModule(n_features, hidden_size=16, n_basis=4,
                                     with_prefill=prefill, position_scale=100)
    # Leave the flat initialisation so the test sees a non-trivial curve.
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module.double()


def test_summed_total_equals_explicit_per_position_sum():
    module = _module()
    x = torch.randn(5, 3, dtype=torch.float64)
    n = torch.tensor([1, 7, 3, 40, 12])
    out = module(x, n)
    log_scale, weights, _ = module.encode(x)
    for i in range(5):
        phi = module.basis(torch.arange(1, int(n[i]) + 1))
        explicit = torch.exp(log_scale[i]) * (phi @ weights[i]).sum()
        assert torch.allclose(out["total"][i], explicit)


def test_step_outputs_match_basis():
    module = _module()
    x = torch.randn(3, 3, dtype=torch.float64)
    n = torch.tensor([4, 2, 5])
    sample = torch.tensor([0, 0, 2, 2, 2])
    pos = torch.tensor([1, 4, 1, 3, 5])
    out = module(x, n, sample, pos)
    log_scale, weights, _ = module.encode(x)
    phi = module.basis(pos)
    expected = torch.exp(log_scale[sample]) * (weights[sample] * phi).sum(1)
    assert torch.allclose(out["steps"], expected)


def test_initial_model_is_flat_average():
    module = FactorizedLatencyModule(2, hidden_size=8, n_basis=3, position_scale=10)
    out = module(torch.randn(4, 2), torch.tensor([1, 2, 3, 10]))
    assert torch.allclose(out["total"], torch.tensor([1.0, 2.0, 3.0, 10.0]), rtol=0.05)
    assert torch.allclose(out["prefill"], torch.ones(4))


def test_module_memory_bounded_for_long_outputs():
    # N = 32768 for 64 requests: the basis table is (32768, K), not (64, 32768, H).
    module = FactorizedLatencyModule(3, hidden_size=64, n_basis=8)
    out = module(torch.randn(64, 3), torch.full((64,), 32768))
    out["total"].sum().backward()
    assert torch.isfinite(out["total"]).all()


def _data():
    n = np.array([3, 1, 4, 2], dtype=np.int64)
    steps = [np.array([1.0, 2, 3]), None, np.array([4.0, 5, 6, 7]), None]
    lengths = [0 if s is None else len(s) for s in steps]
    return RequestData(
        x=np.arange(8, dtype=np.float32).reshape(4, 2), output_tokens=n,
        total=np.array([6.0, 1, 22, 3], dtype=np.float32),
        prefill=np.array([1.0, 2, 3, 4], dtype=np.float32),
        step_values=np.concatenate([s for s in steps if s is not None]).astype(np.float32),
        step_offsets=np.concatenate(([0], np.cumsum(lengths))))


def test_batch_packs_ragged_steps():
    inputs, targets = _data().batch(np.array([2, 1, 0]))
    t = inputs.tensors
    assert t["step_sample"].tolist() == [0, 0, 0, 0, 2, 2, 2]
    assert t["step_position"].tolist() == [1, 2, 3, 4, 1, 2, 3]
    assert targets["steps"].tolist() == [4, 5, 6, 7, 1, 2, 3]
    assert targets["n_step_requests"] == 2
    np.testing.assert_allclose(targets["step_weight"], [.25] * 4 + [1 / 3] * 3)
    assert len(inputs) == 3


def test_subset_keeps_rows_aligned():
    sub = _data().subset([3, 2])
    assert sub.output_tokens.tolist() == [2, 4]
    assert sub.step_offsets.tolist() == [0, 0, 4]
    assert sub.step_values.tolist() == [4, 5, 6, 7]


def test_iterator_covers_every_request_once_and_is_seeded():
    data = _data()
    order = lambda seed: [int(v) for inp, _ in BatchIterator(  # noqa: E731
        data, 3, shuffle=True, seed=seed) for v in inp.tensors["x"][:, 0]]
    assert sorted(order(0)) == [0, 2, 4, 6]
    assert order(5) == order(5)
    assert len(BatchIterator(data, 3)) == 2


@pytest.mark.parametrize("kind", ["log", "relative", "mse"])
def test_losses_zero_at_truth_and_positive_elsewhere(kind):
    t = torch.tensor([1.0, 2.0, 4.0])
    assert prefill_loss(t, t, kind) == 0
    assert decode_total_loss(t, t, kind, 3.0) == 0
    assert prefill_loss(t * 1.1, t, kind) > 0
    w = torch.tensor([0.5, 0.5, 1.0])
    assert positioned_loss(t, t, w, 2, kind) == 0


def test_log_loss_is_scale_free_and_weights_combine():
    t = torch.tensor([1.0, 1000.0])
    p = t * 1.1
    a = decode_total_loss(p[:1], t[:1], "log")
    b = decode_total_loss(p[1:], t[1:], "log")
    assert torch.isclose(a, b)
    pred = {"total": p, "prefill": p, "steps": None}
    target = {"total": t, "prefill": t}
    loss = combined_loss(pred, target, kind="log", prefill_weight=2.0,
                         decode_total_weight=1.0, positioned_weight=0.5)
    assert torch.isclose(loss, 3 * a)


def test_positioned_loss_weights_requests_equally():
    # Request A: 1 step off by 10%; request B: 4 exact steps.
    pred = torch.tensor([1.1, 1, 1, 1, 1])
    target = torch.ones(5)
    w = torch.tensor([1.0, .25, .25, .25, .25])
    loss = positioned_loss(pred, target, w, 2, "relative")
    assert torch.isclose(loss, torch.tensor(0.01 / 2))


def _averaging_net(decay, valid, lr=0.05):
    from skorch.callbacks import EarlyStopping
    from skorch.helper import predefined_split

    from sklat._net import LatencyNet, WeightAveraging, WeightedLatencyLoss

    callbacks = [("weight_averaging", WeightAveraging(decay))]
    if valid is not None:
        callbacks.append(("early_stopping", EarlyStopping(
            patience=3, load_best=False, sink=lambda *a: None)))
    return LatencyNet(
        module=FactorizedLatencyModule, module__n_features=2, module__hidden_size=8,
        module__n_basis=2, module__position_scale=4.0, criterion=WeightedLatencyLoss,
        optimizer=torch.optim.AdamW, lr=lr, max_epochs=12, batch_size=2,
        iterator_train=BatchIterator, iterator_valid=BatchIterator,
        train_split=None if valid is None else predefined_split(valid),
        callbacks=callbacks, verbose=0)


@pytest.mark.parametrize("decay", [0.0, 0.7])
def test_weight_averaging_ends_on_best_averaged_weights(decay):
    # The held-out loss is computed with the averaged weights, and the net ends
    # with those of the best epoch: re-scoring the held-out requests with the
    # final module gives the lowest held-out loss in the history.
    data = _data()
    torch.manual_seed(0)
    # A high learning rate makes the held-out loss jump, so the best epoch
    # is not the last one.
    net = _averaging_net(decay, valid=data, lr=0.2).fit(data, None)
    valid_loss = net.history[:, "valid_loss"]
    assert np.argmin(valid_loss) < len(valid_loss) - 1
    net.module_.eval()
    inputs, targets = data.batch(np.arange(len(data)))
    with torch.no_grad():
        loss = net.get_loss(net.module_(**inputs.to("cpu")), targets).item()
    assert loss == pytest.approx(min(valid_loss), rel=1e-5)
    # Training mode and the end of training both drop the averaged copy.
    assert not dict(net.callbacks_)["weight_averaging"].active_


def test_weight_averaging_without_held_out_set_keeps_last_average():
    data = _data()
    torch.manual_seed(0)
    plain = _averaging_net(0.0, valid=None).fit(data, None)
    torch.manual_seed(0)
    averaged = _averaging_net(0.9, valid=None).fit(data, None)
    # Same optimisation path, but the kept weights are an average of it.
    assert len(plain.history) == len(averaged.history) == 12
    a = torch.cat([p.flatten() for p in plain.module_.parameters()])
    b = torch.cat([p.flatten() for p in averaged.module_.parameters()])
    assert not torch.allclose(a, b)
    np.testing.assert_allclose(plain.history[:, "train_loss"],
                               averaged.history[:, "train_loss"], rtol=1e-6)


def test_config_mlp_has_its_own_weight_decay(fitted):
    mlp = {id(p) for p in fitted.net_.module_.config_mlp.parameters()}
    seen = set()
    for group in fitted.net_.optimizer_.param_groups:
        for p in group["params"]:
            expected = (fitted.config_mlp_weight_decay if id(p) in mlp
                        else fitted.weight_decay)
            assert group["weight_decay"] == expected
            seen.add(id(p))
    assert mlp < seen and len(seen) == len(list(fitted.net_.module_.parameters()))
