"""Choose the loss weights with GridSearchCV, routing output_tokens as metadata.

Run: ``python examples/grid_search_loss_weights.py``.
"""

import numpy as np
import pandas as pd
import sklearn
from sklearn.model_selection import GridSearchCV, KFold

from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency

data = make_positioned_latency(400, noise=0.05, positioned_fraction=0.2, random_state=0)
sklearn.set_config(enable_metadata_routing=True)

est = (
    LatencyEstimator(max_epochs=25, random_state=0)
    .set_fit_request(output_tokens=True, positioned_latencies=True)
    .set_score_request(output_tokens=True)
)
grid = {"prefill_weight": [1.0, 2.0], "positioned_weight": [0.0, 0.5]}
search = GridSearchCV(est, grid, cv=KFold(3, shuffle=True, random_state=0))
search.fit(
    data.X, data.y, output_tokens=data.output_tokens, positioned_latencies=data.positioned_latencies
)

results = pd.DataFrame(search.cv_results_)[
    ["param_prefill_weight", "param_positioned_weight", "mean_test_score", "rank_test_score"]
]
print(results.to_string(index=False))
print("best:", search.best_params_, f"R2 = {search.best_score_:.4f}")
assert np.isfinite(search.best_score_)
