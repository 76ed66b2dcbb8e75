"""Measure a transformers model into a results folder that ``sklat train`` reads.

:func:`profile_model` (and ``sklat profile``) times the prefill and every decode
step of greedy, KV-cached generation of a Hugging Face ``transformers`` causal
language model over a grid of prompt lengths, output lengths and, for
mixture-of-experts models, experts per token (``top_k``) and decoder layers run
(``num_active_blocks``). Each request becomes one row of the results format
(:mod:`sklat.io`), with its per-step latencies in ``T_decode_per_step``.

Measurement discipline:

- a request is the prompt forward (the prefill, which yields the first new token;
  ``T_prefill_total``) followed by exactly ``output_tokens`` decode steps, each
  one forward of the previous token through the KV cache and a greedy choice of
  the next (end-of-sequence tokens are ignored). Decode step ``p`` attends to
  ``prompt + p`` cached positions;
- each step is timed on its own with ``time.perf_counter_ns``; on CUDA the
  device is synchronised before the clock is read, so a step's time is its
  whole latency, kernel launches included;
- warm-up requests run before any timing, for every (``top_k``,
  ``num_active_blocks``) setting; Python's garbage collector runs before a
  request and is paused during it;
- the grid is visited in a seeded random order, so that drift of the machine
  (thermal, a neighbour's load) does not line up with one configuration;
- rows are appended to ``<output_dir>/<dataset>/requests.csv`` as requests
  finish: an interrupted run keeps its completed rows, and running the same
  command again measures only what is missing.

``transformers`` comes with the ``profile`` extra: ``pip install 'sklat[profile]'``.
Random weights (``random_weights=True``) build the model from its configuration
only, without downloading weights: timings depend on the shapes, not the values.

The results file's columns and writing are :mod:`sklat._results`'s, shared
with the endpoint profiler and :mod:`sklat.io`.
"""

import gc
import inspect
import itertools
import json
import os
import platform
import time
import uuid
from pathlib import Path

import numpy as np

from .._constants import AVG_COL, DECODE_COL, OUTPUT_TOKENS_COL, PER_STEP_COL, PREFILL_COL
from .._results import (
    PROFILE_COLUMNS,
    RESULTS_FILE,
    append_csv_row,
    check_lengths,
    progress_bar,
    read_done,
    safe_name,
)
from .._version import __version__
from ._vision import (
    MARKERS,
    check_model,
    image_processor,
    parse_sizes,
    request_inputs,
    vision_tokens,
)

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
DTYPES = ("float32", "bfloat16", "float16")
_WARMUP_STEPS = 8


def _check_arguments(
    prompt_tokens,
    output_tokens,
    repeats,
    top_k,
    num_active_blocks,
    dtype,
    attn_implementation,
    warmup,
    threads,
    image_sizes=None,
    batch_sizes=None,
):
    lists = {
        "prompt_tokens": check_lengths(prompt_tokens, "prompt_tokens"),
        "output_tokens": check_lengths(output_tokens, "output_tokens"),
        "top_k": None if top_k is None else check_lengths(top_k, "top_k"),
        "num_active_blocks": (
            None
            if num_active_blocks is None
            else check_lengths(num_active_blocks, "num_active_blocks")
        ),
        "image_sizes": None if image_sizes is None else parse_sizes(image_sizes),
        "batch_sizes": None if batch_sizes is None else check_lengths(batch_sizes, "batch_sizes"),
    }
    if lists["batch_sizes"] is not None and lists["image_sizes"] is not None:
        raise ValueError(
            "batch_sizes applies to text requests; profile image_sizes one request at a time."
        )
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None or an integer >= 1; got {threads!r}.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}.")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}; "
            f"got {attn_implementation!r}."
        )
    return lists


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "sklat profile needs the transformers package: pip install 'sklat[profile]'"
        ) from None
    return transformers


def _load_config(transformers, model):
    try:
        return transformers.AutoConfig.from_pretrained(os.fspath(model))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot read a transformers configuration from {model!r}: {exc}"
        ) from None


def _n_experts(config):
    for name in ("num_local_experts", "num_experts", "n_routed_experts"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _text_config(config):
    """The language model's configuration (a vision-language model nests it)."""
    return getattr(config, "text_config", None) or config


def _check_against_config(config, model, lists, vision=0):
    """Refuse a grid the model cannot run, before anything is timed. ``vision``:
    the most vision tokens of a request."""
    longest = max(lists["prompt_tokens"]) + vision + max(lists["output_tokens"])
    config = _text_config(config)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and longest > limit:
        image = f" + {vision} vision tokens" if vision else ""
        raise ValueError(
            f"the longest request needs {longest} positions (prompt "
            f"{max(lists['prompt_tokens'])}{image} + {max(lists['output_tokens'])} decode "
            f"steps) but {model!r} has max_position_embeddings={limit}."
        )
    if lists["top_k"] is not None:
        experts = _n_experts(config)
        if getattr(config, "num_experts_per_tok", None) is None or experts is None:
            raise ValueError(
                f"top_k was given but {model!r} is not a mixture-of-experts model "
                "(its configuration has no num_experts_per_tok / number of experts)."
            )
        if max(lists["top_k"]) > experts:
            raise ValueError(
                f"top_k must be <= the model's {experts} experts; got {max(lists['top_k'])}."
            )
    if lists["num_active_blocks"] is not None:
        layers = config.num_hidden_layers
        if max(lists["num_active_blocks"]) > layers:
            raise ValueError(
                f"num_active_blocks must be <= the model's {layers} decoder layers; "
                f"got {max(lists['num_active_blocks'])}."
            )


def _load_model(transformers, torch, model, config, setup, vlm=False):
    """The model, built as ``setup`` (the run's recorded settings) says."""
    torch_dtype = getattr(torch, setup["dtype"])
    auto = transformers.AutoModelForImageTextToText if vlm else transformers.AutoModelForCausalLM
    # transformers >= 4.56 calls the argument dtype, older releases torch_dtype.
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    kwargs = {"attn_implementation": setup["attn_implementation"], dtype_kw: torch_dtype}
    try:
        if setup["random_weights"]:
            torch.manual_seed(setup["seed"])
            return auto.from_config(config, **kwargs)
        return auto.from_pretrained(os.fspath(model), **kwargs)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot build {model!r}: {exc}") from None


class _Variants:
    """Switches a loaded model between experts per token and layer counts; refuses,
    before anything is timed, a sweep the model cannot do."""

    def __init__(self, model, sweep_top_k, sweep_blocks):
        self.model = model
        config = _text_config(model.config)
        base_top_k = getattr(config, "num_experts_per_tok", None)
        self.routers = [
            m
            for _, m in model.named_modules()
            if isinstance(getattr(m, "top_k", None), int) and m.top_k == base_top_k
        ]
        if sweep_top_k and not self.routers:
            raise ValueError(
                f"cannot set top_k on {type(model).__name__}: none of its modules has a "
                "top_k attribute to change."
            )
        self.layer_types = getattr(config, "layer_types", None)
        # A vision-language model's decoder layers are its language model's.
        self.decoder = getattr(model.base_model, "language_model", model.base_model)
        self.all_layers = getattr(self.decoder, "layers", None)
        if sweep_blocks and not hasattr(self.all_layers, "__getitem__"):
            raise ValueError(
                f"cannot set num_active_blocks on {type(model).__name__}: its decoder "
                "has no list of layers named 'layers'."
            )

    def set(self, top_k, num_active_blocks):
        from torch import nn

        config = _text_config(self.model.config)
        if top_k is not None:
            for module in self.routers:
                module.top_k = top_k
            config.num_experts_per_tok = top_k
        if num_active_blocks is not None:
            self.decoder.layers = nn.ModuleList(list(self.all_layers)[:num_active_blocks])
            config.num_hidden_layers = num_active_blocks
            if isinstance(self.layer_types, list):
                config.layer_types = self.layer_types[:num_active_blocks]


def _forward_keywords(model):
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    extra = {}
    # Only the last position's logits, as a serving engine computes them.
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            extra[name] = 1
            break
    return cache_kw, extra


def _cache_of(output):
    for name in ("cache", "past_key_values"):
        if name in output:
            return output[name]
    raise ValueError("the model returned no KV cache; it cannot be profiled step by step.")


def _time_request(torch, model, inputs, n_steps, sync, cache_kw, extra):
    """``(prefill_ms, per_step_ms)`` of one greedy request; ``inputs`` are the
    prefill's (``input_ids``, and the image's for a vision-language model)."""
    gc.collect()
    gc_enabled = gc.isenabled()
    gc.disable()
    clock = time.perf_counter_ns
    steps = np.empty(n_steps, dtype=np.int64)
    try:
        with torch.inference_mode():
            sync()
            start = clock()
            out = model(**inputs, use_cache=True, **extra)
            token = out.logits[:, -1:].argmax(-1)
            sync()
            prefill = clock() - start
            cache = _cache_of(out)
            for p in range(n_steps):
                start = clock()
                out = model(input_ids=token, use_cache=True, **{cache_kw: cache}, **extra)
                token = out.logits[:, -1:].argmax(-1)
                sync()
                steps[p] = clock() - start
                cache = _cache_of(out)
    finally:
        if gc_enabled:
            gc.enable()
    return prefill / 1e6, steps / 1e6


def _device_name(torch, device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs)"


def _default_dataset(model, attn_implementation, dtype):
    path = Path(os.fspath(model).rstrip("/"))
    # A model folder or hub name by its last part; a config.json by its folder.
    stem = path.parent.name if path.name == "config.json" else path.name
    stem = stem[: -len(".json")] if stem.endswith(".json") else stem
    return safe_name(f"{stem}_{attn_implementation}_{dtype}")


def profile_model(
    model,
    output_dir,
    *,
    prompt_tokens=(64, 256, 1024),
    output_tokens=(16, 128, 512),
    repeats=3,
    top_k=None,
    num_active_blocks=None,
    random_weights=False,
    device="auto",
    dtype="float32",
    attn_implementation="sdpa",
    dataset=None,
    seed=0,
    warmup=2,
    threads=None,
    progress=True,
    image_sizes=None,
    batch_sizes=None,
):
    """Time prefill and every decode step of a transformers model into a results folder.

    Every combination of ``prompt_tokens`` x ``output_tokens`` (x ``top_k`` x
    ``num_active_blocks`` where given) is measured ``repeats`` times, in a
    seeded random order; see :mod:`sklat.acquire._model` for how.

    Parameters
    ----------
    model : str or path-like
        A local directory holding a transformers ``config.json`` (with or
        without weights), the path of such a ``config.json``, or a Hugging Face
        hub name.
    output_dir : str or path-like
        Results folder; rows go to ``<output_dir>/<dataset>/requests.csv``.
    prompt_tokens : sequence of int, default=(64, 256, 1024)
        Prompt lengths (random token ids, seeded).
    output_tokens : sequence of int, default=(16, 128, 512)
        Decode steps per request.
    repeats : int, default=3
        Measurements of each grid point.
    top_k : sequence of int, default=None
        Experts per token to sweep (mixture-of-experts models only).
    num_active_blocks : sequence of int, default=None
        Numbers of decoder layers to run (the first ones), swept.
    random_weights : bool, default=False
        Build the model from its configuration with seeded random weights
        instead of loading weights.
    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        Weights and activations.
    attn_implementation : {"eager", "sdpa"}, default="sdpa"
        The transformers attention implementation.
    dataset : str, default=None
        Dataset (sub-folder) name; default ``<model>_<attn>_<dtype>``.
    seed : int, default=0
        Seeds the random weights, the prompts and the order of the grid.
    warmup : int, default=2
        Untimed warm-up requests per (``top_k``, ``num_active_blocks``) setting.
    threads : int, default=None
        torch's CPU threads while profiling (restored afterwards); ``None``
        keeps torch's setting.
    progress : bool, default=True
        Show a progress bar on standard error.
    image_sizes : sequence of str or (width, height), default=None
        For a vision-language model (the Qwen2-VL family): one image of each
        size per request (``"448x448"``, width x height), swept as tiers.
        ``tier_idx`` is the size's rank (by area), ``vision_tokens`` the
        tokens the model's image processor produced for it, ``text_tokens``
        every other prompt token, and the prefill includes the vision encoder.
    batch_sizes : sequence of int, default=None
        Requests generated together in one batch, swept (text only): each
        measurement is a batch of that many requests of the grid point's
        lengths (prompts drawn apart), whose every step is timed for the
        batch. Its row records the batch size as ``concurrency``, the number of
        requests in flight over the whole decode, and as ``in_flight_at_start``
        and ``waiting_at_start``, the requests in flight and waiting for their
        first token when it was sent (all of the batch, itself included): the
        load columns that ``sklat profile --endpoint`` measures on an engine.

    Returns
    -------
    path : pathlib.Path
        The results file.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import LlamaConfig
    >>> from sklat.acquire import profile_model
    >>> from sklat.io import load_results
    >>> tmp = tempfile.mkdtemp()
    >>> LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...             num_attention_heads=2, num_key_value_heads=2, vocab_size=64,
    ...             max_position_embeddings=128).save_pretrained(tmp + "/tiny")
    >>> path = profile_model(tmp + "/tiny", tmp + "/results", random_weights=True,
    ...                      prompt_tokens=[4, 16], output_tokens=[2, 8], repeats=1,
    ...                      device="cpu", progress=False)
    >>> res = load_results(tmp + "/results", features=["text_tokens"])
    >>> len(res.X), sorted(set(res.output_tokens.tolist()))
    (4, [2, 8])
    """
    # torch and transformers load only when a model is profiled: importing
    # sklat.acquire (and the endpoint profiler) stays free of them.
    import torch

    from .._device import resolve_device
    from .._threads import torch_threads

    lists = _check_arguments(
        prompt_tokens,
        output_tokens,
        repeats,
        top_k,
        num_active_blocks,
        dtype,
        attn_implementation,
        warmup,
        threads,
        image_sizes,
        batch_sizes,
    )
    device = resolve_device(device)
    transformers = _import_transformers()
    config = _load_config(transformers, model)
    images = _images(transformers, config, model, lists)
    vision = max((image[2] for image in images.values()), default=0)
    _check_against_config(config, model, lists, vision)
    dataset = dataset or _default_dataset(model, attn_implementation, dtype)
    path = Path(output_dir) / dataset / RESULTS_FILE
    setup = {
        "model": os.fspath(model),
        "random_weights": bool(random_weights),
        "device": device,
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "seed": seed,
    }
    columns = _columns(lists)
    done = read_done(path, setup, columns)
    jobs = _pending_jobs(lists, repeats, len(images), seed, done)
    if not jobs:
        return path

    with torch_threads(threads):
        net = _load_model(transformers, torch, model, config, setup, vlm=bool(images))
        net.to(device).eval()
        grid = _Grid(path, setup, columns, lists, list(images.values()), warmup)
        _run_grid(torch, transformers, net, jobs, grid, progress)
    return path


def _pending_jobs(lists, repeats, n_images, seed, done):
    """The grid's requests not yet in the results file (``done``), in a
    seeded order drawn over the whole grid, so that a resumed run keeps it."""
    grid = list(
        itertools.product(
            lists["top_k"] or [None],
            lists["num_active_blocks"] or [None],
            lists["prompt_tokens"],
            lists["output_tokens"],
            range(repeats),
            range(n_images) if n_images else [None],
            lists["batch_sizes"] or [None],
        )
    )
    order = np.random.RandomState(seed).permutation(len(grid))
    # Keys in the order of KEY_COLUMNS.
    return [
        grid[i]
        for i in order
        if (grid[i][2], grid[i][3], grid[i][0], grid[i][1], grid[i][4], grid[i][5], grid[i][6])
        not in done
    ]


def _images(transformers, config, model, lists):
    """``{(width, height): (pixel_values, grid, vision tokens)}`` of the image
    sizes, in tier order (empty for a text model); checked before timing."""

    if lists["image_sizes"] is None:
        return {}
    check_model(config, model)
    if min(lists["prompt_tokens"]) <= MARKERS:
        raise ValueError(
            f"prompt_tokens must be > {MARKERS} with image_sizes: the image's "
            f"{MARKERS} vision markers count as text tokens."
        )
    processor = image_processor(transformers, model, config)
    return {size: vision_tokens(processor, config, size) for size in lists["image_sizes"]}


class _Grid:
    """What a profiling run writes and how: the results file, its columns,
    the recorded settings (``setup``), the swept lists, the images of the
    tiers and the warm-up requests per setting."""

    def __init__(self, path, setup, columns, lists, images, warmup):
        self.path, self.setup, self.columns = path, setup, columns
        self.lists, self.images, self.warmup = lists, images, warmup


def _run_grid(torch, transformers, net, jobs, grid, progress):
    lists, images, device = grid.lists, grid.images, grid.setup["device"]
    variants = _Variants(net, lists["top_k"] is not None, lists["num_active_blocks"] is not None)
    forward = _forward_keywords(net)
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    vocab = _text_config(net.config).vocab_size
    if images:
        # Text ids below the model's special (vision) ids.
        vocab = min(vocab, net.config.vision_start_token_id, net.config.image_token_id)
    descriptive = _descriptive(torch, transformers, grid.setup)
    warmed = set()
    grid.path.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(len(jobs), progress) as bar:
        for top_k, blocks, prompt, n_steps, repeat, tier, batch in jobs:
            variants.set(top_k, blocks)
            if (top_k, blocks) not in warmed:
                warm = _warm_up_inputs(torch, net, lists, images, device)
                for _ in range(grid.warmup):
                    _time_request(torch, net, warm, _WARMUP_STEPS, sync, *forward)
                warmed.add((top_k, blocks))
            job = (prompt, n_steps, top_k, blocks, repeat, tier, batch)
            inputs, row = _request(torch, net, job, grid.setup["seed"], vocab, images, device)
            if tier is not None:
                descriptive["image_size"] = "x".join(map(str, lists["image_sizes"][tier]))
            prefill, steps = _time_request(torch, net, inputs, n_steps, sync, *forward)
            if top_k is not None:
                row["top_k"] = top_k
            if blocks is not None:
                row["num_active_blocks"] = blocks
            _append_row(grid.path, grid.columns, row, prefill, steps, repeat, descriptive)
            bar.update(1)


def _descriptive(torch, transformers, setup):
    """The run's settings and provenance, recorded on every row."""
    return {
        **setup,
        "device_name": _device_name(torch, setup["device"]),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "sklat_version": __version__,
        "python_version": platform.python_version(),
        "run_id": time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
    }


def _warm_up_inputs(torch, net, lists, images, device):
    """An untimed request as short as the grid's shortest prompt."""
    # As wide as the widest batch: kernels of that shape warm up too.
    width = max(lists.get("batch_sizes") or [1])
    short = torch.zeros((width, min(lists["prompt_tokens"])), dtype=torch.long)
    if images:
        return request_inputs(torch, net.config, images[0], short[:, MARKERS:], device)
    return {"input_ids": short.to(device)}


def _request(torch, net, job, seed, vocab, images, device):
    """``(inputs, row)`` of one grid request ``(prompt, n_steps, top_k,
    blocks, repeat, tier, batch)``: prompt ids drawn from the request's own
    seed, so the same request gets the same prompt in every run; a batch
    holds ``batch`` such prompts, one per row."""
    prompt, n_steps, top_k, blocks, repeat, tier, batch = job
    key = [seed, prompt, n_steps, top_k or 0, blocks or 0, repeat]
    if batch is not None:
        key.append(batch)
    rng = np.random.RandomState(key + ([] if tier is None else [tier]))
    row = {"vision_tokens": 0, "text_tokens": prompt}
    if batch is not None:
        # The batch's requests are sent together: each meets all of them in
        # flight and waiting for a first token, itself included (the counts
        # a router sees, as ``sklat profile --endpoint`` records them).
        row["concurrency"] = batch
        row["in_flight_at_start"] = batch
        row["waiting_at_start"] = batch
    if tier is None:
        ids = torch.from_numpy(rng.randint(0, vocab, (batch or 1, prompt)))
        return {"input_ids": ids.to(device)}, row
    ids = torch.from_numpy(rng.randint(0, vocab, (1, prompt - MARKERS)))
    row["vision_tokens"] = images[tier][2]
    row["tier_idx"] = tier
    return request_inputs(torch, net.config, images[tier], ids, device), row


def _columns(lists):
    """The columns of a results file, in order, for this grid."""
    features = ["vision_tokens", "text_tokens"]
    features += [name for name in ("top_k", "num_active_blocks") if lists[name] is not None]
    if lists.get("batch_sizes") is not None:
        features += ["concurrency", "in_flight_at_start", "waiting_at_start"]
    vision = lists.get("image_sizes") is not None
    return (
        features
        + (["tier_idx"] if vision else [])
        + [OUTPUT_TOKENS_COL, PREFILL_COL, DECODE_COL, AVG_COL, PER_STEP_COL]
        + list(PROFILE_COLUMNS)
        + (["image_size"] if vision else [])
    )


def _append_row(path, columns, features, prefill, steps, repeat, descriptive):
    steps = np.round(steps, 6)
    total = float(steps.sum())
    row = {
        **features,
        OUTPUT_TOKENS_COL: len(steps),
        PREFILL_COL: round(prefill, 6),
        DECODE_COL: total,
        AVG_COL: total / len(steps),
        PER_STEP_COL: json.dumps(steps.tolist()),
        "repeat": repeat,
        **descriptive,
    }
    append_csv_row(path, columns, row, float_format="%.6f")
