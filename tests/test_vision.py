"""sklat profile --image_sizes: vision-language models across image tiers."""

import numpy as np
import pandas as pd
import pytest

from sklat.cli import main
from sklat.io import load_results
from sklat.profile import profile_model

pytest.importorskip("transformers")


# What the two tiny models share: a 512-token vocabulary whose last four ids are
# the vision tokens, and the sizes of the language model.
TEXT = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    eos_token_id=2,
)
VISION_TOKENS = dict(
    image_token_id=510, video_token_id=511, vision_start_token_id=508, vision_end_token_id=509
)


def _qwen3_vl_moe(folder):
    from transformers import Qwen3VLMoeConfig

    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    Qwen3VLMoeConfig(
        text_config=dict(
            TEXT,
            moe_intermediate_size=64,
            num_hidden_layers=4,
            head_dim=16,
            num_experts=4,
            num_experts_per_tok=2,
            rope_scaling=rope,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            out_hidden_size=64,
            deepstack_visual_indexes=[1],
            num_position_embeddings=64,
        ),
        **VISION_TOKENS,
    ).save_pretrained(folder)
    return folder


def _qwen2_vl(folder):
    from transformers import Qwen2VLConfig

    Qwen2VLConfig(
        text_config=dict(
            TEXT, num_hidden_layers=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}
        ),
        vision_config=dict(depth=2, embed_dim=64, hidden_size=64, num_heads=4, mlp_ratio=2),
        **VISION_TOKENS,
    ).save_pretrained(folder)
    return folder


def test_tiers_record_the_processors_vision_tokens_and_all_five_features(tmp_path):
    model = _qwen3_vl_moe(tmp_path / "vlm")
    path = profile_model(
        model,
        tmp_path / "results",
        random_weights=True,
        image_sizes=["128x128", "64x64"],
        top_k=[1, 2],
        num_active_blocks=[2, 4],
        prompt_tokens=[8],
        output_tokens=[3],
        repeats=1,
        device="cpu",
        progress=False,
    )
    frame = pd.read_csv(path)
    assert len(frame) == 8
    # Patch 16, merge 2: (64 / 16)^2 / 4 = 4 and (128 / 16)^2 / 4 = 16 vision tokens,
    # tiers by area.
    sizes = dict(zip(frame["tier_idx"], zip(frame["vision_tokens"], frame["image_size"])))
    assert sizes == {0: (4, "64x64"), 1: (16, "128x128")}
    assert (frame["text_tokens"] == 8).all()
    features = ["vision_tokens", "text_tokens", "tier_idx", "top_k", "num_active_blocks"]
    res = load_results(tmp_path / "results", features=features)
    assert [len(s) for s in res.positioned_latencies] == [3] * 8
    assert (frame["T_prefill_total"] > 0).all()


def test_qwen2_vl_and_resume(tmp_path):
    model = _qwen2_vl(tmp_path / "vl")
    kwargs = dict(
        random_weights=True,
        image_sizes=[(56, 56), "112x56"],
        prompt_tokens=[6, 12],
        output_tokens=[2],
        repeats=1,
        device="cpu",
        progress=False,
    )
    path = profile_model(model, tmp_path / "r", **kwargs)
    first = path.read_text()
    frame = pd.read_csv(path)
    # Patch 14, merge 2: 56x56 -> 4 tokens, 112x56 -> 8 tokens.
    assert sorted(set(zip(frame["tier_idx"], frame["vision_tokens"]))) == [(0, 4), (1, 8)]
    assert profile_model(model, tmp_path / "r", **kwargs).read_text() == first


def test_vision_arguments_are_refused_before_timing(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=64,
        max_position_embeddings=128,
    ).save_pretrained(tmp_path / "llama")
    common = dict(random_weights=True, prompt_tokens=[8], output_tokens=[2], device="cpu")
    with pytest.raises(ValueError, match=r"needs a Qwen2-VL-style .*'llama'"):
        profile_model(tmp_path / "llama", tmp_path / "r", image_sizes=["64x64"], **common)
    vl = _qwen2_vl(tmp_path / "vl")
    with pytest.raises(ValueError, match=r"image size '64by64': expected WIDTHxHEIGHT"):
        profile_model(vl, tmp_path / "r", image_sizes=["64by64"], **common)
    with pytest.raises(ValueError, match=r"image size 20x64: each side must be >= 28"):
        profile_model(vl, tmp_path / "r", image_sizes=["20x64"], **common)
    with pytest.raises(ValueError, match=r"prompt_tokens must be > 2 with image_sizes"):
        profile_model(vl, tmp_path / "r", image_sizes=["56x56"], **{**common, "prompt_tokens": [2]})
    with pytest.raises(
        ValueError,
        match=r"needs \d+ positions \(prompt 8 \+ \d+ vision tokens \+ 2 decode steps\) "
        r"but .* max_position_embeddings=512",
    ):
        # 1536x1036 pixels: far more vision tokens than the 512 positions.
        profile_model(vl, tmp_path / "r", image_sizes=["1536x1036"], **common)
    assert not (tmp_path / "r").exists()


def test_command_line_vision_sweep_then_train(tmp_path):
    model = _qwen2_vl(tmp_path / "vl")
    out = tmp_path / "results"
    args = ["profile", "--model", str(model), "--random_weights", "--image_sizes", "56x56,112x112"]
    args += ["--prompt_tokens", "6,24", "--output_tokens", "2,6", "--repeats", "2"]
    assert main(args + ["--device", "cpu", "--output_dir", str(out), "-q"]) == 0
    trained = tmp_path / "model"
    train = ["train", "--results_dir", str(out), "--use_all_datasets", "--output_dir"]
    train += [str(trained), "--features", "vision_tokens,text_tokens,tier_idx"]
    assert main(train + ["--num_epochs", "5", "--quiet"]) == 0
    assert (trained / "metrics.json").exists()
    res = load_results(out, features=["vision_tokens", "text_tokens", "tier_idx"])
    assert np.array_equal(np.unique(res.X["vision_tokens"]), [4, 16])
