"""``sklat profile``: measured results folders from a tiny random-weight model."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

import sklat._cli.profile  # noqa: E402
from sklat.acquire import _model as profile_mod  # noqa: E402
from sklat.cli import main  # noqa: E402
from sklat.io import load_results  # noqa: E402
from sklat.profile import profile_model  # noqa: E402

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    vocab_size=64,
    max_position_embeddings=64,
)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaConfig(**TINY).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    from transformers import MixtralConfig

    path = tmp_path_factory.mktemp("models") / "tiny-mixtral"
    MixtralConfig(**TINY, num_local_experts=4, num_experts_per_tok=2).save_pretrained(path)
    return path


def _profile(model, out, **kw):
    kw = {
        "prompt_tokens": [4, 16],
        "output_tokens": [2, 5],
        "repeats": 2,
        "random_weights": True,
        "device": "cpu",
        "progress": False,
        "warmup": 1,
        **kw,
    }
    return profile_model(model, out, **kw)


@pytest.fixture(scope="module")
def profiled(llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return out, _profile(llama, out, attn_implementation="eager")


def _steps(frame):
    return [np.asarray(json.loads(s)) for s in frame["T_decode_per_step"]]


def test_rows_cover_the_grid_and_steps_add_up(profiled):
    out, path = profiled
    assert path == out / "tiny-llama_eager_float32" / "requests.csv"
    frame = pd.read_csv(path)
    assert len(frame) == 2 * 2 * 2
    keys = frame[["text_tokens", "output_tokens", "repeat"]].value_counts()
    assert (keys == 1).all() and len(keys) == 8
    for n, steps, total, avg in zip(
        frame["output_tokens"],
        _steps(frame),
        frame["T_LLM_decode"],
        frame["T_decode_per_token_avg"],
    ):
        assert len(steps) == n and (steps > 0).all()
        assert steps.sum() == pytest.approx(total, rel=1e-9)
        assert avg == pytest.approx(total / n, rel=1e-6)
    assert (frame["T_prefill_total"] > 0).all() and (frame["vision_tokens"] == 0).all()
    assert set(frame["attn_implementation"]) == {"eager"}
    assert set(frame["dtype"]) == {"float32"} and set(frame["device"]) == {"cpu"}
    assert frame["transformers_version"].notna().all() and frame["run_id"].nunique() == 1


def test_the_folder_trains_with_sklat_train(profiled, tmp_path):
    out, _ = profiled
    res = load_results(out, features=["text_tokens"])
    assert len(res.X) == 8 and all(s is not None for s in res.positioned_latencies)
    assert (
        main(
            [
                "train",
                "--results_dir",
                str(out),
                "--features",
                "text_tokens",
                "--output_dir",
                str(tmp_path / "model"),
                "--num_epochs",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert "positioned_mape_pct" in metrics["train"]


def test_grid_order_is_seeded_and_shuffled(llama, tmp_path, monkeypatch):
    seen = []
    real = profile_mod._time_request

    def spy(torch, model, ids, n_steps, *args):
        if n_steps != profile_mod._WARMUP_STEPS:
            seen.append((ids["input_ids"].shape[1], n_steps))
        return real(torch, model, ids, n_steps, *args)

    monkeypatch.setattr(profile_mod, "_time_request", spy)
    orders = []
    for seed in (0, 0, 1):
        seen.clear()
        _profile(llama, tmp_path / f"r{len(orders)}", seed=seed, repeats=3)
        orders.append(list(seen))
    assert orders[0] == orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(orders[2])
    assert orders[0] != sorted(orders[0])


def test_rerun_resumes_and_interruption_keeps_rows(llama, tmp_path, monkeypatch):
    real = profile_mod._time_request
    calls = {"n": 0}

    def interrupted(torch, model, ids, n_steps, *args):
        if n_steps != profile_mod._WARMUP_STEPS:
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
        return real(torch, model, ids, n_steps, *args)

    monkeypatch.setattr(profile_mod, "_time_request", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _profile(llama, tmp_path)
    path = tmp_path / "tiny-llama_sdpa_float32" / "requests.csv"
    first = pd.read_csv(path)
    assert len(first) == 3
    # A row cut short by a killed process is dropped, not parsed.
    with open(path, "a") as f:
        f.write("0,16,5,1.0")
    monkeypatch.setattr(profile_mod, "_time_request", real)
    _profile(llama, tmp_path)
    full = pd.read_csv(path)
    assert len(full) == 8
    pd.testing.assert_frame_equal(full.iloc[:3], first)
    assert not full[["text_tokens", "output_tokens", "repeat"]].duplicated().any()
    assert full["run_id"].nunique() == 2
    # Nothing is left to measure: a third run adds nothing.
    _profile(llama, tmp_path)
    assert len(pd.read_csv(path)) == 8


def test_a_file_of_another_setup_is_refused(profiled, llama):
    out, _ = profiled
    with pytest.raises(
        ValueError,
        match=r"holds requests measured with "
        r"dtype=\['float32'\], not 'bfloat16'",
    ):
        _profile(
            llama,
            out,
            attn_implementation="eager",
            dtype="bfloat16",
            dataset="tiny-llama_eager_float32",
        )
    with pytest.raises(ValueError, match="has the columns .* but this grid writes"):
        _profile(
            llama,
            out,
            attn_implementation="eager",
            num_active_blocks=[1],
            dataset="tiny-llama_eager_float32",
        )


def test_moe_knobs_are_swept(mixtral, tmp_path):
    path = _profile(
        mixtral,
        tmp_path,
        top_k=[1, 2],
        num_active_blocks=[1, 2],
        repeats=1,
        prompt_tokens=[4],
        output_tokens=[3],
    )
    frame = pd.read_csv(path)
    assert sorted(zip(frame["top_k"], frame["num_active_blocks"])) == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    res = load_results(tmp_path, features=["text_tokens", "top_k", "num_active_blocks"])
    assert len(res.X) == 4


def test_variants_change_the_model(mixtral):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(mixtral))
    variants = profile_mod._Variants(model, True, True)
    assert variants.routers
    variants.set(1, 1)
    assert len(model.base_model.layers) == 1 and model.config.num_hidden_layers == 1
    assert {m.top_k for m in variants.routers} == {1}
    variants.set(2, 2)
    assert len(model.base_model.layers) == 2
    assert {m.top_k for m in variants.routers} == {2}


@pytest.fixture
def no_timing(monkeypatch):
    def fail(*args):
        raise AssertionError("timing started")

    monkeypatch.setattr(profile_mod, "_time_request", fail)


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            {"output_tokens": [0, 5]},
            r"output_tokens must be a non-empty list of integers "
            r">= 1; got \[0, 5\]",
        ),
        ({"prompt_tokens": []}, "prompt_tokens must be a non-empty list"),
        ({"prompt_tokens": [2.5]}, "prompt_tokens must be a non-empty list of integers"),
        ({"repeats": 0}, "repeats must be an integer >= 1; got 0"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"threads": 0}, "threads must be None or an integer >= 1"),
        (
            {"attn_implementation": "flash"},
            r"attn_implementation must be one of \('eager', "
            r"'sdpa'\); got 'flash'",
        ),
        ({"dtype": "int8"}, "dtype must be one of"),
        (
            {"prompt_tokens": [60], "output_tokens": [5]},
            r"the longest request needs 65 positions \(prompt 60 \+ 5 decode steps\) but .* "
            r"has max_position_embeddings=64",
        ),
        ({"top_k": [1]}, "top_k was given but .* is not a mixture-of-experts model"),
        (
            {"num_active_blocks": [3]},
            "num_active_blocks must be <= the model's 2 decoder layers; got 3",
        ),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda'"),
        ({"batch_sizes": [0, 2]}, r"batch_sizes must be a non-empty list of integers >= 1"),
        ({"batch_sizes": ["x"]}, r"batch_sizes must be integers >= 1"),
        ({"batch_sizes": [2, 2]}, r"batch_sizes lists 2 twice; got \[2, 2\]"),
        ({"output_tokens": [16, 64, 16]}, r"output_tokens lists 16 twice"),
    ],
)
def test_bad_arguments_are_refused_before_timing(llama, tmp_path, no_timing, kw, message):
    with pytest.raises(ValueError, match=message):
        _profile(llama, tmp_path, **kw)
    assert not any(tmp_path.iterdir())


def test_a_sweep_the_model_cannot_do_is_refused(llama, tmp_path, no_timing, monkeypatch):
    # A model class whose decoder keeps its layers under another name.
    real = profile_mod._Variants.__init__

    def renamed(self, model, *args):
        model.base_model.blocks = model.base_model.layers
        del model.base_model.layers
        real(self, model, *args)

    monkeypatch.setattr(profile_mod._Variants, "__init__", renamed)
    with pytest.raises(
        ValueError,
        match="cannot set num_active_blocks on LlamaForCausalLM: its decoder has no list",
    ):
        _profile(llama, tmp_path, num_active_blocks=[1])
    assert not any(tmp_path.rglob("*.csv"))


def test_top_k_beyond_the_experts(mixtral, tmp_path, no_timing):
    with pytest.raises(ValueError, match="top_k must be <= the model's 4 experts; got 5"):
        _profile(mixtral, tmp_path, top_k=[5])


def test_unreadable_model(tmp_path, no_timing):
    with pytest.raises(ValueError, match="cannot read a transformers configuration from"):
        _profile(tmp_path / "nothing-here", tmp_path)


def test_missing_transformers_names_the_extra(llama, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'sklat\[profile\]'"):
        _profile(llama, tmp_path)


def test_cli_profile_then_train_then_predict(llama, tmp_path, capsys):
    out = tmp_path / "results"
    assert (
        main(
            [
                "profile",
                "--model",
                str(llama),
                "--random_weights",
                "--prompt_tokens",
                "4,16",
                "--output_tokens",
                "2,6",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--output_dir",
                str(out),
                "--dataset",
                "mine",
                "--warmup",
                "0",
                "--threads",
                "1",
                "-q",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out / "mine" / "requests.csv")) == 4
    assert (
        main(
            [
                "train",
                "--results_dir",
                str(out),
                "--features",
                "text_tokens",
                "--output_dir",
                str(tmp_path / "model"),
                "--num_epochs",
                "2",
                "-q",
            ]
        )
        == 0
    )
    pd.DataFrame({"text_tokens": [8, 32]}).to_csv(tmp_path / "configs.csv", index=False)
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "model"),
                str(tmp_path / "configs.csv"),
                "--output_tokens",
                "6",
            ]
        )
        == 0
    )
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(printed) == 2 and (printed["T_LLM_decode_ms"] > 0).all()


def test_cli_reports_errors_and_interruptions(llama, tmp_path, capsys, monkeypatch):
    assert (
        main(
            [
                "profile",
                "--model",
                str(llama),
                "--random_weights",
                "--output_tokens",
                "0",
                "--output_dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "output_tokens must be a non-empty list" in capsys.readouterr().err

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sklat._cli.profile, "profile_model", interrupt)
    assert main(["profile", "--model", str(llama), "--output_dir", str(tmp_path)]) == 130
    assert "run the same command again" in capsys.readouterr().err


def test_default_features_missing_suggests_features(profiled, tmp_path, capsys):
    out, _ = profiled
    assert main(["train", "--results_dir", str(out), "--output_dir", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['tier_idx', 'top_k', 'num_active_blocks']" in err
    assert "--features" in err and "['vision_tokens', 'text_tokens']" in err


@pytest.mark.parametrize(
    "model, expected",
    [
        ("path/to/tiny-llama", "tiny-llama_sdpa_float32"),
        ("path/to/tiny-llama/config.json", "tiny-llama_sdpa_float32"),
        ("my config.json", "my-config_sdpa_float32"),
        ("meta-llama/Llama-3.2-1B", "Llama-3.2-1B_sdpa_float32"),
    ],
)
def test_default_dataset_names(model, expected):
    assert profile_mod._default_dataset(model, "sdpa", "float32") == expected


def test_batch_sizes_are_swept_and_recorded_as_loads(llama, tmp_path, monkeypatch):
    widths = []
    real = profile_mod._time_request

    def spy(torch, model, ids, n_steps, *args):
        if n_steps != profile_mod._WARMUP_STEPS:
            widths.append(ids["input_ids"].shape[0])
        return real(torch, model, ids, n_steps, *args)

    monkeypatch.setattr(profile_mod, "_time_request", spy)
    path = _profile(llama, tmp_path, batch_sizes=[1, 3], repeats=1)
    frame = pd.read_csv(path)
    # One row per batch measured: 2 prompts x 2 lengths x 2 batch sizes.
    assert len(frame) == 8 and sorted(widths) == [1] * 4 + [3] * 4
    assert sorted(frame["concurrency"].value_counts().items()) == [(1, 4), (3, 4)]
    # Sent together: every request of a batch met the whole batch in flight
    # and waiting for its first token.
    for column in ("in_flight_at_start", "waiting_at_start"):
        assert (frame[column] == frame["concurrency"]).all()
    for steps, n in zip(_steps(frame), frame["output_tokens"]):
        assert len(steps) == n and (steps > 0).all()
    # Resumed by batch size: a new size measures only its own rows.
    widths.clear()
    frame = pd.read_csv(_profile(llama, tmp_path, batch_sizes=[1, 2, 3], repeats=1))
    assert len(frame) == 12 and widths == [2] * 4
    res = load_results(tmp_path, features=["text_tokens", "concurrency"])
    assert sorted(set(res.X["concurrency"])) == [1, 2, 3]


def test_batch_sizes_with_images_are_refused(llama, tmp_path, no_timing):
    with pytest.raises(ValueError, match="batch_sizes applies to text requests"):
        _profile(llama, tmp_path, batch_sizes=[2], image_sizes=["224x224"])
