"""Names and limits shared by the estimator, the results reader, the command
line and the profiler: one place to read them, one place to change them."""

# The error measures of LatencyEstimator's loss (see :mod:`sklat._loss`).
LOSS_KINDS = ("log", "relative", "mse")
# What a LatencyEstimator's point predictions are (its ``point`` parameter):
# the value with the least expected relative error, or the curve's centre.
POINTS = ("relative", "center")

# The model file of a ``sklat train`` output folder.
MODEL_FILE = "model.safetensors"

# Columns of the results format (see :mod:`sklat.io`) and of ``y``.
PREFILL_COL = "T_prefill_total"
DECODE_COL = "T_LLM_decode"
OUTPUT_TOKENS_COL = "output_tokens"
PER_STEP_COL = "T_decode_per_step"
# Timed decode segments: tokens per segment and its time (ms), lists that
# cover positions 1..output_tokens in order (see LatencyEstimator.fit's
# decode_segments).
SEGMENT_TOKENS_COL = "T_decode_segment_tokens"
SEGMENT_MS_COL = "T_decode_segment_ms"
# Columns that hold a list per request.
LIST_COLUMNS = (PER_STEP_COL, SEGMENT_TOKENS_COL, SEGMENT_MS_COL)
AVG_COL = "T_decode_per_token_avg"

# The design document's configuration features.
DEFAULT_FEATURES = ("vision_tokens", "text_tokens", "tier_idx", "top_k", "num_active_blocks")
# Features whose sum is the prompt length when ``context_features="auto"``.
AUTO_CONTEXT_FEATURES = ("vision_tokens", "text_tokens")
# Features that measure the load when ``load_features="auto"``: the requests
# in flight that the profilers and importers record.
AUTO_LOAD_FEATURES = ("concurrency",)
# The loads of the prefill when ``prefill_load_features="auto"``: what the
# profilers record of the instant a request was sent (the requests in flight,
# and those of them still waiting for their first token); without them the
# prefill sees the decode's loads.
AUTO_PREFILL_LOAD_FEATURES = ("in_flight_at_start", "waiting_at_start")
# The load columns the profilers and importers write, each a count of this
# client's requests that includes the request itself: at least 1 as a load
# feature. A value below 1 is a column of another meaning (the other requests
# only), which the model's levels, capacity and the service would misread.
# Rounding of a time-weighted mean is allowed for.
SELF_COUNTED_LOADS = ("concurrency", *AUTO_PREFILL_LOAD_FEATURES)
SELF_COUNTED_TOLERANCE = 1e-6

# The design document's probe positions of a budget check.
PROBE_POSITIONS = (1, 5, 10, 20)
BUDGET_STRATEGIES = ("max", "position", "expectation")

# Longest output (and highest position) accepted anywhere: bounds the memory
# and time of a request's curve (a float64 curve of this length is 8 MiB).
MAX_OUTPUT_TOKENS = 2**20
# What LatencyEstimator.predict_interval bounds.
INTERVAL_TARGETS = ("total", "per_token", "prefill", "position")
# What LatencyEstimator.predict_quantiles predicts.
QUANTILE_TARGETS = ("total", "per_token", "prefill", "e2e")
