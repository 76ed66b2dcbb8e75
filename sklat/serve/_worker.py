"""The update process of a service (``python -m sklat.serve._worker CONFIG``):
one update per line of standard input, its result as one line of standard
output (see :mod:`sklat.serve._updater` for what an update does)."""

import copy
import json
import os
import sys
import traceback

_COVERAGE_LEVEL = 0.9
# Fewest observations a refit is made from (a recalibration needs fewer).
_MIN_REFIT = 50


def main(argv=None):
    """The background process: one update per line ``{"served_path",
    "version"}`` of standard input until it closes; one result per line on
    standard output."""
    config = json.loads((argv or sys.argv[1:])[0])
    try:
        os.nice(10)
    except OSError:
        pass
    from ._store import load_estimator

    base = load_estimator(config["base_path"])
    # The base model (the start's, or the last refit), drift findings in a
    # row, and the last model made with its path: the service serves it next,
    # so it is not read back from disk.
    state = {"base": base, "streak": 0, "made": (config["base_path"], base)}
    for line in sys.stdin:
        message = json.loads(line)
        try:
            result = _update(
                state,
                message["served_path"],
                message["version"],
                config["observations"],
                config["window"],
                config["update_every"],
                config["drift_alpha"],
                config["drift_patience"],
            )
        except Exception as exc:  # reported; the service goes on with its model
            result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        print(json.dumps(result), flush=True)


def _update(state, served_path, version, observations, window, update_every, alpha, patience):
    import warnings

    from sklearn.base import clone

    from ..control import check_drift
    from ..exceptions import ExtrapolationWarning
    from ..io import _checked_results, _json_lines_frame
    from ..metrics import interval_coverage
    from ..persistence import save
    from ._observations import DATASET, last_lines, log_path
    from ._store import load_estimator, versions_folder

    made_path, made = state["made"]
    served = made if made_path == served_path else load_estimator(served_path)
    features = [str(c) for c in served.feature_names_in_]
    # The window only: an update's cost does not grow with the log.
    log = log_path(observations)
    lines = last_lines(log, window)
    where = f"{log} (the last {len(lines)} lines, counted from 1)"
    res = _checked_results([(_json_lines_frame(lines, where), where, DATASET)], features)
    X, n, y = res.X, res.output_tokens, res.y
    if served.n_outputs_ == 1:
        y = y["T_LLM_decode"]
    decode = res.y["T_LLM_decode"].to_numpy()
    try:  # as the service checks each observation since 0.19.1; a log may be older
        served._check_rows(X, n)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc} Sample i is the window's line i + 1.") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        bounds = served.predict_interval(X, n, confidence=_COVERAGE_LEVEL)
        coverage = float(interval_coverage(decode, bounds))
        recent = slice(max(0, len(X) - max(update_every, 20)), None)
        p_value = float(check_drift(served, X.iloc[recent], y.iloc[recent], n[recent]).p_value)
    state["streak"] = state["streak"] + 1 if p_value < alpha else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if state["streak"] >= patience and len(X) >= _MIN_REFIT:
            model = clone(state["base"]).set_params(n_threads=1, verbose=0)
            model.fit(X, y, output_tokens=n)
            state["base"], state["streak"], action = model, 0, "refit"
        else:
            model = copy.deepcopy(state["base"]).recalibrate(X, y, output_tokens=n)
            action = "recalibrate"
    folder = versions_folder(observations)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"v{version}.safetensors"
    temporary = folder / f".v{version}.safetensors.{os.getpid()}.tmp"
    save(model, temporary)
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)
    state["made"] = (str(path), model)
    return {
        "version": version,
        "path": str(path),
        "action": action,
        "p_value": p_value,
        "coverage": coverage,
        "window": len(X),
    }


if __name__ == "__main__":
    main()
