"""Wall time of a default fit on 300 synthetic requests and on a measured set.

Run: ``python benchmarks/fit_time.py`` (prints one line of seconds). To compare
with another sklat version, run it with that version first on ``PYTHONPATH``,
alternating, on a quiet machine, e.g. for 0.2.0::

    git worktree add /tmp/sklat020 274b449
    for i in 1 2 3; do
        PYTHONPATH=/tmp/sklat020 python benchmarks/fit_time.py; python benchmarks/fit_time.py
    done
"""

import time

from _common import profiled_requests  # noqa: E402

import sklat  # noqa: E402
from sklat import LatencyEstimator  # noqa: E402
from sklat.datasets import make_positioned_latency  # noqa: E402


def main():
    synthetic = make_positioned_latency(300, noise=0.1, random_state=0)
    measured = profiled_requests("llama_dense_eager")
    times = {}
    for name, data in (
        ("synthetic 300, 10% noise", synthetic),
        ("llama_dense_eager (195)", measured),
    ):
        start = time.perf_counter()
        est = LatencyEstimator(random_state=0, device="cpu").fit(
            data.X, data.y, output_tokens=data.output_tokens
        )
        times[name] = (time.perf_counter() - start, len(est.history_))
    print(
        f"sklat {sklat.__version__}: "
        + "; ".join(
            f"{name} {seconds:.2f} s ({epochs} epochs)" for name, (seconds, epochs) in times.items()
        )
    )


if __name__ == "__main__":
    main()
