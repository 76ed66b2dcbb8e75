"""sklat profile --endpoint against a real server: ``transformers serve`` with a
tiny random-weight model on the CPU, on 127.0.0.1."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sklat
from sklat.cli import main
from sklat.exceptions import ExtrapolationWarning
from sklat.io import load_results


def write_tiny_model(folder):
    """A 2-layer Llama with random weights and an offline word-level tokenizer
    (one token per word, ``w0`` ... ``w508``; any other word is ``<unk>``)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(509)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece()  # joins words with spaces
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _transformers_serve(tmp_path_factory, *flags):
    """``transformers serve`` of the tiny model on a free port, with
    ``flags``: ``(url, model path)``."""
    import httpx

    model = write_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    port = _free_port()
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *flags]
    log = open(tmp_path_factory.mktemp("serve") / "log", "w+")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"transformers serve did not start:\n{log.read()[-3000:]}")
            time.sleep(0.25)
        yield url, str(model)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with _transformers_serve(tmp_path_factory) as server:
        yield server


def test_profile_a_transformers_server_then_train(served, tmp_path, capsys):
    url, model = served
    out = tmp_path / "results"
    args = ["profile", "--endpoint", url, "--model", model, "--engine", "transformers"]
    args += ["--prompt_tokens", "8,48", "--output_tokens", "6,24", "--repeats", "2"]
    args += ["--output_dir", str(out), "--dataset", "tiny", "--warmup", "1", "-q"]
    assert main(args) == 0
    log = out / "tiny" / "failed_requests.log"
    # A request whose first network read bunched two tokens is logged, not kept;
    # rerunning measures what is missing.
    for _ in range(5):
        if not log.exists() or len(pd.read_csv(out / "tiny" / "requests.csv")) == 8:
            break
        assert main(args) == 0
    frame = pd.read_csv(out / "tiny" / "requests.csv")
    assert len(frame) == 8
    # Exact lengths (generation_config min/max_new_tokens) and the server's own
    # prompt count: one token per word with this tokenizer.
    assert (frame["output_tokens"] == frame["output_tokens_asked"]).all()
    assert (frame["text_tokens"] == frame["text_tokens_asked"]).all()
    assert set(frame["server"]) == {"uvicorn"}
    res = load_results(out, features=["text_tokens"])
    # One event per token is how this server streams on a quiet machine; on a
    # busy one it can join tokens into one event, and then no request has
    # segments: each row says why instead of guessing them.
    why = set(frame["segments"])
    assert why <= {"one token per event", "token counts per event unknown"}, why
    has_segments = [s is not None for s in res.decode_segments]
    assert has_segments == list(frame["segments"] == "one token per event")
    for segments, n, total in zip(res.decode_segments, res.output_tokens, res.y["T_LLM_decode"]):
        if segments is not None:
            tokens, ms = segments
            assert tokens.sum() == n and ms.sum() == pytest.approx(total, rel=1e-6)
    # Decoding is timed after the first token; the end-to-end time covers both.
    assert (frame["e2e_ms"] >= frame["T_prefill_total"] + frame["T_LLM_decode"]).all()
    trained = tmp_path / "model"
    train = ["train", "--results_dir", str(out), "--use_all_datasets", "--output_dir"]
    train += [str(trained), "--features", "text_tokens", "--num_epochs", "5", "--quiet"]
    assert main(train) == 0
    metrics = json.loads((trained / "metrics.json").read_text())
    assert np.isfinite(metrics["train"]["total_decode_mape_pct"])


def test_profile_a_real_server_under_load(served, tmp_path):
    url, model = served
    out = tmp_path / "results"
    args = ["profile", "--endpoint", url, "--model", model, "--engine", "transformers"]
    args += ["--prompt_tokens", "8,32", "--output_tokens", "12", "--repeats", "2"]
    args += ["--concurrency", "1,4", "--output_dir", str(out), "--dataset", "load", "-q"]
    # A request whose first read bunched two tokens is logged; a rerun retries it.
    for _ in range(5):
        assert main(args) == 0
        frame = pd.read_csv(out / "load" / "requests.csv")
        if len(frame) == 8:
            break
    assert len(frame) == 8
    alone = frame[frame["max_concurrency"] == 1]["concurrency"]
    shared = frame[frame["max_concurrency"] == 4]["concurrency"]
    np.testing.assert_allclose(alone, 1.0)
    assert (shared >= 1.0).all() and (shared <= 4.0 + 1e-9).all()


def _profile_levels(url, model, out, dataset, levels):
    """Profile the grid at the closed-loop ``levels``; rerun until every
    request is a row (one whose first read bunched two tokens is logged)."""
    args = ["profile", "--endpoint", url, "--model", model, "--engine", "transformers"]
    args += ["--prompt_tokens", "8,64", "--output_tokens", "16,32", "--repeats", "2"]
    args += ["--concurrency", levels, "--output_dir", str(out), "--dataset", dataset, "-q"]
    expected = 8 * len(levels.split(","))
    for _ in range(5):
        assert main(args) == 0
        frame = pd.read_csv(out / dataset / "requests.csv")
        if len(frame) == expected:
            return frame
    pytest.fail(f"{expected - len(frame)} requests of {dataset} failed five runs in a row")


@pytest.mark.slow
def test_a_continuous_batching_engine_learnt_at_some_loads_predicts_another(
    tmp_path_factory, tmp_path
):
    # transformers serve --continuous-batching shares its steps among the
    # requests in flight: measured at 1, 2 and 4, the model trained on them
    # predicts 3 (unseen) between its neighbours and near its measurement,
    # and 8 (past the trained loads) above 4, with an ExtrapolationWarning.
    with _transformers_serve(tmp_path_factory, "--continuous-batching") as (url, model):
        out = tmp_path / "results"
        _profile_levels(url, model, out, "trained", "1,2,4")
        unseen = _profile_levels(url, model, out, "unseen", "3")
    trained = tmp_path / "model"
    train = ["train", "--results_dir", str(out), "--datasets", "trained", "--output_dir"]
    train += [str(trained), "--features", "text_tokens,concurrency", "--quiet"]
    assert main(train) == 0
    est = sklat.load(trained / "model.safetensors")
    assert est.load_features_.tolist() == [1]
    configs = pd.DataFrame({"text_tokens": [8, 64]})

    def tpot(load, n=32):
        with warnings.catch_warnings():
            # The measured loads end just below 4.
            warnings.simplefilter("ignore", ExtrapolationWarning)
            return est.predict_total(configs.assign(concurrency=load), output_tokens=n) / n

    between = tpot(3.0)
    assert (tpot(2.0) <= between).all() and (between <= tpot(4.0)).all()
    assert (tpot(8.0) >= tpot(4.0)).all()
    with pytest.warns(ExtrapolationWarning, match="concurrency"):
        est.predict_total(configs.assign(concurrency=8.0), output_tokens=32)
    measured = unseen["T_LLM_decode"] / unseen["output_tokens"]
    predicted = (
        est.predict_total(
            unseen[["text_tokens", "concurrency"]], output_tokens=unseen["output_tokens"]
        )
        / unseen["output_tokens"]
    )
    ratio = np.median(predicted) / np.median(measured)
    assert 0.5 < ratio < 2.0, ratio
