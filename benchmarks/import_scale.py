"""Import and fit a 100,000-request vLLM ``bench serve --save-detailed`` file.

Run: ``python benchmarks/import_scale.py [--requests 100000] [--max_epochs 5]
[--timed]``.

The file is written as vLLM writes it (``json.dump`` of the result object,
seconds, one gap per streamed event; ``tests/_benchmark_files.py`` mirrors
the writer) with prompts of 64-2,048 tokens and 2-128 output tokens (uniform),
one token per event, 1% failed requests. With ``--timed`` the file also holds
``start_times`` and ``latencies`` as recent vLLM writes them (sent at Poisson
times, about 64 requests in flight; a failed request's latency 0), from which
the import reconstructs each request's ``concurrency``, ``in_flight_at_start``
and ``waiting_at_start``. Each stage runs in a fresh process;
peak memory is that process's resident high-water mark (VmHWM), time is wall
time. Fit time is for ``--max_epochs`` epochs (per epoch in the table), on
the CPU with sklat's default thread policy.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGE = r"""
import json, sys, time
def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
path, stage, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
from sklat.io import read_benchmark
base = peak_mib()
start = time.perf_counter()
frame = read_benchmark(path)
read_s = time.perf_counter() - start
out = {"base_mib": base, "import_s": read_s, "rows": len(frame)}
out["summary"] = frame.attrs["import_summary"]
if stage == "fit":
    from sklat import LatencyEstimator
    segments = [None if t is None else (t, m) for t, m in
                zip(frame["T_decode_segment_tokens"], frame["T_decode_segment_ms"])]
    est = LatencyEstimator(max_epochs=epochs, random_state=0, calibration_fraction=0.0)
    start = time.perf_counter()
    est.fit(frame[["text_tokens"]], frame[["T_prefill_total", "T_LLM_decode"]],
            output_tokens=frame["output_tokens"].to_numpy(), decode_segments=segments)
    out["fit_s"] = time.perf_counter() - start
    out["epochs"] = len(est.history_)
out["peak_mib"] = peak_mib()
print(json.dumps(out))
"""


def write_file(path, n, seed=0, timed=False):
    rng = np.random.RandomState(seed)
    prompts = rng.randint(64, 2049, n)
    outputs = rng.randint(2, 129, n)
    failed = rng.uniform(size=n) < 0.01
    itls, ttfts, lens, errors = [], [], [], []
    for p, o, f in zip(prompts, outputs, failed):
        if f:
            itls.append([])
            ttfts.append(0.0)
            lens.append(0)
            errors.append("TimeoutError")
            continue
        steps = (10.0 + 0.002 * (p + np.arange(1, o))) * rng.lognormal(0, 0.05, o - 1)
        itls.append((steps / 1000).tolist())
        ttfts.append(float((5 + 0.05 * p) / 1000))
        lens.append(int(o))
        errors.append("")
    run = {
        "date": "20261130-120000",
        "endpoint_type": "openai",
        "backend": "openai",
        "model_id": "synthetic",
        "tokenizer_id": "synthetic",
        "num_prompts": n,
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": 64,
        "input_lens": prompts.tolist(),
        "output_lens": lens,
        "ttfts": ttfts,
        "itls": itls,
        "generated_texts": [""] * n,
        "errors": errors,
    }
    if timed:
        latencies = [0.0 if e else t + sum(i) for t, i, e in zip(ttfts, itls, errors)]
        gap = np.mean(latencies) / 64  # Little's law: about 64 in flight
        run["start_times"] = (1000.0 + np.cumsum(rng.exponential(gap, n))).tolist()
        run["latencies"] = latencies
    with open(path, "w") as f:
        json.dump(run, f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--max_epochs", type=int, default=5)
    parser.add_argument("--timed", action="store_true", help="write start_times and latencies")
    parser.add_argument("--import_only", action="store_true", help="skip the fit")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vllm.json"
        start = time.perf_counter()
        write_file(path, args.requests, timed=args.timed)
        size = path.stat().st_size / 2**20
        took = time.perf_counter() - start
        print(f"wrote {args.requests} requests, {size:.0f} MiB, in {took:.0f} s")
        rows = {}
        for stage in ("import",) if args.import_only else ("import", "fit"):
            proc = subprocess.run(
                [sys.executable, "-c", STAGE, str(path), stage, str(args.max_epochs)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
        imp, fit = rows["import"], rows.get("fit")
        print(f"\nsummary: {imp['summary']}\n")
        print("| stage | wall time | peak memory (increase over importing sklat) |")
        print("|---|---|---|")
        print(
            f"| import ({size:.0f} MiB file, {imp['rows']} requests) | {imp['import_s']:.1f} s | "
            f"{imp['peak_mib']:.0f} MiB (+{imp['peak_mib'] - imp['base_mib']:.0f}) |"
        )
        if fit is None:
            return
        print(
            f"| import + fit ({fit['epochs']} epochs) | {fit['import_s']:.1f} s + "
            f"{fit['fit_s']:.1f} s ({fit['fit_s'] / fit['epochs']:.1f} s/epoch) | "
            f"{fit['peak_mib']:.0f} MiB (+{fit['peak_mib'] - fit['base_mib']:.0f}) |"
        )


if __name__ == "__main__":
    main()
