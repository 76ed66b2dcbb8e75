"""Cost of training and inference.

Run: ``python benchmarks/speed.py [--device cpu|cuda] [--quick]``; prints Markdown tables.

1. Training throughput (positions/s, s/epoch) of sklat's summed-position step,
   against two reference implementations of the design document's model (decode
   head = MLP over ``[h_c, h_p]``): a per-sample Python loop and a padded
   ``B x max(N)`` batch; for three output-length distributions at equal ``sum(N)``.
2. Inference latency for one configuration (median µs) of ``predict_total``,
   ``predict_positions`` at (1, 5, 10, 20) and ``predict_budget``, against the
   raw torch forward for the same work and LightGBM's single-row predict.
3. Peak memory (RSS) for ``N = 32768``.
4. Wall time of a default fit of 2,000 requests with ``N`` up to 1,024.
5. A controller's decisions with ``N`` unknown (intervals, SLO attainment,
   ``choose`` over 100 candidates) as ratios to ``predict_total``.
"""

import argparse
import copy
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from _common import median_us

from sklat import LatencyEstimator
from sklat.control import choose
from sklat._loss import decode_total_loss
from sklat._module import CostTermsLatencyModule, _mlp
from sklat.datasets import make_positioned_latency

HIDDEN = 64
N_FEATURES = 5
BATCH = 64


class SeedModule(nn.Module):
    """The design document's model: decode head = MLP over [h_c, h_p]."""

    def __init__(self):
        super().__init__()
        self.config_encoder = _mlp(N_FEATURES, HIDDEN, HIDDEN)
        self.position_encoder = _mlp(1, HIDDEN, HIDDEN)
        self.head = nn.Sequential(
            nn.Linear(2 * HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, 1), nn.Softplus()
        )

    def curve(self, positions):
        return self.position_encoder(torch.log1p(positions.float())[:, None] / 10.0)

    def loop_totals(self, x, n):
        """Per-sample Python loop."""
        h_c = self.config_encoder(x)
        totals = []
        for i in range(len(n)):
            p = torch.arange(1, int(n[i]) + 1, device=x.device)
            h_p = self.curve(p)
            z = torch.cat([h_c[i].expand(len(p), -1), h_p], dim=1)
            totals.append(self.head(z).sum())
        return torch.stack(totals)

    def padded_totals(self, x, n):
        """Every sample at positions 1..max(N), masked."""
        h_c = self.config_encoder(x)
        max_n = int(n.max())
        h_p = self.curve(torch.arange(1, max_n + 1, device=x.device))
        z = torch.cat(
            [h_c[:, None, :].expand(-1, max_n, -1), h_p[None, :, :].expand(len(n), -1, -1)], dim=2
        )
        f = self.head(z)[..., 0]
        mask = torch.arange(1, max_n + 1, device=x.device)[None, :] <= n[:, None]
        return (f * mask).sum(dim=1)


def lengths(kind, count, rng):
    if kind == "uniform 1-64":
        return rng.randint(1, 65, count)
    cap = 4096 if kind.endswith("4096") else 32768
    sigma = 1.3 if cap == 4096 else 1.8
    return np.clip(np.round(np.exp(rng.normal(np.log(64), sigma, count))), 1, cap).astype(np.int64)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, batches, device, max_batches):
    """Mean seconds per training step over up to ``max_batches`` batches."""
    step(*batches[0])  # warm-up
    _sync(device)
    times = []
    for x, n in batches[:max_batches]:
        start = time.perf_counter()
        step(x, n)
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.mean(times))


def training_table(device, total_positions, quick):
    rng = np.random.RandomState(0)
    rows = []
    for kind in ["uniform 1-64", "long-tailed to 4096", "long-tailed to 32768"]:
        # Draw requests until their lengths add up to total_positions.
        n_all = lengths(kind, 4 * total_positions // 32 + 64, rng)
        n_all = n_all[: np.searchsorted(np.cumsum(n_all), total_positions) + 1]
        x_all = torch.randn(len(n_all), N_FEATURES)
        batches = [
            (x_all[i : i + BATCH].to(device), torch.from_numpy(n_all[i : i + BATCH]).to(device))
            for i in range(0, len(n_all), BATCH)
        ]
        target = torch.ones(len(n_all))
        fact = CostTermsLatencyModule(
            N_FEATURES, HIDDEN, 8, with_prefill=False, position_scale=float(n_all.max())
        ).to(device)
        seed = SeedModule().to(device)
        impls = {
            "sklat (summed positions)": (fact, lambda m, x, n: m(x, n)["total"]),
            "reference: padded B x max(N)": (seed, lambda m, x, n: m.padded_totals(x, n)),
            "reference: per-sample loop": (seed, lambda m, x, n: m.loop_totals(x, n)),
        }
        for name, (module, totals) in impls.items():
            opt = torch.optim.AdamW(module.parameters(), lr=1e-3)

            def step(x, n, module=module, totals=totals, opt=opt):
                opt.zero_grad()
                t = target[: len(n)].to(x.device) * n
                loss = decode_total_loss(totals(module, x, n) + 1e-3, t, "log")
                loss.backward()
                opt.step()

            sample = 3 if (quick or name != "sklat (summed positions)") else len(batches)
            try:
                per_step = time_steps(step, batches, device, sample)
            except (RuntimeError, MemoryError) as exc:  # out of memory
                rows.append(
                    {"lengths": kind, "implementation": name, "note": f"failed: {str(exc)[:60]}"}
                )
                continue
            # Cost of the measured batches, scaled to the whole epoch by positions.
            measured = sum(int(n.sum()) for _, n in batches[:sample])
            per_position = per_step * min(sample, len(batches)) / measured
            rows.append(
                {
                    "lengths": kind,
                    "implementation": name,
                    "requests": len(n_all),
                    "sum(N)": int(n_all.sum()),
                    "max N": int(n_all.max()),
                    "s/epoch": per_position * n_all.sum(),
                    "positions/s": 1.0 / per_position,
                }
            )
    table = pd.DataFrame(rows)
    sk = table[table["implementation"].str.startswith("sklat")].set_index("lengths")
    ratios = {
        "long-tailed 4096 / uniform (s/epoch, sklat)": sk.loc["long-tailed to 4096", "s/epoch"]
        / sk.loc["uniform 1-64", "s/epoch"],
        "long-tailed 32768 / uniform (s/epoch, sklat)": sk.loc["long-tailed to 32768", "s/epoch"]
        / sk.loc["uniform 1-64", "s/epoch"],
    }
    for kind in ["long-tailed to 4096", "long-tailed to 32768"]:
        for ref in ["padded B x max(N)", "per-sample loop"]:
            r = table[(table["lengths"] == kind) & (table["implementation"] == f"reference: {ref}")]
            if len(r) and "s/epoch" in r and np.isfinite(r["s/epoch"].iloc[0]):
                ratios[f"{ref} / sklat, {kind}"] = r["s/epoch"].iloc[0] / sk.loc[kind, "s/epoch"]
    return table, ratios


def inference_table(repeat):
    data = make_positioned_latency(1000, random_state=0)
    X = data.X.to_numpy(dtype=np.float64)
    est = LatencyEstimator(max_epochs=20, random_state=0, device="cpu").fit(
        X, data.y, output_tokens=data.output_tokens
    )
    est_df = LatencyEstimator(max_epochs=20, random_state=0, device="cpu").fit(
        data.X, data.y, output_tokens=data.output_tokens
    )
    row = X[:1]
    module = est.net_.module_
    # The standardised features, from the documented fitted attributes.
    logged = np.where(est.feature_log_mask_, np.log(row + est.feature_log_shift_), row)
    x_std = torch.from_numpy(((logged - est.feature_mean_) / est.feature_scale_).astype(np.float32))
    probe = torch.tensor([1, 5, 10, 20])

    context = torch.zeros(1)

    def raw_forward():
        with torch.no_grad():
            coef = module.encode(x_std)
            growth = context + probe / module.context_scale
            return (
                coef["flat"][:, None]
                + coef["slope"][:, None] * growth[None, :]
                + coef["shape"] @ module.basis(probe).T
            )

    import lightgbm

    gbm = lightgbm.LGBMRegressor(n_estimators=100, verbose=-1).fit(
        np.column_stack([X, data.output_tokens]), data.y["T_LLM_decode"]
    )
    booster = gbm.booster_
    gbm_row = np.column_stack([row, [[128]]])
    rows = {
        "predict_budget (max over 1,5,10,20)": median_us(lambda: est.predict_budget(row), repeat),
        "predict_positions (1,5,10,20)": median_us(
            lambda: est.predict_positions(row, [1, 5, 10, 20]), repeat
        ),
        "predict_total (N=128)": median_us(lambda: est.predict_total(row, 128), repeat),
        "predict_budget, DataFrame row": median_us(
            lambda: est_df.predict_budget(data.X.iloc[:1]), repeat
        ),
        "raw torch forward (encode + basis at 4 positions)": median_us(raw_forward, repeat),
        "LightGBM booster.predict, one row": median_us(lambda: booster.predict(gbm_row), repeat),
    }
    table = pd.DataFrame({"median µs": rows})
    ratio = (
        rows["predict_budget (max over 1,5,10,20)"]
        / rows["raw torch forward (encode + basis at 4 positions)"]
    )
    return table, ratio


def decision_table(repeat):
    """A controller's decisions with N unknown, as ratios to predict_total in one
    run: one configuration's interval, SLO attainment and budget bound, and
    choose over 100 candidates; on the synthetic family (211 distinct training
    lengths) and on a measured set (a few distinct lengths). Each estimator
    has its defaults (a cross-fitted one below 500 requests); predict_total of
    the same set fitted as one net is timed alongside."""
    from _common import profiled_requests

    sets = {"synthetic (500 requests)": make_positioned_latency(500, random_state=0)}
    sets["mixtral_moe_sdpa (measured)"] = profiled_requests("mixtral_moe_sdpa")
    rows = []
    for name, data in sets.items():
        est, single = (
            LatencyEstimator(max_epochs=20, random_state=0, device="cpu", n_folds=folds).fit(
                data.X, data.y, output_tokens=data.output_tokens
            )
            for folds in ("auto", None)
        )
        one, hundred = data.X.iloc[[3]], data.X.iloc[np.arange(100) % len(data.X)]
        slo = est.predict_total(one)[0] / np.mean(data.output_tokens)
        prefill, decode = est.predict(one)[0]
        e2e, ttft = float(prefill + decode), float(prefill)
        calls = {
            "predict_total(X)": lambda: est.predict_total(one),
            "predict_total(X), one net (n_folds=None)": lambda: single.predict_total(one),
            "predict_interval(X)": lambda: est.predict_interval(one),
            "predict_slo_attainment(X, tpot_ms)": lambda: est.predict_slo_attainment(
                one, tpot_ms=slo
            ),
            "predict_budget(X, confidence=0.9)": lambda: est.predict_budget(one, confidence=0.9),
            "choose(100 candidates, tpot_ms)": lambda: choose(est, hundred, tpot_ms=slo),
            "choose(100 candidates, e2e_ms)": lambda: choose(est, hundred, e2e_ms=e2e),
            "choose(100 candidates, ttft_ms and e2e_ms)": lambda: choose(
                est, hundred, ttft_ms=ttft, e2e_ms=e2e
            ),
            "choose(100 candidates, tpot_ms and e2e_ms)": lambda: choose(
                est, hundred, tpot_ms=slo, e2e_ms=e2e
            ),
        }
        # Interleaved rounds: a busy moment of the machine hits every call alike.
        samples = {k: [] for k in calls}
        for _ in range(5):
            for k, f in calls.items():
                samples[k].append(median_us(f, max(1, repeat // 5)))
        times = {k: float(np.median(v)) for k, v in samples.items()}
        base = times["predict_total(X)"]
        lengths = len(est.output_tokens_distribution_["values"])
        for call, us in times.items():
            rows.append(
                {
                    "set (distinct lengths, calibration requests, nets)": f"{name} "
                    f"({lengths}, {len(est.conformity_scores_)}, {len(est.nets_)})",
                    "call, N unknown": call,
                    "median µs": round(us, 1),
                    "x predict_total": round(us / base, 2),
                }
            )
    return pd.DataFrame(rows)


def support_table(repeat, supports=(10, 400, 4000)):
    """Decisions with N unknown as the output-length distribution widens: a
    uniform distribution over ``1..J`` for each ``J`` of ``supports`` (past
    the longest training output, an extrapolation), on the measured MoE set's
    default (cross-fitted) model, read in groups (``length_groups=128``, the
    default) and length by length (``None``); ratios to ``predict_total`` of
    the training distribution, timed alongside. Also returns the largest
    differences between the two readings (:func:`grouping_error_table`)."""
    from _common import profiled_requests

    warnings.simplefilter("ignore")
    data = profiled_requests("mixtral_moe_sdpa")
    est = LatencyEstimator(max_epochs=20, random_state=0, device="cpu").fit(
        data.X, data.y, output_tokens=data.output_tokens
    )
    one, hundred = data.X.iloc[[3]], data.X.iloc[np.arange(100) % len(data.X)]
    slo = est.predict_total(one)[0] / np.mean(data.output_tokens)
    e2e = float(est.predict(one)[0].sum())
    rows = []
    for support in supports:
        dist = {"values": np.arange(1, support + 1), "probabilities": np.full(support, 1 / support)}
        kw = {"output_tokens_distribution": dist}
        calls = {
            "predict_total(X)": lambda: est.predict_total(one),
            "predict_interval(X)": lambda: est.predict_interval(one, **kw),
            "predict_slo_attainment(X, tpot_ms)": lambda: est.predict_slo_attainment(
                one, tpot_ms=slo, **kw
            ),
            "choose(100 candidates, tpot_ms)": lambda: choose(est, hundred, tpot_ms=slo, **kw),
            "choose(100 candidates, e2e_ms)": lambda: choose(est, hundred, e2e_ms=e2e, **kw),
            "choose(100 candidates, tpot_ms and e2e_ms)": lambda: choose(
                est, hundred, tpot_ms=slo, e2e_ms=e2e, **kw
            ),
        }
        for groups in (128, None):
            est.set_params(length_groups=groups)
            samples = {k: [] for k in calls}
            for _ in range(5):
                for k, f in calls.items():
                    samples[k].append(median_us(f, max(1, repeat // 5)))
            times = {k: float(np.median(v)) for k, v in samples.items()}
            for call, us in times.items():
                rows.append(
                    {
                        "distinct lengths": support,
                        "length_groups": "None" if groups is None else groups,
                        "call, N unknown": call,
                        "median µs": round(us, 1),
                        "x predict_total": round(us / times["predict_total(X)"], 2),
                    }
                )
    est.set_params(length_groups=128)
    errors = grouping_error_table(est, hundred, slo, e2e, supports)
    return pd.DataFrame(rows), errors


def grouping_error_table(est, X, tpot, e2e, supports, scales=(0.8, 1.0, 1.25, 1.6)):
    """The largest differences, over the rows of ``X``, between reading a
    uniform output-length distribution in groups (``est``'s
    ``length_groups``) and length by length: of the SLO attainment (in
    points) with each objective scaled by ``scales``, and of the 90%
    interval's bounds and the 10/50/90% decode-total quantiles (relative)."""
    groups = est.length_groups
    exact = copy.deepcopy(est).set_params(length_groups=None)
    rows = []
    for support in supports:
        dist = {"values": np.arange(1, support + 1), "probabilities": np.full(support, 1 / support)}
        kw = {"output_tokens_distribution": dist}
        for name, objectives in {
            "tpot_ms": {"tpot_ms": tpot},
            "e2e_ms": {"e2e_ms": e2e},
            "tpot_ms and e2e_ms": {"tpot_ms": tpot, "e2e_ms": e2e},
        }.items():
            diffs, means = [], []
            for scale in scales:
                given = {k: v * scale for k, v in objectives.items()}
                a = est.predict_slo_attainment(X, **given, **kw)
                b = exact.predict_slo_attainment(X, **given, **kw)
                diffs.append(np.abs(a - b).max())
                means.append(b.mean())
            rows.append(
                {
                    "distinct lengths": support,
                    "groups read": len(est._grouped(est._distribution(dist))["values"]),
                    "what": f"attainment, {name} x {'/'.join(map(str, scales))}",
                    "exact mean": " / ".join(f"{m:.3f}" for m in means),
                    "largest difference": f"{100 * max(diffs):.3f} points",
                    "bound": f"{200 / groups:.2f} points",
                }
            )
        for name, grouped_value, exact_value in (
            ("90% interval bounds", est.predict_interval(X, **kw), exact.predict_interval(X, **kw)),
            (
                "10/50/90% quantiles",
                est.predict_quantiles(X, [0.1, 0.5, 0.9], **kw),
                exact.predict_quantiles(X, [0.1, 0.5, 0.9], **kw),
            ),
        ):
            largest = np.abs(grouped_value / exact_value - 1).max()
            rows.append(
                {
                    "distinct lengths": support,
                    "groups read": len(est._grouped(est._distribution(dist))["values"]),
                    "what": name,
                    "exact mean": "",
                    "largest difference": f"{100 * largest:.3f}%",
                    "bound": "",
                }
            )
    return pd.DataFrame(rows)


_MEMORY_SNIPPETS = {
    "baseline (imports, a small fitted model)": "",
    "training step, 64 requests x N=32768": """
m = CostTermsLatencyModule(5, 64, 8, with_prefill=False, position_scale=32768.0)
out = m(torch.randn(64, 5), torch.full((64,), 32768), torch.rand(64))
out["total"].sum().backward()
""",
    "reference padded B x max(N) step, 64 requests x N=32768": """
sys.path.insert(0, BENCH)
from speed import SeedModule
m = SeedModule()
m.padded_totals(torch.randn(64, 5), torch.full((64,), 32768)).sum().backward()
""",
    "predict_total, 10,000 configs at N=32768": """
est.predict_total(big, 32768)
""",
    "predict_positions, 100 configs x 32768 positions": """
est.predict_positions(big[:100], np.arange(1, 32769))
""",
}


def memory_table():
    # A child started from this (large) process inherits its resident-set
    # high-water mark, so ru_maxrss would report the parent's peak: reset the
    # mark (Linux clear_refs "5") and read VmHWM instead.
    setup = f"""
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass


def peak_kib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


BENCH = {str(Path(__file__).resolve().parent)!r}
import resource, sys, numpy as np, torch, json
from sklat import LatencyEstimator
from sklat._module import CostTermsLatencyModule
from sklat.datasets import make_positioned_latency
d = make_positioned_latency(200, max_output_tokens=256, random_state=0)
est = LatencyEstimator(max_epochs=2, random_state=0, device='cpu').fit(
    d.X.to_numpy(), d.y, output_tokens=d.output_tokens)
# Configurations only: one-token requests keep the generator's own memory small.
big = make_positioned_latency(10000, max_output_tokens=1, random_state=1).X.to_numpy()
base = peak_kib()
"""
    rows = {}
    for name, code in _MEMORY_SNIPPETS.items():
        script = (
            setup
            + code
            + """
peak = peak_kib()
print(json.dumps([base, peak]))
"""
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        base, peak = json.loads(out.strip().splitlines()[-1])
        rows[name] = {"peak RSS MiB": peak / 1024, "above baseline MiB": (peak - base) / 1024}
    return pd.DataFrame(rows).T


def default_fit_table(device):
    """Wall time of ``LatencyEstimator(random_state=0).fit`` on 2,000 synthetic
    requests (N up to 1,024) at three noise levels."""
    rows = {}
    for noise in (0.0, 0.05, 0.1):
        data = make_positioned_latency(2000, noise=noise, random_state=0)
        est = LatencyEstimator(random_state=0, device=device)
        start = time.perf_counter()
        est.fit(data.X, data.y, output_tokens=data.output_tokens)
        rows[f"noise {noise:.0%}"] = {
            "fit s": time.perf_counter() - start,
            "epochs": len(est.history_),
            "max N": int(data.output_tokens.max()),
        }
    return pd.DataFrame(rows).T


_SPIN = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def busy_neighbour_table(repeat=3):
    """Default fit of 300 synthetic requests, alone and beside one busy process
    (a spinning Python loop), with ``n_threads="auto"`` (the default) and with
    torch's own thread count (one per core): median of ``repeat`` fits."""
    data = make_positioned_latency(300, noise=0.05, random_state=0)
    cores = torch.get_num_threads()

    def fit_seconds(n_threads):
        times = []
        for _ in range(repeat):
            est = LatencyEstimator(random_state=0, device="cpu", n_threads=n_threads)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(data.X, data.y, output_tokens=data.output_tokens)
            times.append(time.perf_counter() - start)
        return float(np.median(times)), len(est.history_)

    rows = {}
    for label, n_threads in (("auto (default)", "auto"), (f"{cores} (torch's default)", cores)):
        quiet, epochs = fit_seconds(n_threads)
        spinner = subprocess.Popen([sys.executable, "-c", _SPIN])
        try:
            busy, _ = fit_seconds(n_threads)
        finally:
            spinner.kill()
            spinner.wait()
        rows[f"n_threads={label}"] = {
            "quiet s": quiet,
            "one busy process s": busy,
            "busy / quiet": busy / quiet,
            "epochs": epochs,
        }
    return pd.DataFrame(rows).T


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--positions",
        type=int,
        default=2**18,
        help="sum(N) of each training epoch (default 262144)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated: train,infer,decide,support,memory,busy,fit",
    )
    args = parser.parse_args(argv)
    skip = set(args.skip.split(","))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"# sklat speed benchmark on {name} ({args.device}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    if "train" not in skip:
        table, ratios = training_table(args.device, args.positions, args.quick)
        print("\n## Training throughput (equal sum(N) per length distribution)")
        print(table.round(4).to_markdown(index=False))
        print("\nRatios:")
        for k, v in ratios.items():
            print(f"- {k}: {v:.2f}")
    if "infer" not in skip:
        table, ratio = inference_table(200 if args.quick else 3000)
        print("\n## Inference, one configuration (CPU)")
        print(table.round(1).to_markdown())
        print(f"\npredict_budget / raw forward: {ratio:.2f}x")
    if "decide" not in skip:
        print("\n## Decisions with N unknown, one configuration and 100 candidates (CPU)")
        print(decision_table(50 if args.quick else 500).to_markdown(index=False))
    if "support" not in skip:
        times, errors = support_table(20 if args.quick else 200)
        print("\n## Decisions as the output-length distribution widens (CPU)")
        print(times.to_markdown(index=False))
        print("\n## Reading it in groups against length by length")
        print(errors.to_markdown(index=False))
    if "memory" not in skip:
        print("\n## Peak memory, N = 32768 (CPU, separate processes)")
        print(memory_table().round(1).to_markdown())
    if "busy" not in skip:
        print("\n## Default fit beside a busy process (300 requests, CPU)")
        print(busy_neighbour_table().round(2).to_markdown())
    if "fit" not in skip:
        print("\n## Default fit, 2,000 requests, N up to 1,024")
        print(default_fit_table(args.device).round(2).to_markdown())


if __name__ == "__main__":
    main()
