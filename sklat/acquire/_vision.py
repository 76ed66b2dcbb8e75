"""Image inputs of a vision-language model for ``sklat profile --image_sizes``.

Supported: the Qwen2-VL family (``model_type`` ``qwen2_vl``, ``qwen2_5_vl``,
``qwen3_vl``, ``qwen3_vl_moe``). Its dynamic resolution turns an image of
``H x W`` pixels into ``(H / p) (W / p) / m^2`` vision tokens (``p`` the patch
size, ``m`` the spatial merge; after resizing to multiples of ``p m`` within
the processor's pixel bounds), so the number of vision tokens follows the image
size, as the tiers of a serving configuration do; a fixed-resolution model
(CLIP-based LLaVA) gives every tier the same tokens. The MoE member also takes
the ``top_k`` and ``num_active_blocks`` sweeps.

The image processor is the model folder's own (``preprocessor_config.json``),
or the family's default when the folder has none (a configuration with random
weights). Its Pillow backend needs no torchvision. The request's tokens are
``<|vision_start|>``, the image's vision tokens, ``<|vision_end|>`` and random
text ids: ``text_tokens`` counts every token that is not a vision token,
``vision_tokens`` the vision tokens the processor produced. The prefill is the
model's forward over all of them, the vision encoder included; the image's
preprocessing (resizing, patching) is done before the clock starts.
"""

import os
import re
from pathlib import Path

import numpy as np

VLM_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
# The vision markers around an image: counted as text tokens.
MARKERS = 2


def parse_sizes(values):
    """``["224x224", (448, 448)]`` -> sorted unique ``(width, height)``."""
    sizes = set()
    for value in values:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
            if not match:
                raise ValueError(f"image size {value!r}: expected WIDTHxHEIGHT, e.g. 448x448.")
            value = (int(match.group(1)), int(match.group(2)))
        width, height = (int(v) for v in value)
        if width < 28 or height < 28:
            raise ValueError(f"image size {width}x{height}: each side must be >= 28 pixels.")
        sizes.add((width, height))
    if not sizes:
        raise ValueError("image_sizes must name at least one size.")
    return sorted(sizes, key=lambda s: (s[0] * s[1], s))


def check_model(config, model):
    if getattr(config, "model_type", None) not in VLM_TYPES:
        raise ValueError(
            f"image_sizes needs a Qwen2-VL-style vision-language model (model_type "
            f"{' or '.join(VLM_TYPES)}); {model!r} is "
            f"{getattr(config, 'model_type', 'unknown')!r}."
        )


def image_processor(transformers, model, config):
    """The model folder's image processor, or the family's default one set to
    the vision tower's patch size and merge."""
    folder = Path(os.fspath(model))
    folder = folder.parent if folder.name == "config.json" else folder
    if (folder / "preprocessor_config.json").is_file():
        return transformers.AutoImageProcessor.from_pretrained(os.fspath(folder))
    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or getattr(
        transformers, "Qwen2VLImageProcessor"
    )
    vision = config.vision_config
    return cls(
        patch_size=vision.patch_size,
        merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size,
    )


def vision_tokens(processor, config, size):
    """``(pixel_values, image_grid_thw, n_vision_tokens)`` of a ``size`` image
    (random pixels: the timing depends on the shape only)."""
    width, height = size
    pixels = np.random.RandomState([width, height]).randint(0, 256, (height, width, 3))
    out = processor(images=[pixels.astype(np.uint8)], return_tensors="pt")
    merge = config.vision_config.spatial_merge_size
    return out["pixel_values"], out["image_grid_thw"], int(out["image_grid_thw"].prod()) // merge**2


def request_inputs(torch, config, image, text_ids, device):
    """The model's prefill inputs: markers around the image's vision tokens,
    then the text ids."""
    pixel_values, grid, n_vision = image
    ids = [config.vision_start_token_id] + [config.image_token_id] * n_vision
    ids = ids + [config.vision_end_token_id]
    input_ids = torch.cat([torch.tensor([ids]), text_ids.cpu()], dim=1)
    types = torch.zeros_like(input_ids)
    types[0, 1 : 1 + n_vision] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "mm_token_type_ids": types.to(device),
        "pixel_values": pixel_values.to(device),
        "image_grid_thw": grid.to(device),
    }
