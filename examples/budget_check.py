"""Pick, per request, the richest configuration that fits a latency budget.

A serving stack knows the configuration options but not the output length. The
conservative budget strategy takes the worst per-token latency over probe positions.

Run: ``python examples/budget_check.py``.
"""

import itertools

import pandas as pd

from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency

data = make_positioned_latency(1000, noise=0.05, random_state=0)
est = LatencyEstimator(random_state=0).fit(data.X, data.y, output_tokens=data.output_tokens)

# Candidate configurations for one request with 300 text tokens.
tiers = {0: 0, 1: 64, 2: 256, 3: 576}
candidates = pd.DataFrame(
    [
        {
            "vision_tokens": tiers[t],
            "text_tokens": 300,
            "tier_idx": t,
            "top_k": k,
            "num_active_blocks": b,
        }
        for t, k, b in itertools.product(tiers, [1, 2, 4, 8], [16, 24, 32])
    ]
)
candidates["prefill_ms"] = est.predict_prefill(candidates)
for strategy in ("max", "position", "expectation"):
    candidates[f"{strategy}_ms_per_token"] = est.predict_budget(
        candidates[list(data.X.columns)], strategy
    )

budget = 40.0  # ms per token
fits = candidates[candidates["max_ms_per_token"] <= budget]
print(
    f"{len(fits)} of {len(candidates)} configurations fit {budget} ms/token "
    "(conservative strategy); the richest ones:"
)
print(
    fits.sort_values(["tier_idx", "top_k", "num_active_blocks"])
    .tail(5)
    .round(2)
    .to_string(index=False)
)
