"""The ``sklat`` command: train from a folder of profiling results, predict.

``sklat train`` reads a results folder (see :mod:`sklat.io`), holds out a
seeded validation split of the requests, trains a
:class:`~sklat.LatencyEstimator` and writes to ``--output_dir``:

- ``model.safetensors``: the model (load it with :func:`sklat.load`);
- ``metrics.json``: prefill / total-decode MAPE and MAE on the training and
  validation requests, positioned MAPE where per-step data exists, the
  command line and the versions used;
- ``latency_curves.png`` and ``total_decode.png`` (with ``sklat[plot]``).

``sklat predict`` loads a model and prints per-position latencies, totals and
prefill for the configurations of a CSV / JSONL / Parquet file.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"


def _add(parser, name, **kwargs):
    """An option under its underscore and its dashed spelling."""
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*names, dest=name, **kwargs)


def _csv_list(text):
    return [s.strip() for s in text.split(",") if s.strip()]


def _int_list(text):
    try:
        return [int(s) for s in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def _context_features(text):
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    return _csv_list(text)


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sklat",
        description="Learn per-position LLM decode latency from total decode "
                    "latencies, and predict with it.")
    parser.add_argument("--version", action="version", version=f"sklat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train", help="train a model from a folder of profiling results",
        description="Train a LatencyEstimator from a folder of profiling results and "
                    "write the model, metrics.json and plots to --output_dir. "
                    "Options also accept dashed spellings (--results-dir).")
    _add(train, "results_dir", type=Path, default=None,
         help="folder of results (<dataset>/*.csv|*.jsonl|*.parquet, or files at the "
              "top); default: the synthetic demo results shipped with sklat")
    which = train.add_mutually_exclusive_group()
    _add(which, "use_all_datasets", action="store_true",
         help="read every dataset of --results_dir")
    _add(which, "datasets", type=_csv_list, default=None,
         help="comma-separated dataset names to read")
    _add(train, "output_dir", type=Path, required=True,
         help="folder to write the model, metrics and plots to (created)")
    _add(train, "features", type=_csv_list, default=None,
         help="comma-separated feature columns (default: vision_tokens,text_tokens,"
              "tier_idx,top_k,num_active_blocks)")
    _add(train, "batch_size", type=int, default=64, help="requests per batch (64)")
    _add(train, "num_epochs", type=int, default=200,
         help="maximum epochs; training stops early on a held-out part (200)")
    _add(train, "lr", type=float, default=3e-3, help="learning rate (3e-3)")
    _add(train, "config_mlp_weight_decay", type=float, default=0.1,
         help="weight decay of the config encoder's MLP, which corrects a linear "
              "config model; raise it (e.g. 1.0) for a few hundred noisy requests, "
              "lower it for strongly interacting features (0.1)")
    _add(train, "context_features", type=_context_features, default="auto",
         help="comma-separated feature columns whose sum is the context length at the "
              "first decode step, so that a cost term grows with context + position; "
              "'auto': vision_tokens and text_tokens where present; 'none': no such "
              "term, the curve stays flat past the longest training request (auto)")
    _add(train, "n_cost_terms", type=int, default=3,
         help="positive power laws of the features summed in the flat cost, the "
              "context cost and the prefill (3)")
    _add(train, "device", choices=["auto", "cpu", "cuda"], default="auto",
         help="auto: CUDA if available, else CPU")
    _add(train, "seed", type=int, default=0,
         help="seed of the split, initialisation and shuffling (0)")
    _add(train, "prefill_weight", type=float, default=2.0, help="(2.0)")
    _add(train, "decode_total_weight", type=float, default=1.0, help="(1.0)")
    _add(train, "positioned_weight", type=float, default=0.5, help="(0.5)")
    _add(train, "loss", choices=["log", "relative", "mse"], default="log",
         help="error measure of every loss term (log)")
    _add(train, "val_fraction", type=float, default=0.2,
         help="fraction of requests held out for the validation metrics (0.2)")
    train.add_argument("--quiet", "-q", action="store_true",
                       help="no per-epoch progress")
    train.set_defaults(func=cmd_train)

    pred = sub.add_parser(
        "predict", help="predict latencies for configurations with a trained model",
        description="Print (or write) per-position decode latencies, total decode "
                    "latency and prefill for each configuration of CONFIGS.")
    _add(pred, "model", type=Path, required=True,
         help=f"a model file, or a train --output_dir holding {MODEL_FILE}")
    pred.add_argument("configs", type=Path,
                      help="CSV / JSONL / Parquet file with the model's feature "
                           "columns (and optionally output_tokens)")
    _add(pred, "positions", type=_int_list, default=[1, 5, 10, 20],
         help="comma-separated positions (1,5,10,20)")
    _add(pred, "output_tokens", type=int, default=None,
         help="output length for the totals; default: the file's output_tokens "
              "column, else the expectation over the training output lengths")
    _add(pred, "output", type=Path, default=None,
         help="write CSV here instead of printing it")
    _add(pred, "device", choices=["auto", "cpu", "cuda"], default="cpu")
    pred.set_defaults(func=cmd_predict)

    _add_profile_parser(sub)
    return parser


def _add_profile_parser(sub):
    from .profile import ATTN_IMPLEMENTATIONS, DTYPES

    prof = sub.add_parser(
        "profile", help="measure a transformers model into a results folder",
        description="Time the prefill and every decode step of greedy, KV-cached "
                    "generation of a transformers causal language model over a grid of "
                    "prompt and output lengths, and append one row per request to "
                    "OUTPUT_DIR/DATASET/requests.csv (the format sklat train reads). "
                    "Rerunning the same command resumes an interrupted run. Needs "
                    "pip install 'sklat[profile]'.")
    _add(prof, "model", required=True,
         help="a folder with a transformers config.json (weights optional), the path "
              "of a config.json, or a hub name")
    _add(prof, "random_weights", action="store_true",
         help="build the model from its configuration with seeded random weights "
              "(nothing downloaded but the configuration)")
    _add(prof, "prompt_tokens", type=_int_list, default=[64, 256, 1024],
         help="comma-separated prompt lengths (64,256,1024)")
    _add(prof, "output_tokens", type=_int_list, default=[16, 128, 512],
         help="comma-separated numbers of decode steps (16,128,512)")
    _add(prof, "repeats", type=int, default=3, help="measurements per grid point (3)")
    _add(prof, "top_k", type=_int_list, default=None,
         help="comma-separated experts per token to sweep (mixture-of-experts models)")
    _add(prof, "num_active_blocks", type=_int_list, default=None,
         help="comma-separated numbers of decoder layers to run, swept")
    _add(prof, "device", default="auto", help="auto, cpu, cuda or cuda:<index> (auto)")
    _add(prof, "dtype", choices=DTYPES, default="float32", help="(float32)")
    _add(prof, "attn_implementation", choices=ATTN_IMPLEMENTATIONS, default="sdpa",
         help="transformers attention implementation (sdpa)")
    _add(prof, "output_dir", type=Path, required=True, help="results folder (created)")
    _add(prof, "dataset", default=None,
         help="dataset sub-folder name (default: <model>_<attn>_<dtype>)")
    _add(prof, "seed", type=int, default=0,
         help="seed of the random weights, the prompts and the order of the grid (0)")
    _add(prof, "warmup", type=int, default=2,
         help="untimed warm-up requests per top_k / num_active_blocks setting (2)")
    _add(prof, "threads", type=int, default=None,
         help="torch CPU threads while profiling (default: torch's own)")
    prof.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    prof.set_defaults(func=cmd_profile)


def main(argv=None):
    """Run the ``sklat`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args, argv if argv is not None else sys.argv[1:])
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"sklat {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sklat {args.command}: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------ train
def _select_datasets(args):
    from .io import demo_results_dir, discover_datasets

    if args.results_dir is None:
        return demo_results_dir(), None
    if args.datasets is not None:
        return args.results_dir, args.datasets
    found = discover_datasets(args.results_dir)
    if len(found) > 1 and not args.use_all_datasets:
        raise ValueError(
            f"{args.results_dir} holds several datasets {sorted(found)}: pass "
            "--use_all_datasets or --datasets a,b.")
    return args.results_dir, None


def _split(n, fraction, seed):
    if not 0 <= fraction < 1:
        raise ValueError(f"--val_fraction must be in [0, 1); got {fraction}.")
    order = np.random.RandomState(seed).permutation(n)
    n_val = int(round(fraction * n))
    if n_val and n - n_val < 2:
        raise ValueError(f"--val_fraction {fraction} leaves too few training requests "
                         f"out of {n}.")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _mape(pred, true):
    return float(np.mean(np.abs(pred - true) / true) * 100)


def _metrics(est, res, rows):
    """Prefill / total / positioned errors on the requests ``rows``."""
    if len(rows) == 0:
        return None
    X = res.X.iloc[rows]
    n = res.output_tokens[rows]
    total = res.y["T_LLM_decode"].to_numpy()[rows]
    prefill = res.y["T_prefill_total"].to_numpy()[rows]
    pred_total = est.predict_total(X, n)
    pred_prefill = est.predict_prefill(X)
    out = {
        "n_requests": int(len(rows)),
        "total_decode_mape_pct": _mape(pred_total, total),
        "total_decode_mae_ms": float(np.mean(np.abs(pred_total - total))),
        "prefill_mape_pct": _mape(pred_prefill, prefill),
        "prefill_mae_ms": float(np.mean(np.abs(pred_prefill - prefill))),
    }
    with_steps = [i for i in rows if res.positioned_latencies[i] is not None]
    out["n_requests_with_per_step"] = len(with_steps)
    if with_steps:
        # One prediction for all of them up to the longest; each request's
        # error is the mean over its own steps.
        n_steps = res.output_tokens[with_steps]
        curves = est.predict_positions(res.X.iloc[with_steps], np.arange(1, n_steps.max() + 1))
        errors = [np.mean(np.abs(curve[:n] - res.positioned_latencies[i])
                          / res.positioned_latencies[i])
                  for i, n, curve in zip(with_steps, n_steps, curves)]
        out["positioned_mape_pct"] = float(np.mean(errors) * 100)
    by_dataset = {}
    for name in np.unique(res.dataset[rows]):
        sel = res.dataset[rows] == name
        by_dataset[str(name)] = {
            "n_requests": int(sel.sum()),
            "total_decode_mape_pct": _mape(pred_total[sel], total[sel])}
    out["by_dataset"] = by_dataset
    return out


def _representative(res, rows, k=4):
    """Up to ``k`` requests to draw: those with per-step data first, then
    spread over the range of per-token averages."""
    with_steps = [i for i in rows if res.positioned_latencies[i] is not None][:k - 1]
    avg = res.y["T_LLM_decode"].to_numpy()[rows] / res.output_tokens[rows]
    ordered = np.asarray(rows)[np.argsort(avg)]
    picks = list(with_steps)
    for q in np.linspace(0, 1, k):
        if len(picks) >= k:
            break
        i = int(ordered[int(q * (len(ordered) - 1))])
        if i not in picks:
            picks.append(i)
    return picks


def _write_plots(est, res, rows, output_dir):
    try:
        import matplotlib
    except ImportError:
        print("sklat train: plots not written: matplotlib is missing "
              "(pip install 'sklat[plot]')", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import LatencyCurveDisplay, TotalLatencyDisplay

    picks = _representative(res, rows)
    measured = [res.positioned_latencies[i] for i in picks]
    longest = max([len(m) for m in measured if m is not None] + [64])
    positions = np.arange(1, min(longest, 1024) + 1)
    labels = [f"{res.dataset[i]} #{i}: " + ", ".join(
        f"{c}={res.X.iloc[i][c]:g}" for c in res.X.columns) for i in picks]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    LatencyCurveDisplay.from_estimator(est, res.X.iloc[picks], positions=positions,
                                       measured=measured, labels=labels, ax=ax)
    ax.set_title("Predicted decode latency by position (points: measured steps)")
    fig.tight_layout()
    fig.savefig(output_dir / "latency_curves.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    TotalLatencyDisplay.from_estimator(est, res.X.iloc[rows], res.y.iloc[rows],
                                       output_tokens=res.output_tokens[rows], ax=ax)
    ax.set_title("Total decode latency (validation requests)")
    fig.tight_layout()
    fig.savefig(output_dir / "total_decode.png", dpi=110)
    plt.close(fig)
    return ["latency_curves.png", "total_decode.png"]


def cmd_train(args, argv):
    from . import LatencyEstimator, save
    from .io import load_results
    from .persistence import _versions

    results_dir, datasets = _select_datasets(args)
    res = load_results(results_dir, datasets=datasets, features=args.features)
    train_rows, val_rows = _split(len(res.X), args.val_fraction, args.seed)
    est = LatencyEstimator(
        prefill_weight=args.prefill_weight, decode_total_weight=args.decode_total_weight,
        positioned_weight=args.positioned_weight, loss=args.loss, lr=args.lr,
        config_mlp_weight_decay=args.config_mlp_weight_decay,
        context_features=args.context_features, n_cost_terms=args.n_cost_terms,
        max_epochs=args.num_epochs, batch_size=args.batch_size, device=args.device,
        random_state=args.seed, verbose=0 if args.quiet else 1)
    if not args.quiet:
        print(f"sklat train: {len(train_rows)} training / {len(val_rows)} validation "
              f"requests from {sorted(set(res.dataset))} in {results_dir}")
    start = time.perf_counter()
    est.fit(res.X.iloc[train_rows], res.y.iloc[train_rows],
            output_tokens=res.output_tokens[train_rows],
            positioned_latencies=[res.positioned_latencies[i] for i in train_rows])
    fit_seconds = time.perf_counter() - start

    args.output_dir.mkdir(parents=True, exist_ok=True)
    save(est, args.output_dir / MODEL_FILE)
    plots = _write_plots(est, res, val_rows if len(val_rows) else train_rows,
                         args.output_dir)
    metrics = {
        "train": _metrics(est, res, train_rows),
        "validation": _metrics(est, res, val_rows),
        "epochs_run": len(est.history_),
        "fit_seconds": fit_seconds,
        "device": est.device_,
        "results_dir": str(results_dir),
        "datasets": sorted(set(res.dataset)),
        "command": "sklat " + " ".join(argv),
        "versions": _versions(),
        "files": [MODEL_FILE] + plots,
    }
    # Written last: its presence marks a completed run.
    (args.output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    if not args.quiet:
        val = metrics["validation"] or metrics["train"]
        print(f"sklat train: done in {fit_seconds:.1f} s on {est.device_}; "
              f"validation total-decode MAPE {val['total_decode_mape_pct']:.2f}%, "
              f"prefill MAPE {val['prefill_mape_pct']:.2f}%"
              + (f", positioned MAPE {val['positioned_mape_pct']:.2f}%"
                 if "positioned_mape_pct" in val else ""))
        print(f"sklat train: wrote {args.output_dir}/"
              f"{{{', '.join(metrics['files'] + [METRICS_FILE])}}}")
    return 0


# ---------------------------------------------------------------- predict
def cmd_predict(args, argv):
    from . import load
    from .io import _read_file

    path = args.model / MODEL_FILE if args.model.is_dir() else args.model
    est = load(path, device=args.device)
    if not args.configs.exists():
        raise FileNotFoundError(f"configuration file {args.configs} does not exist.")
    frame = _read_file(args.configs)
    names = list(getattr(est, "feature_names_in_", []))
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"{args.configs}: missing feature column(s) {missing}; the "
                         f"model was trained on {names}.")
    X = frame[names] if names else frame
    n = args.output_tokens
    if n is None and "output_tokens" in frame.columns:
        n = frame["output_tokens"].to_numpy()
    out = X.copy()
    curve = est.predict_positions(X, args.positions)
    for j, p in enumerate(args.positions):
        out[f"latency_p{p}_ms"] = curve[:, j]
    if n is not None:
        out["output_tokens"] = n
    out["T_LLM_decode_ms"] = est.predict_total(X, n)
    if est.prefill_scale_ is not None:
        out["T_prefill_total_ms"] = est.predict_prefill(X)
    out["budget_max_ms_per_token"] = est.predict_budget(X, "max",
                                                        positions=args.positions)
    if args.output is None:
        out.to_csv(sys.stdout, index=False, float_format="%.4f")
    else:
        out.to_csv(args.output, index=False, float_format="%.6f")
        print(f"sklat predict: wrote {len(out)} rows to {args.output}")
    return 0


# ---------------------------------------------------------------- profile
def cmd_profile(args, argv):
    from .profile import profile_model

    try:
        path = profile_model(
            args.model, args.output_dir, prompt_tokens=args.prompt_tokens,
            output_tokens=args.output_tokens, repeats=args.repeats, top_k=args.top_k,
            num_active_blocks=args.num_active_blocks, random_weights=args.random_weights,
            device=args.device, dtype=args.dtype,
            attn_implementation=args.attn_implementation, dataset=args.dataset,
            seed=args.seed, warmup=args.warmup, threads=args.threads,
            progress=not args.quiet)
    except KeyboardInterrupt:
        print("sklat profile: interrupted; the completed requests are kept, run the "
              "same command again to measure the rest", file=sys.stderr)
        return 130
    with open(path) as f:
        rows = sum(1 for _ in f) - 1
    if not args.quiet:
        print(f"sklat profile: {rows} requests in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
