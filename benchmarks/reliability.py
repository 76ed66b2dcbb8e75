"""Edited model files and odd results folders: what sklat does with them.

Writes a model with ``sklat.save``, edits it the way issue reports did (JSON
metadata changed and the digest recomputed, tensors replaced), loads each file
and prints, per case, the outcome, the wall time and the growth of the
process's peak resident memory. Then the same for a results folder holding a
device, a pipe, a folder and broken files named like results files.

    python benchmarks/reliability.py
"""

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sklat
from sklat.datasets import make_positioned_latency
from sklat.io import load_results
from sklat.persistence import _digest


def _peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _run(fn):
    _reset_peak()
    base = _peak_kib()
    start = time.perf_counter()
    try:
        fn()
        outcome = "accepted"
    except Exception as exc:  # the outcome is what we report
        outcome = f"{type(exc).__name__}: {str(exc).split(': ', 1)[-1][:60]}"
    return {
        "outcome": outcome,
        "ms": 1e3 * (time.perf_counter() - start),
        "peak RSS growth MiB": (_peak_kib() - base) / 1024,
    }


def model_file_table(root):
    d = make_positioned_latency(300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = sklat.LatencyEstimator(max_epochs=5, random_state=0).fit(
            d.X, d.y, output_tokens=d.output_tokens
        )
    path = root / "model.safetensors"
    sklat.save(est, path)
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        body = f.metadata()["sklat"]

    def edited(name, doc_edit=None, tensor_edit=None, raw=None):
        doc, ts = json.loads(body), {k: v.clone() for k, v in tensors.items()}
        if doc_edit:
            doc_edit(doc)
        if tensor_edit:
            tensor_edit(ts)
        text = raw if raw is not None else json.dumps(doc)
        out = root / f"{name}.safetensors"
        save_file(ts, out, metadata={"sklat": text, "sha256": _digest(text, ts)})
        return out

    def attr(key, value):
        return lambda doc: doc["attributes"].__setitem__(key, value)

    def param(key, value):
        return lambda doc: doc["params"].__setitem__(key, value)

    cases = {
        "unedited": edited("ok"),
        "step_scale_ = -1": edited("a", attr("step_scale_", -1)),
        "feature_scale_ all 0": edited("b", attr("feature_scale_", [0.0] * 5)),
        "NaN weights": edited(
            "c", tensor_edit=lambda t: t["module.config_linear.weight"].fill_(float("nan"))
        ),
        "extra parameter key": edited("d", param("surprise", 1)),
        "missing parameter key": edited("e", lambda doc: doc["params"].pop("lr")),
        "top-level JSON list": edited("f", raw="[1, 2]"),
        "hidden_size = -1": edited("g", param("hidden_size", -1)),
        "hidden_size = 20000": edited("h", param("hidden_size", 20000)),
        "JSON nested 100k deep": edited("i", raw="[" * 100_000 + "]" * 100_000),
        "bf16 tensor": edited(
            "j",
            tensor_edit=lambda t: t.update(
                {"module.config_linear.weight": t["module.config_linear.weight"].to(torch.bfloat16)}
            ),
        ),
        "output length 3e7 in the distribution": edited(
            "k",
            attr("output_tokens_distribution_", {"values": [3 * 10**7], "probabilities": [1.0]}),
        ),
    }
    return pd.DataFrame({name: _run(lambda p=p: sklat.load(p)) for name, p in cases.items()}).T


def results_folder_table(root):
    frame = make_positioned_latency(20, random_state=0).frame.drop(columns="T_decode_per_step")
    cases = {}

    def folder(name, make):
        path = root / name / "a"
        path.mkdir(parents=True)
        frame.to_csv(path / "good.csv", index=False)
        make(path)
        return path.parent

    cases["/dev/zero linked as evil.csv"] = folder(
        "zero", lambda p: os.symlink("/dev/zero", p / "evil.csv")
    )
    cases["FIFO pipe.csv"] = folder("fifo", lambda p: os.mkfifo(p / "pipe.csv"))
    cases["folder sub.csv"] = folder("dir", lambda p: (p / "sub.csv").mkdir())
    cases["UPPER.CSV"] = folder("upper", lambda p: frame.to_csv(p / "UPPER.CSV", index=False))
    cases["zero-byte CSV"] = folder("empty", lambda p: (p / "empty.csv").write_text(""))
    cases["JSONL cut mid-line"] = folder(
        "jsonl", lambda p: (p / "x.jsonl").write_text('{"text_tokens": 1}\n{"text_tok')
    )
    rows = {}
    for name, path in cases.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            row = _run(lambda path=path: print(len(load_results(path).X), end=" "))
        row["warnings"] = "; ".join(str(w.message).rsplit("/", 1)[-1] for w in caught)
        rows[name] = row
    print()
    return pd.DataFrame(rows).T


def main():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("## Edited model files (sklat.load)")
        print(model_file_table(root).round(1).to_markdown())
        print("\n## Results folders (load_results; rows read printed above)")
        print(results_folder_table(root).round(1).to_markdown())


if __name__ == "__main__":
    main()
