"""Profiling a serving engine: the client's own cost, and what a served set teaches.

Run: ``python benchmarks/endpoint.py overhead`` (client time per event) and
``python benchmarks/endpoint.py measure`` (serve the dense 30M Llama of
``benchmarks/data/configs`` with ``transformers serve`` on the CPU, random weights
and a word-level tokenizer, and profile it into
``benchmarks/data/llama_dense_served``), then ``python benchmarks/endpoint.py
evaluate`` (train sklat on totals only and on the segments, by-request splits).

- overhead: a local server writes a response of 20,000 events as fast as it can;
  the client's CPU time in its own thread (``time.thread_time``) per event is what
  profiling adds to each event, measured with the server idle in the meantime
  (it runs in another process).
- evaluate: the recorded segments against end-to-end minus first-token time (the
  tail between the last token and the end of the response), and positioned MAPE
  of sklat trained on totals only against sklat trained on the segments, scored
  on held-out requests' one-token segments (30% by request, mean over split
  seeds 0, 1, 2).
"""

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
from _common import served

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
SET = "llama_dense_served"


def _fast_server(port, n_events, ready):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def event(text, finish=None, usage=None):
        choice = {"index": 0, "text": text, **({"finish_reason": finish} if finish else {})}
        obj = {"id": "x", "object": "text_completion", "choices": [choice]}
        if usage:
            obj["usage"] = usage
        return f"data: {json.dumps(obj)}\n\n".encode()

    body = b"".join(event(f" w{i}") for i in range(n_events))
    body += event("", "length", {"prompt_tokens": 4, "completion_tokens": n_events})

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), 4096):
                self.wfile.write(body[start : start + 4096])

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


def overhead(n_events=20_000, repeats=5):
    import httpx

    from sklat.acquire._endpoint import _body
    from sklat.acquire._stream import stream

    port = 8799
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_fast_server, args=(port, n_events, ready), daemon=True)
    proc.start()
    ready.wait(10)
    per_event = []
    try:
        with httpx.Client() as client:
            for _ in range(repeats + 1):
                cpu = time.thread_time()
                reads = stream(
                    client,
                    f"http://127.0.0.1:{port}/v1/completions",
                    _body("completions", "openai", "m", "a b c d", n_events, None),
                    "completions",
                    30,
                )
                per_event.append((time.thread_time() - cpu) / n_events * 1e3)
                assert sum(e for _, e, _ in reads.reads) == n_events
    finally:
        proc.terminate()
    per_event = per_event[1:]  # the first request warms up the connection
    print(f"\nclient CPU time per event over {repeats} responses of {n_events} events:")
    print(f"median {np.median(per_event) * 1000:.1f} us, max {max(per_event) * 1000:.1f} us")


def measure(port=8766):
    from sklat.acquire import profile_endpoint

    with served(port) as model:
        for _ in range(4):  # reruns measure what failed
            path = profile_endpoint(
                f"http://127.0.0.1:{port}",
                DATA,
                model=str(model),
                engine="transformers",
                prompt_tokens=[64, 256, 768, 1536],
                output_tokens=[8, 32, 64, 128, 256, 400],
                repeats=5,
                dataset=SET,
                warmup=3,
                progress=True,
            )
    print(path)


def evaluate(seeds=(0, 1, 2)):
    import pandas as pd

    from sklat import LatencyEstimator, metrics
    from sklat.io import load_results

    frame = pd.read_csv(DATA / SET / "requests.csv")
    decode = frame["e2e_ms"] - frame["T_prefill_total"]
    tail = (decode - frame["T_LLM_decode"]) / decode
    print(f"\n{len(frame)} requests; segments: {frame['segments'].value_counts().to_dict()}")
    print(
        "end-to-end minus first-token time vs the sum of the segments (the response's "
        f"tail): median {tail.median():.2%}, 95th percentile {tail.quantile(0.95):.2%}, "
        f"max {tail.max():.2%}"
    )
    res = load_results(DATA, datasets=[SET], features=["text_tokens"])
    n = len(res.output_tokens)
    one = [s is not None and (s[0] == 1).all() for s in res.decode_segments]
    table = {"totals": [], "segments": []}
    for seed in seeds:
        order = np.random.RandomState(seed).permutation(n)
        test, train = np.sort(order[: int(0.3 * n)]), np.sort(order[int(0.3 * n) :])
        scored = [i for i in test if one[i]]
        for how in table:
            kw = {"output_tokens": res.output_tokens[train]}
            if how == "segments":
                kw["decode_segments"] = [res.decode_segments[i] for i in train]
            est = LatencyEstimator(random_state=seed).fit(
                res.X.iloc[train], res.y.iloc[train], **kw
            )
            scores = metrics.evaluate(
                est,
                res.X.iloc[scored],
                res.y.iloc[scored],
                output_tokens=res.output_tokens[scored],
                positioned_latencies=[res.decode_segments[i][1] for i in scored],
            )
            table[how].append(scores["positioned_mape_pct"])
    a, b = np.mean(table["totals"]), np.mean(table["segments"])
    print("\n| trained on | positioned MAPE (held-out one-token segments) |")
    print("|---|---|")
    print(f"| totals only | {a:.2f} |\n| segments | {b:.2f} |\n| ratio | {a / b:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["overhead", "measure", "evaluate"])
    args = parser.parse_args()
    {"overhead": overhead, "measure": measure, "evaluate": evaluate}[args.what]()
