"""The service's metrics in the Prometheus text format (version 0.0.4):
calls and their service latency, observations, the model version and what
the online updates found."""

import bisect
import threading
import time

# Upper bounds (seconds) of the service-latency histogram's buckets.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters the service updates and :meth:`render` writes out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._calls = {}  # (route, status) -> count
        self._latency = {}  # route -> [bucket counts..., +Inf], sum
        self.observations = 0
        self.updates = {"recalibrate": 0, "refit": 0}
        self.update_failures = 0
        self.last_error = None
        self.drift_p_value = None
        self.window_coverage = None
        self.started = time.time()

    def call(self, route, status, seconds):
        with self._lock:
            key = (route, int(status))
            self._calls[key] = self._calls.get(key, 0) + 1
            counts, total = self._latency.get(route, ([0] * (len(_BUCKETS) + 1), 0.0))
            counts[bisect.bisect_left(_BUCKETS, seconds)] += 1
            self._latency[route] = (counts, total + seconds)

    def updated(self, result):
        with self._lock:
            self.updates[result["action"]] += 1
            self.drift_p_value = result["p_value"]
            self.window_coverage = result["coverage"]

    def update_failed(self, error):
        with self._lock:
            self.update_failures += 1
            self.last_error = error

    def render(self, model_version):
        """The text of ``/metrics``, the model answering calls being ``model_version``."""
        lines = []

        def family(name, kind, text):
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("sklat_requests_total", "counter", "Calls answered, by route and status.")
            for (route, status), count in sorted(self._calls.items()):
                lines.append(f'sklat_requests_total{{route="{route}",status="{status}"}} {count}')
            family(
                "sklat_request_duration_seconds",
                "histogram",
                "Service latency of the calls, by route.",
            )
            for route, (counts, total) in sorted(self._latency.items()):
                running = 0
                for bound, count in zip((*_BUCKETS, "+Inf"), counts):
                    running += count
                    le = bound if bound == "+Inf" else repr(bound)
                    lines.append(
                        f'sklat_request_duration_seconds_bucket{{route="{route}",le="{le}"}} '
                        f"{running}"
                    )
                lines.append(f'sklat_request_duration_seconds_sum{{route="{route}"}} {total!r}')
                lines.append(f'sklat_request_duration_seconds_count{{route="{route}"}} {running}')
            family("sklat_observations_total", "counter", "Observations written durably.")
            lines.append(f"sklat_observations_total {self.observations}")
            family("sklat_model_version", "gauge", "Version of the model answering calls.")
            lines.append(f"sklat_model_version {model_version}")
            family("sklat_updates_total", "counter", "Online updates made, by action.")
            for action, count in sorted(self.updates.items()):
                lines.append(f'sklat_updates_total{{action="{action}"}} {count}')
            family("sklat_update_failures_total", "counter", "Online updates that failed.")
            lines.append(f"sklat_update_failures_total {self.update_failures}")
            if self.drift_p_value is not None:
                family(
                    "sklat_drift_p_value",
                    "gauge",
                    "p-value of the last drift check of the newest observations.",
                )
                lines.append(f"sklat_drift_p_value {self.drift_p_value!r}")
                family(
                    "sklat_window_coverage",
                    "gauge",
                    "Share of the window's decode totals inside the served model's 90% intervals.",
                )
                lines.append(f"sklat_window_coverage {self.window_coverage!r}")
        return "\n".join(lines) + "\n"
