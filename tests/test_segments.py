"""Decode segments: the fit API, the results format and sklat train."""

import json

import numpy as np
import pandas as pd
import pytest

from sklat import LatencyEstimator
from sklat.cli import main
from sklat.datasets import make_positioned_latency
from sklat.io import ResultsFormatError, load_results, write_results
from sklat.metrics import positioned_mape, segment_mape

from ._benchmark_files import vllm_run, write_sglang, sglang_run, write_vllm

FAST = dict(max_epochs=8, hidden_size=16, random_state=0, calibration_fraction=0)


@pytest.fixture(scope="module")
def data():
    return make_positioned_latency(80, noise=0.02, positioned_fraction=0.5, random_state=3)


def _as_segments(steps, size):
    """Group per-step latencies into segments of ``size`` tokens (the last shorter)."""
    if steps is None:
        return None
    steps = np.asarray(steps)
    edges = np.arange(0, len(steps), size)
    return np.diff(np.append(edges, len(steps))), np.add.reduceat(steps, edges)


def test_one_token_segments_train_exactly_like_per_step_lists(data):
    a = LatencyEstimator(**FAST).fit(
        data.X,
        data.y,
        output_tokens=data.output_tokens,
        positioned_latencies=data.positioned_latencies,
    )
    segments = [_as_segments(s, 1) for s in data.positioned_latencies]
    b = LatencyEstimator(**FAST).fit(
        data.X, data.y, output_tokens=data.output_tokens, decode_segments=segments
    )
    positions = np.arange(1, 60)
    np.testing.assert_array_equal(
        a.predict_positions(data.X, positions), b.predict_positions(data.X, positions)
    )


def test_segments_change_the_fit_and_are_deterministic(data):
    segments = [_as_segments(s, 4) for s in data.positioned_latencies]
    kwargs = dict(output_tokens=data.output_tokens, decode_segments=segments)
    a = LatencyEstimator(**FAST).fit(data.X, data.y, **kwargs)
    b = LatencyEstimator(**FAST).fit(data.X, data.y, **kwargs)
    totals_only = LatencyEstimator(**FAST).fit(data.X, data.y, output_tokens=data.output_tokens)
    positions = np.arange(1, 40)
    np.testing.assert_array_equal(
        a.predict_positions(data.X, positions), b.predict_positions(data.X, positions)
    )
    assert not np.allclose(
        a.predict_positions(data.X, positions), totals_only.predict_positions(data.X, positions)
    )


def test_segments_route_through_a_pipeline_and_grid_search(data):
    from sklearn import config_context
    from sklearn.model_selection import GridSearchCV

    segments = [_as_segments(s, 3) for s in data.positioned_latencies]
    with config_context(enable_metadata_routing=True):
        est = LatencyEstimator(**FAST).set_fit_request(output_tokens=True, decode_segments=True)
        est.set_score_request(output_tokens=True)
        search = GridSearchCV(est, {"positioned_weight": [0.5, 1.0]}, cv=2)
        search.fit(data.X, data.y, output_tokens=data.output_tokens, decode_segments=segments)
    assert search.best_params_["positioned_weight"] in (0.5, 1.0)


@pytest.mark.parametrize(
    "entry, match",
    [
        (([1, 2], [1.0]), r"decode_segments\[0\] has 2 token counts but 1 times"),
        (([1, 1], [1.0, 1.0]), r"decode_segments\[0\] tokens sum to 2 but output_tokens is \d+"),
        (([0, "x"], [1.0, 1.0]), r"decode_segments\[0\] tokens must be numeric"),
        (([0.5], [1.0]), r"decode_segments\[0\] tokens must be integers; segment 1 is 0.5"),
        (([], []), r"decode_segments\[0\] has no segments; use None"),
        ("12", r"decode_segments\[0\] must be None or a pair \(tokens, ms\)"),
        (([[1]], [[1.0]]), r"decode_segments\[0\] must hold two 1-D lists"),
    ],
)
def test_bad_segments_are_refused_by_sample(data, entry, match):
    segments = [None] * len(data.X)
    segments[0] = entry
    with pytest.raises((ValueError, TypeError), match=match):
        LatencyEstimator(**FAST).fit(
            data.X, data.y, output_tokens=data.output_tokens, decode_segments=segments
        )


def test_bad_segment_times_name_the_segment(data):
    n = int(data.output_tokens[0])
    segments = [None] * len(data.X)
    segments[0] = ([n], [-1.0])
    with pytest.raises(ValueError, match=r"decode_segments\[0\] ms must be positive .*segment 1"):
        LatencyEstimator(**FAST).fit(
            data.X, data.y, output_tokens=data.output_tokens, decode_segments=segments
        )


def test_per_step_and_segments_for_one_request_is_refused(data):
    i = next(i for i, s in enumerate(data.positioned_latencies) if s is not None)
    segments = [None] * len(data.X)
    segments[i] = _as_segments(data.positioned_latencies[i], 2)
    with pytest.raises(ValueError, match=rf"sample {i} has both positioned_latencies and"):
        LatencyEstimator(**FAST).fit(
            data.X,
            data.y,
            output_tokens=data.output_tokens,
            positioned_latencies=data.positioned_latencies,
            decode_segments=segments,
        )
    with pytest.raises(ValueError, match=r"decode_segments has 3 entries but X has 80 samples"):
        LatencyEstimator(**FAST).fit(
            data.X, data.y, output_tokens=data.output_tokens, decode_segments=[None] * 3
        )


def test_segment_mape_with_one_token_segments_is_positioned_mape(data):
    rows = [i for i, s in enumerate(data.positioned_latencies) if s is not None][:5]
    steps = [data.positioned_latencies[i] for i in rows]
    pred = [np.asarray(s) * 1.1 for s in steps]
    one = [_as_segments(s, 1) for s in steps]
    assert segment_mape(one, pred) == pytest.approx(positioned_mape(steps, pred))
    with pytest.raises(ValueError, match=r"request 0: \d+ positions expected, y_pred has 1"):
        segment_mape(one, [np.ones(1)] * 5)
    with pytest.raises(ValueError, match=r"segments\[0\] ms must be positive .*segment 2"):
        segment_mape([([1, 1], [1.0, -1.0])], [np.ones(2)])


# ----------------------------------------------------------- results format
def _results_frame():
    d = make_positioned_latency(12, noise=0.0, positioned_fraction=1.0, random_state=0)
    frame = d.frame.drop(columns="T_decode_per_step")
    segments = [_as_segments(s, 3) for s in d.positioned_latencies]
    frame["T_decode_segment_tokens"] = [s[0] for s in segments]
    frame["T_decode_segment_ms"] = [s[1] for s in segments]
    return frame, segments


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_segments_round_trip_through_every_file_type(tmp_path, suffix):
    frame, segments = _results_frame()
    frame["request_rate"] = float("inf")  # as SGLang records an unlimited rate
    write_results(frame, tmp_path / f"requests{suffix}")
    res = load_results(tmp_path)
    assert (res.frame["request_rate"] == float("inf")).all()
    for (tokens, ms), (t, m) in zip(res.decode_segments, segments):
        np.testing.assert_array_equal(tokens, t)
        np.testing.assert_allclose(ms, m)
    assert all(s is None for s in res.positioned_latencies)


def test_results_file_segment_errors_name_file_row_and_column(tmp_path):
    frame, _ = _results_frame()
    bad = frame.copy()
    bad["T_decode_segment_ms"] = [list(np.asarray(m) * 1.5) for m in bad["T_decode_segment_ms"]]
    write_results(bad, tmp_path / "a.csv")
    with pytest.raises(
        ResultsFormatError,
        match=r"a.csv, row 1, column 'T_decode_segment_ms': segment times sum to .* but "
        r"T_LLM_decode is",
    ):
        load_results(tmp_path)
    write_results(frame.drop(columns="T_decode_segment_ms"), tmp_path / "a.csv")
    with pytest.raises(
        ResultsFormatError,
        match=r"column 'T_decode_segment_tokens' without 'T_decode_segment_ms'",
    ):
        load_results(tmp_path)
    bad = frame.copy()
    bad["T_decode_segment_tokens"] = [
        list(t[:-1]) + [t[-1] + 1] for t in bad["T_decode_segment_tokens"]
    ]
    write_results(bad, tmp_path / "a.csv")
    with pytest.raises(ResultsFormatError, match=r"row 1, column 'decode segments' tokens sum to"):
        load_results(tmp_path)
    both = frame.copy()
    both["T_decode_per_step"] = [json.dumps([1.0] * n) for n in frame["output_tokens"]]
    write_results(both, tmp_path / "a.csv")
    with pytest.raises(ResultsFormatError, match=r"row \d+, column 'T_decode_"):
        load_results(tmp_path)


# ------------------------------------------------------ import, train, predict
def test_import_train_predict_from_the_command_line(tmp_path, capsys):
    vllm = write_vllm(tmp_path / "vllm.json", [vllm_run(), vllm_run(max_concurrency=4)])
    sglang = write_sglang(tmp_path / "sglang.jsonl", [sglang_run(), sglang_run()])
    results = tmp_path / "results"
    assert (
        main(
            ["import", str(vllm), str(sglang), "--output_dir", str(results)]
            + [
                "--set",
                "vision_tokens=0",
                "tier_idx=0",
                "top_k=2",
                "num_active_blocks=32",
                "gpu=h100",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"sklat import: {vllm} [vllm]: 10 read, 6 imported (2 with segments")
    assert "2 errored (kept out), 2 kept out (one output token: no decode step)" in out[0]
    assert out[1].startswith(
        f"sklat import: {sglang} [sglang]: 10 read, 6 imported (6 with segments"
    )
    frame = pd.read_csv(results / "imported" / "vllm.csv")
    assert set(frame["gpu"]) == {"h100"} and set(frame["top_k"]) == {2}
    # A second import into the same folder is refused, then allowed.
    assert main(["import", str(vllm), "--output_dir", str(results)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (
        main(
            ["train", "--results_dir", str(results), "--output_dir", str(tmp_path / "m")]
            + ["--features", "text_tokens", "--num_epochs", "5", "--quiet"]
            + ["--calibration_fraction", "0", "--holdout_fraction", "0.25"]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["train"]["n_requests_with_segments"] > 0
    assert metrics["train"]["segment_mape_pct"] > 0
    configs = tmp_path / "configs.csv"
    pd.DataFrame({"text_tokens": [128, 512]}).to_csv(configs, index=False)
    assert (
        main(["predict", "--model", str(tmp_path / "m"), str(configs), "--positions", "1,8"]) == 0
    )


def test_import_set_clash_and_bad_set_are_refused(tmp_path, capsys):
    vllm = write_vllm(tmp_path / "vllm.json", [vllm_run()])
    out = tmp_path / "r"
    assert main(["import", str(vllm), "--output_dir", str(out), "--set", "text_tokens=5"]) == 2
    assert "--set text_tokens: " in capsys.readouterr().err
    assert main(["import", str(vllm), "--output_dir", str(out), "--set", "top_k"]) == 2
    assert "expected COLUMN=VALUE" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "given, message",
    [
        (["top_k=true"], "--set top_k=true: expected a finite number or a name"),
        (["top_k=1", "top_k=2"], "--set top_k is given twice (1 and '2')"),
        (["top_k=abc"], "--set top_k=abc: top_k is a configuration feature; expected a finite"),
        (["gpu="], "--set gpu=: empty value"),
        (["top_k=NaN"], "--set top_k=NaN: expected a finite number"),
        (["gpu=null"], "--set gpu=null: expected a finite number or a name"),
        (["tier_idx=Infinity"], "--set tier_idx=Infinity: expected a finite number"),
        (["top_k=1e999"], "--set top_k=1e999: expected a finite number"),
        (["top_k=[1,2]"], "--set top_k=[1,2]: expected a finite number or a name"),
    ],
)
def test_import_set_values_are_checked_before_anything_is_written(tmp_path, capsys, given, message):
    vllm = write_vllm(tmp_path / "vllm.json", [vllm_run()])
    out = tmp_path / "r"
    assert main(["import", str(vllm), "--output_dir", str(out), "--set", *given]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_import_writes_each_file_whole_or_not_at_all(tmp_path, capsys, monkeypatch):
    import os

    first = write_vllm(tmp_path / "first.json", [vllm_run()])
    second = write_vllm(tmp_path / "second.json", [vllm_run(max_concurrency=4)])
    out = tmp_path / "r"
    assert main(["import", str(first), str(second), "--output_dir", str(out)]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (out / "imported").iterdir()}
    # Ctrl-C as the whole files are put in place: every target stays as it
    # was, and no temporary is left behind.
    real = os.replace

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    args = ["import", str(first), str(second), "--output_dir", str(out), "--overwrite"]
    assert main([*args, "--set", "gpu=h100"]) == 130
    monkeypatch.setattr(os, "replace", real)
    assert {p.name: p.read_bytes() for p in (out / "imported").iterdir()} == before
    # A target that is a folder is refused before anything is replaced.
    (out / "imported" / "second.csv").unlink()
    (out / "imported" / "second.csv").mkdir()
    assert main([*args, "--set", "gpu=h100"]) == 2
    assert "second.csv exists and is not a file" in capsys.readouterr().err
    assert (out / "imported" / "first.csv").read_bytes() == before["first.csv"]
