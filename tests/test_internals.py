"""The torch module, the packed batches and the losses, against naive versions."""

import numpy as np
import pytest
import torch

from sklat._loss import combined_loss, decode_total_loss, prefill_loss, segment_loss
from sklat._module import CostTermsLatencyModule
from sklat._net import BatchIterator, RequestData
from sklat._requests import Segments


def _module(n_features=3, prefill=True):
    torch.manual_seed(0)
    module = CostTermsLatencyModule(
        n_features,
        hidden_size=16,
        n_basis=4,
        n_cost_terms=2,
        with_prefill=prefill,
        position_scale=30,
        context_scale=50.0,
        context_features=(1,),
    )
    # Leave the flat initialisation so the test sees a non-trivial curve.
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module.double()


def _explicit_curve(module, x, context, positions):
    """f(c, p) of one request, term by term, at ``positions`` (1-D)."""
    linear = torch.nn.functional.linear(
        x[None], module.config_linear.weight * module.linear_mask, module.config_linear.bias
    )
    mlp = module.decode_mlp(x[None] * module.decode_input_mask)
    out = linear[:, : mlp.shape[1]] + mlp
    m, k = module.n_cost_terms, module.n_basis
    flat = torch.exp(out[0, :m]).sum()
    slope = torch.exp(out[0, m : 2 * m]).sum()
    shape = torch.exp(out[0, 2 * m]) * torch.softmax(out[0, 2 * m + 1 : 2 * m + 1 + k], 0)
    p = positions.to(x.dtype)
    u = torch.log1p(torch.clamp(p, max=30.0)) / torch.log1p(torch.tensor(30.0))
    phi = torch.nn.functional.softplus(module.position_encoder(u[:, None].to(x.dtype)))
    return flat + slope * (context + p / 50.0) + phi @ shape


def test_summed_total_equals_explicit_per_position_sum():
    module = _module()
    x = torch.randn(5, 3, dtype=torch.float64)
    context = torch.rand(5, dtype=torch.float64) * 3
    # 40 and 45 run past position_scale: the basis is held constant there.
    n = torch.tensor([1, 7, 3, 40, 45])
    out = module(x, n, context)
    for i in range(5):
        explicit = _explicit_curve(module, x[i], context[i], torch.arange(1, int(n[i]) + 1))
        assert torch.allclose(out["total"][i], explicit.sum())


def test_step_outputs_match_the_curve():
    module = _module()
    x = torch.randn(3, 3, dtype=torch.float64)
    context = torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64)
    n = torch.tensor([4, 2, 5])
    sample = torch.tensor([0, 0, 2, 2, 2])
    pos = torch.tensor([1, 4, 1, 3, 5])
    out = module(x, n, context, sample, pos, pos)
    expected = torch.stack(
        [
            _explicit_curve(module, x[i], context[i], pos[j : j + 1])[0]
            for j, i in enumerate(sample.tolist())
        ]
    )
    assert torch.allclose(out["segments"], expected)


def test_segment_sums_match_the_explicit_sum_of_the_curve():
    module = _module()
    x = torch.randn(3, 3, dtype=torch.float64)
    context = torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64)
    # Request 0: 1 + 3 tokens; request 1: one segment (its total); request 2:
    # 2 + 1 + 2 tokens, running past position_scale.
    n = torch.tensor([4, 45, 5])
    sample = torch.tensor([0, 0, 1, 2, 2, 2])
    start = torch.tensor([1, 2, 1, 1, 3, 4])
    end = torch.tensor([1, 4, 45, 2, 3, 5])
    out = module(x, n, context, sample, start, end)
    for j, i in enumerate(sample.tolist()):
        positions = torch.arange(int(start[j]), int(end[j]) + 1)
        explicit = _explicit_curve(module, x[i], context[i], positions).sum()
        assert torch.allclose(out["segments"][j], explicit)
    # A segment covering the whole request is its total.
    assert torch.allclose(out["segments"][2], out["total"][1])
    # The segments of a request add up to its total.
    assert torch.allclose(out["segments"][:2].sum(), out["total"][0])
    assert torch.allclose(out["segments"][3:].sum(), out["total"][2])


def test_one_step_segment_late_in_a_long_request_keeps_float32_precision():
    module = CostTermsLatencyModule(2, hidden_size=8, n_basis=4, position_scale=100_000.0)
    x = torch.randn(1, 2)
    n = torch.tensor([100_000])
    positions = torch.tensor([99_999])
    one = torch.zeros(1, dtype=torch.long)
    out = module(x, n, torch.zeros(1), one, positions, positions)
    curve = module.double()(
        x.double(), n, torch.zeros(1, dtype=torch.float64), one, positions, positions
    )
    assert torch.allclose(out["segments"].double(), curve["segments"], rtol=1e-5)


def test_cost_terms_sum_power_laws():
    # With the MLP silent, the flat cost is a sum of exp(linear) terms: it can
    # be a + b * x exactly (x = exp(z)), which one power law cannot be.
    module = CostTermsLatencyModule(1, hidden_size=4, n_basis=2, n_cost_terms=2)
    with torch.no_grad():
        for p in module.decode_mlp.parameters():
            p.zero_()
        module.config_linear.weight[:2, 0] = torch.tensor([0.0, 1.0])
        module.config_linear.bias[:2] = torch.tensor([np.log(2.0), np.log(3.0)])
    z = torch.linspace(-2, 2, 7)[:, None]
    flat = module.encode(z)["flat"]
    assert torch.allclose(flat, 2 + 3 * torch.exp(z[:, 0]))


def test_context_features_reach_decode_only_through_the_context():
    # The flat cost, the context slope and the shape's scale ignore a context
    # column; the prefill does not.
    module = _module()
    x = torch.randn(6, 3, dtype=torch.float64)
    moved = x.clone()
    moved[:, 1] += torch.linspace(-2, 2, 6, dtype=torch.float64)
    a, b = module.encode(x), module.encode(moved)
    for key in ("flat", "slope"):
        assert torch.allclose(a[key], b[key])
    assert torch.allclose(a["shape"].sum(1), b["shape"].sum(1))
    assert not torch.allclose(a["prefill"], b["prefill"])
    moved[:, 0] += 1.0
    assert not torch.allclose(module.encode(moved)["flat"], a["flat"])


def test_initial_model_is_close_to_flat_average():
    torch.manual_seed(0)
    module = CostTermsLatencyModule(
        2, hidden_size=8, n_basis=3, position_scale=10, context_scale=10.0
    )
    out = module(torch.randn(4, 2), torch.tensor([1, 2, 3, 10]))
    assert torch.allclose(out["total"], torch.tensor([1.0, 2.0, 3.0, 10.0]), rtol=0.15)
    assert torch.allclose(out["prefill"], torch.ones(4), rtol=0.15)


def test_initial_fit_starts_at_the_log_linear_model():
    # Per-token latency exp(0.5 z0 - 0.3 z1 + 0.2) and prefill exp(z1): the
    # untrained module starts near both (the exponents carry small noise).
    torch.manual_seed(0)
    fit = {
        "decode": (np.array([0.5, -0.3], dtype=np.float32), 0.2),
        "prefill": (np.array([0.0, 1.0], dtype=np.float32), 0.0),
    }
    module = CostTermsLatencyModule(
        2, hidden_size=8, n_basis=3, position_scale=10, context_scale=10.0, initial_fit=fit
    )
    z = torch.randn(64, 2)
    out = module(z, torch.full((64,), 10))
    per_token = torch.log(out["total"] / 10)
    expected = 0.5 * z[:, 0] - 0.3 * z[:, 1] + 0.2
    assert (per_token - expected).abs().mean() < 0.15
    assert (torch.log(out["prefill"]) - z[:, 1]).abs().mean() < 0.15


def test_log_ridge_leaves_out_excluded_columns():
    from sklat._training import log_ridge as _log_ridge

    rng = np.random.RandomState(0)
    z = rng.normal(size=(200, 3))
    coef, intercept = _log_ridge(
        z, z @ [1.0, -2.0, 0.5] + 3.0, np.array([True, False, True]), alpha=1e-9
    )
    # The excluded column gets no coefficient; the others absorb what they can.
    assert coef[1] == 0
    np.testing.assert_allclose(coef[[0, 2]], [1.0, 0.5], atol=0.2)
    assert abs(intercept - 3.0) < 0.2


def test_module_memory_bounded_for_long_outputs():
    # N = 32768 for 64 requests: the basis table is (32768, K), not (64, 32768, H).
    module = CostTermsLatencyModule(3, hidden_size=64, n_basis=8)
    out = module(torch.randn(64, 3), torch.full((64,), 32768), torch.rand(64))
    out["total"].sum().backward()
    assert torch.isfinite(out["total"]).all()


def _data():
    # Request 0: per-step (3 one-token segments); 2: segments of 1 and 3
    # tokens; 1 and 3: totals only.
    n = np.array([3, 1, 4, 2], dtype=np.int64)
    values = [np.array([1.0, 2, 3]), None, np.array([4.0, 18]), None]
    tokens = [np.array([1, 1, 1]), None, np.array([1, 3]), None]
    lengths = [0 if v is None else len(v) for v in values]
    return RequestData(
        x=np.arange(8, dtype=np.float32).reshape(4, 2),
        output_tokens=n,
        context=np.array([0.5, 1, 0, 2], dtype=np.float32),
        total=np.array([6.0, 1, 22, 3], dtype=np.float32),
        prefill=np.array([1.0, 2, 3, 4], dtype=np.float32),
        segments=Segments(
            np.concatenate([v for v in values if v is not None]).astype(np.float32),
            np.concatenate([t for t in tokens if t is not None]),
            np.concatenate(([0], np.cumsum(lengths))),
        ),
    )


def test_batch_packs_ragged_segments():
    inputs, targets = _data().batch(np.array([2, 1, 0]))
    t = inputs.tensors
    assert t["segment_sample"].tolist() == [0, 0, 2, 2, 2]
    assert t["segment_start"].tolist() == [1, 2, 1, 2, 3]
    assert t["segment_end"].tolist() == [1, 4, 1, 2, 3]
    assert targets["segments"].tolist() == [4, 18, 1, 2, 3]
    assert targets["segment_tokens"].tolist() == [1, 3, 1, 1, 1]
    assert targets["n_segment_requests"] == 2
    # k / N: each request's weights sum to 1.
    np.testing.assert_allclose(targets["segment_weight"], [0.25, 0.75] + [1 / 3] * 3)
    assert len(inputs) == 3


def test_subset_keeps_rows_aligned():
    sub = _data().subset([3, 2])
    assert sub.output_tokens.tolist() == [2, 4]
    assert sub.segments.offsets.tolist() == [0, 0, 2]
    assert sub.segments.values.tolist() == [4, 18]
    assert sub.segment_end.tolist() == [1, 4]


def test_iterator_covers_every_request_once_and_is_seeded():
    data = _data()

    def order(seed):
        batches = BatchIterator(data, 3, shuffle=True, seed=seed)
        return [int(v) for inp, _ in batches for v in inp.tensors["x"][:, 0]]

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
    k = torch.tensor([1.0, 2.0, 1.0])
    assert segment_loss(t, t, k, w, 2, kind) == 0
    assert segment_loss(t * 1.1, t, k, w, 2, kind) > 0


def test_log_loss_is_scale_free_and_weights_combine():
    t = torch.tensor([1.0, 1000.0])
    p = t * 1.1
    a = decode_total_loss(p[:1], t[:1], "log")
    b = decode_total_loss(p[1:], t[1:], "log")
    assert torch.isclose(a, b)
    pred = {"total": p, "prefill": p, "segments": None}
    target = {"total": t, "prefill": t}
    loss = combined_loss(
        pred, target, kind="log", prefill_weight=2.0, decode_total_weight=1.0, positioned_weight=0.5
    )
    assert torch.isclose(loss, 3 * a)


def test_segment_loss_weights_requests_equally():
    # Request A: 1 step off by 10%; request B: 4 exact steps.
    pred = torch.tensor([1.1, 1, 1, 1, 1])
    target = torch.ones(5)
    w = torch.tensor([1.0, 0.25, 0.25, 0.25, 0.25])
    loss = segment_loss(pred, target, torch.ones(5), w, 2, "relative")
    assert torch.isclose(loss, torch.tensor(0.01 / 2))


def test_segment_loss_compares_per_token_averages_under_mse():
    # A 4-token segment 0.4 ms off is 0.1 ms per token: the same error as a
    # one-token segment 0.1 ms off.
    one = segment_loss(torch.tensor([1.1]), torch.ones(1), torch.ones(1), torch.ones(1), 1, "mse")
    four = segment_loss(
        torch.tensor([4.4]), torch.tensor([4.0]), torch.tensor([4.0]), torch.ones(1), 1, "mse"
    )
    assert torch.isclose(one, four)


def _averaging_net(decay, valid, lr=0.05):
    from skorch.helper import predefined_split

    from sklat._net import EarlyStopping, LatencyNet, WeightAveraging, WeightedLatencyLoss

    callbacks = [("weight_averaging", WeightAveraging(decay))]
    if valid is not None:
        callbacks.append(
            ("early_stopping", EarlyStopping(patience=3, load_best=False, sink=lambda *a: None))
        )
    return LatencyNet(
        module=CostTermsLatencyModule,
        module__n_features=2,
        module__hidden_size=8,
        module__n_basis=2,
        module__position_scale=4.0,
        criterion=WeightedLatencyLoss,
        optimizer=torch.optim.AdamW,
        lr=lr,
        max_epochs=12,
        batch_size=2,
        iterator_train=BatchIterator,
        iterator_valid=BatchIterator,
        train_split=None if valid is None else predefined_split(valid),
        callbacks=callbacks,
        verbose=0,
    )


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
    np.testing.assert_allclose(
        plain.history[:, "train_loss"], averaged.history[:, "train_loss"], rtol=1e-6
    )


def test_config_mlps_have_their_own_weight_decay(fitted):
    module = fitted.net_.module_
    mlp = {id(p) for part in (module.decode_mlp, module.prefill_mlp) for p in part.parameters()}
    seen = set()
    for group in fitted.net_.optimizer_.param_groups:
        for p in group["params"]:
            expected = fitted.config_mlp_weight_decay if id(p) in mlp else fitted.weight_decay
            assert group["weight_decay"] == expected
            seen.add(id(p))
    assert mlp < seen and len(seen) == len(list(fitted.net_.module_.parameters()))
