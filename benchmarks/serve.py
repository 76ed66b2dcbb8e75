"""``sklat serve`` under a router's calls, during a refit, and learning online.

Run ``python benchmarks/serve.py`` (``--skip calls,refit,online,log`` to leave
parts out). Each part starts ``sklat serve`` (uvicorn, one process) on
127.0.0.1 and calls it over HTTP with httpx from this process; latencies are
measured at the client (the service's own latency plus the loopback and the
client's parsing: an upper bound of the service latency).

- calls: a router's call (one request, 8 candidates: quantiles 0.5 and 0.9 of
  TTFT, time per token, decode and end-to-end, and the attainment of a
  time-per-token objective), N known and N unknown, one client and then two
  and four at once for 10 s; a choose over 100 candidates; the service's
  memory.
- refit: one client's latency while the service refits its model in the
  background (drift found on 60 observations three times slower), against
  the same client's latency just before.
- online: a model trained on the float32 dense set (``llama_dense_sdpa``), then
  served the bfloat16 set's requests (``llama_dense_sdpa_bf16``, same
  configurations, a different dtype) one at a time: before each observation
  the served model's 90% interval of its decode total is taken; every
  ``--update_every`` observations the benchmark waits for the online update to
  be served (requests arriving slower than an update takes). Half of the
  bfloat16 requests are fed, half held out. It prints the coverage of the
  last 50 fed observations, and the 90% coverage and decode-total MAPE (of
  the median) on the held-out requests of the model served after 10, 20, 30,
  50 and all fed observations, against a model trained on all the fed
  observations.
- log: in process, no server: what an online update reads of a growing
  observation log (1,000, 10,000 and 100,000 observations): the whole log
  through ``sklat.io.load_results`` against its last 500 lines (the default
  window) checked as an update checks them, and the opening of the log by a
  restarted service (its repair of a torn last line and its count).
"""

import argparse
import concurrent.futures
import sys
import tempfile

import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from _common import profiled_requests

ROOT = Path(__file__).resolve().parent
TOKEN = "benchmark-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Service:
    """``sklat serve`` in a subprocess."""

    def __init__(self, model, folder, *options, port=8611):
        import subprocess

        self.url = f"http://127.0.0.1:{port}"
        (folder / "token").write_text(TOKEN)
        command = [sys.executable, "-m", "sklat", "serve", "--model", str(model)]
        command += ["--port", str(port), "--token_file", str(folder / "token")]
        command += ["--log_level", "warning", *options]
        self.proc = subprocess.Popen(command)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("sklat serve did not start")

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def version(self):
        text = httpx.get(self.url + "/metrics", headers=AUTH).text
        return int(text.split("\nsklat_model_version ")[1].split()[0])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _train(data, path, seed=0):
    from sklat import LatencyEstimator, save

    est = LatencyEstimator(random_state=seed, n_threads=1)
    est.fit(data.X, data.y, output_tokens=data.output_tokens)
    save(est, path)
    return est


def _latencies(url, body, route, seconds=None, calls=None):
    """Sequential calls on one connection: their latencies (s)."""
    out = []
    with httpx.Client(headers=AUTH, timeout=30) as client:
        start = time.monotonic()
        while (calls is None or len(out) < calls) and (
            seconds is None or time.monotonic() - start < seconds
        ):
            t = time.perf_counter()
            r = client.post(url + route, json=body)
            out.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(r.text)
    return np.array(out)


def _row(what, lat, candidates, wall=None, clients=1):
    calls_per_s = len(lat) / wall if wall else 1 / lat.mean()
    return {
        "call": what,
        "clients": clients,
        "p50 ms": round(1e3 * np.percentile(lat, 50), 2),
        "p99 ms": round(1e3 * np.percentile(lat, 99), 2),
        "calls/s": round(calls_per_s, 1),
        "candidate evaluations/s": round(calls_per_s * candidates),
    }


def calls(folder):
    data = profiled_requests("mixtral_moe_sdpa")
    model = folder / "moe.safetensors"
    _train(data, model)
    service = Service(model, folder)
    try:
        rows = data.X.iloc[:8].to_dict(orient="records")
        hundred = data.X.iloc[np.arange(100) % len(data.X)].to_dict(orient="records")
        known = {"rows": rows, "output_tokens": 128, "quantiles": [0.5, 0.9], "tpot_ms": 20.0}
        unknown = {"rows": rows, "quantiles": [0.5, 0.9], "tpot_ms": 20.0}
        unknown_no_e2e = dict(unknown, outputs=["ttft_ms", "tpot_ms"])
        choose = {"candidates": hundred, "tpot_ms": 20.0, "min_attainment": 0.9}
        table = []
        for what, body, route, n in (
            ("predict, 8 candidates, N known", known, "/v1/predict", 8),
            ("predict, 8 candidates, N unknown (11 lengths)", unknown, "/v1/predict", 8),
            ("the same, TTFT and TPOT only", unknown_no_e2e, "/v1/predict", 8),
            ("choose, 100 candidates, N unknown", choose, "/v1/choose", 100),
        ):
            _latencies(service.url, body, route, calls=20)  # warm up
            table.append(_row(what, _latencies(service.url, body, route, seconds=10), n))
            for clients in (2, 4):
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    start = time.monotonic()
                    parts = list(
                        pool.map(
                            lambda _: _latencies(service.url, body, route, seconds=10),
                            range(clients),
                        )
                    )
                    wall = time.monotonic() - start
                table.append(_row(what, np.concatenate(parts), n, wall, clients=clients))
        print(pd.DataFrame(table).to_markdown(index=False))
        print(f"\nservice memory after these calls: {service.rss_mib():.0f} MiB RSS")
    finally:
        service.stop()


def refit(folder):
    data = profiled_requests("mixtral_moe_sdpa")
    model = folder / "moe.safetensors"
    if not model.exists():
        _train(data, model)
    obs = folder / "refit-observations"
    service = Service(
        model,
        folder,
        "--observations",
        str(obs),
        "--update_every",
        "60",
        "--drift_patience",
        "1",
    )
    try:
        body = {"rows": data.X.iloc[:8].to_dict(orient="records"), "output_tokens": 128}
        _latencies(service.url, body, "/v1/predict", calls=50)
        idle = _latencies(service.url, body, "/v1/predict", seconds=10)
        rows = []
        for i in range(60):
            row = {**data.X.iloc[i].to_dict(), "output_tokens": int(data.output_tokens[i])}
            row["T_prefill_total"] = float(data.y.iloc[i, 0])
            row["T_LLM_decode"] = 3.0 * float(data.y.iloc[i, 1])
            rows.append(row)
        start = time.monotonic()
        r = httpx.post(service.url + "/v1/observations", json={"rows": rows}, headers=AUTH)
        r.raise_for_status()
        during = []
        while service.version() < 2:
            during.append(_latencies(service.url, body, "/v1/predict", calls=20))
        took = time.monotonic() - start
        during = np.concatenate(during)
        text = httpx.get(service.url + "/metrics", headers=AUTH).text
        refits = text.split('sklat_updates_total{action="refit"} ')[1].split()[0]
        print(
            pd.DataFrame(
                [_row("predict, idle", idle, 8), _row("predict, during the refit", during, 8)]
            ).to_markdown(index=False)
        )
        print(
            f"\nthe update (a refit: {refits}) took {took:.1f} s; p99 during it / idle: "
            f"{np.percentile(during, 99) / np.percentile(idle, 99):.2f}"
        )
    finally:
        service.stop()


def online(folder, update_every=10, seed=0):
    from sklat import LatencyEstimator
    from sklat.metrics import interval_coverage

    warnings.simplefilter("ignore")
    base = profiled_requests("llama_dense_sdpa")
    shifted = profiled_requests("llama_dense_sdpa_bf16")
    model = folder / "float32.safetensors"
    _train(base, model, seed)
    order = np.random.default_rng(seed).permutation(len(shifted.X))
    fed, held = order[: len(order) // 2], order[len(order) // 2 :]
    obs = folder / "online-observations"
    service = Service(
        model,
        folder,
        "--observations",
        str(obs),
        "--update_every",
        str(update_every),
        "--window",
        "200",
    )
    columns = list(shifted.X.columns)

    def rows_of(index):
        return shifted.X.iloc[index].to_dict(orient="records")

    def held_out(client):
        """Decode-total MAPE of the median and 90% coverage on the held-out
        requests, by the model served now."""
        body = {"rows": rows_of(held), "output_tokens": shifted.output_tokens[held].tolist()}
        body.update(quantiles=[0.5], confidence=0.9, outputs=["decode_ms"])
        answer = client.post(service.url + "/v1/predict", json=body).json()
        median = np.array([p["decode_ms"]["0.5"] for p in answer["predictions"]])
        bounds = np.array([p["interval"]["decode_ms"] for p in answer["predictions"]])
        truth = shifted.y["T_LLM_decode"].to_numpy()[held]
        return 100 * np.mean(np.abs(median - truth) / truth), 100 * interval_coverage(truth, bounds)

    covered, mape = [], {}
    try:
        with httpx.Client(headers=AUTH, timeout=60) as client:
            mape[0] = held_out(client)
            for k, i in enumerate(fed, start=1):
                body = {
                    "rows": rows_of([i]),
                    "output_tokens": int(shifted.output_tokens[i]),
                    "confidence": 0.9,
                    "quantiles": [0.5],
                }
                p = client.post(service.url + "/v1/predict", json=body).json()
                low, high = p["predictions"][0]["interval"]["decode_ms"]
                truth = float(shifted.y["T_LLM_decode"].iloc[i])
                covered.append(low <= truth <= high)
                row = {c: float(shifted.X.iloc[i][c]) for c in columns}
                row.update(
                    output_tokens=int(shifted.output_tokens[i]),
                    T_prefill_total=float(shifted.y["T_prefill_total"].iloc[i]),
                    T_LLM_decode=truth,
                )
                client.post(service.url + "/v1/observations", json={"rows": [row]})
                if k % update_every == 0:
                    deadline = time.monotonic() + 300
                    while service.version() < 1 + k // update_every:
                        if time.monotonic() > deadline:
                            raise RuntimeError("the online update did not land")
                        time.sleep(0.1)
                if k in (10, 20, 30, 50, len(fed)):
                    mape[k] = held_out(client)
    finally:
        service.stop()
    reference = LatencyEstimator(random_state=seed, n_threads=1).fit(
        shifted.X.iloc[fed], shifted.y.iloc[fed], output_tokens=shifted.output_tokens[fed]
    )
    ref = reference.predict_quantiles(
        shifted.X.iloc[held], 0.5, output_tokens=shifted.output_tokens[held]
    )[:, 0]
    truth = shifted.y["T_LLM_decode"].to_numpy()[held]
    ref_mape = 100 * np.mean(np.abs(ref - truth) / truth)
    covered = np.array(covered, dtype=float)
    rows = []
    for k in (10, 20, 30, 50, len(fed)):
        last = covered[max(0, k - 50) : k]
        rows.append(
            {
                "observations fed": k,
                "90% coverage of the fed ones, last 50 (or all so far)": round(
                    100 * last.mean(), 1
                ),
                "held-out 90% coverage": round(mape[k][1], 1),
                "held-out decode MAPE %": round(mape[k][0], 2),
            }
        )
    print(
        f"before any bfloat16 observation: held-out decode MAPE {mape[0][0]:.2f}%, "
        f"90% coverage {mape[0][1]:.1f}% ({len(held)} held-out requests)"
    )
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(
        f"\na model trained on all {len(fed)} fed observations: held-out decode MAPE "
        f"{ref_mape:.2f}%; the served model after them / it: "
        f"{mape[len(fed)][0] / ref_mape:.2f}x"
    )


def log_reads(sizes=(1_000, 10_000, 100_000), window=500):
    """Milliseconds to read a log of each size whole, to read its last
    ``window`` observations as an update does, and to open it."""
    from sklat.datasets import make_positioned_latency
    from sklat.io import _checked_results, _json_lines_frame, load_results
    from sklat.serve._observations import DATASET, FILE_NAME, ObservationLog, last_lines

    data = make_positioned_latency(1000, noise=0.05, max_output_tokens=64, random_state=0)
    frame = data.X.assign(output_tokens=data.output_tokens, **data.y)
    records = frame.to_dict("records")
    for record in records:
        record["output_tokens"] = int(record["output_tokens"])
    features = list(data.X.columns)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        log = ObservationLog(tmp)
        path = Path(tmp) / DATASET / FILE_NAME
        for size in sizes:
            while log.count < size:
                log.append(records)
            start = time.perf_counter()
            load_results(tmp, datasets=[DATASET], features=features)
            whole = time.perf_counter() - start
            start = time.perf_counter()
            lines = last_lines(path, window)
            _checked_results([(_json_lines_frame(lines, path), path, DATASET)], features)
            tail = time.perf_counter() - start
            start = time.perf_counter()
            ObservationLog(tmp)
            opened = time.perf_counter() - start
            rows.append(
                {
                    "observations": size,
                    "MiB": round(path.stat().st_size / 2**20, 1),
                    "whole log ms": round(1e3 * whole, 1),
                    f"last {window} ms": round(1e3 * tail, 1),
                    "open ms": round(1e3 * opened, 1),
                }
            )
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", default="", help="comma-separated: calls,refit,online,log")
    parser.add_argument("--update_every", type=int, default=10)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "calls" not in skip:
            print("\n## A router's calls\n")
            calls(folder)
        if "refit" not in skip:
            print("\n## During a background refit\n")
            refit(folder)
        if "online" not in skip:
            print("\n## Online adaptation, float32 to bfloat16\n")
            online(folder, update_every=args.update_every)
    if "log" not in skip:
        print("\n## What an online update reads of the observation log\n")
        log_reads()
