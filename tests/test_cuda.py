"""The CUDA path: runs only where CUDA is available (benchmarks/gpu.sh runs it
on a GPU machine); on CPU-only machines every test here is skipped."""

import pickle
import warnings

import numpy as np
import pytest
import torch

import sklat
from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def data():
    return make_positioned_latency(500, noise=0.05, positioned_fraction=0.3, random_state=0)


@pytest.fixture(scope="module")
def gpu_model(data):
    return LatencyEstimator(max_epochs=40, random_state=0, device="auto").fit(
        data.X,
        data.y,
        output_tokens=data.output_tokens,
        positioned_latencies=data.positioned_latencies,
    )


def test_auto_uses_cuda_and_learns(gpu_model, data):
    assert gpu_model.device_ == "cuda"
    assert next(gpu_model.net_.module_.parameters()).is_cuda
    pred = gpu_model.predict_total(data.X, data.output_tokens)
    true = data.y["T_LLM_decode"].to_numpy()
    assert pred.dtype == np.float64 and np.mean(np.abs(pred - true) / true) < 0.1


def test_cuda_and_cpu_fits_agree(gpu_model, data):
    cpu = LatencyEstimator(max_epochs=40, random_state=0, device="cpu").fit(
        data.X,
        data.y,
        output_tokens=data.output_tokens,
        positioned_latencies=data.positioned_latencies,
    )
    a = gpu_model.predict_positions(data.X, [1, 10, 100])
    b = cpu.predict_positions(data.X, [1, 10, 100])
    assert np.median(np.abs(a - b) / b) < 0.02


def test_total_is_sum_of_positions_on_cuda(gpu_model, data):
    X = data.X.iloc[:10]
    n = np.arange(1, 11) * 50
    full = gpu_model.predict_positions(X, np.arange(1, n.max() + 1))
    mask = np.arange(1, n.max() + 1)[None, :] <= n[:, None]
    np.testing.assert_allclose(gpu_model.predict_total(X, n), (full * mask).sum(1), rtol=1e-10)


def test_cuda_model_saved_and_loaded_on_cpu(gpu_model, data, tmp_path):
    path = tmp_path / "gpu.safetensors"
    sklat.save(gpu_model, path)
    loaded = sklat.load(path, device="cpu")
    assert not next(loaded.net_.module_.parameters()).is_cuda
    np.testing.assert_allclose(
        loaded.predict(data.X, output_tokens=7),
        gpu_model.predict(data.X, output_tokens=7),
        rtol=1e-5,
    )


def test_cuda_pickle_loads_without_cuda(gpu_model, data, monkeypatch):
    blob = pickle.dumps(gpu_model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = pickle.loads(blob)
    assert not next(loaded.net_.module_.parameters()).is_cuda
    np.testing.assert_allclose(
        loaded.predict(data.X, output_tokens=7),
        gpu_model.predict(data.X, output_tokens=7),
        rtol=1e-5,
    )


def test_long_outputs_on_cuda(gpu_model, data):
    total = gpu_model.predict_total(data.X.iloc[:100], 32768)
    assert np.isfinite(total).all() and (total > 0).all()


def test_profile_on_cuda(tmp_path):
    transformers = pytest.importorskip("transformers")
    from sklat.io import load_results
    from sklat.profile import profile_model

    model = tmp_path / "tiny-llama"
    transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=256,
    ).save_pretrained(model)
    profile_model(
        model,
        tmp_path / "results",
        random_weights=True,
        prompt_tokens=[8, 64],
        output_tokens=[4, 16],
        repeats=1,
        device="cuda",
        dtype="bfloat16",
        progress=False,
    )
    res = load_results(tmp_path / "results", features=["text_tokens"])
    assert len(res.X) == 4 and set(res.frame["device"]) == {"cuda"}
    assert res.frame["device_name"].str.len().min() > 0
    for n, steps in zip(res.output_tokens, res.positioned_latencies):
        assert len(steps) == n and (steps > 0).all()
