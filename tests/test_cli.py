"""The ``sklat`` command, driven as a user would."""

import io
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import sklat
from sklat.cli import main
from sklat.control import choose
from sklat.datasets import make_positioned_latency

from .test_io import write_results

FAST = ["--num_epochs", "15", "--quiet"]


def _train(results, output_dir, *options):
    """``sklat train`` on every dataset of ``results``, writing to ``output_dir``."""
    return main(
        [
            "train",
            "--results_dir",
            str(results),
            "--use_all_datasets",
            "--output_dir",
            str(output_dir),
            *options,
        ]
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_results(root)
    return root


@pytest.fixture(scope="module")
def trained(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    # 38 training requests: half of them (19) calibrate intervals up to 95%.
    options = ["--seed", "3407", "--val_fraction", "0.25", "--calibration_fraction", "0.5"]
    assert _train(results, str(out), *options, *FAST) == 0
    return out


def test_train_writes_model_metrics_and_plots(trained):
    files = sorted(p.name for p in trained.iterdir())
    assert files == [
        "coverage.png",
        "latency_curves.png",
        "metrics.json",
        "model.safetensors",
        "total_decode.png",
    ]
    m = json.loads((trained / "metrics.json").read_text())
    assert m["train"]["n_requests"] + m["validation"]["n_requests"] == 50
    assert m["validation"]["n_requests"] == round(0.25 * 50)
    for split in ("train", "validation"):
        for key in (
            "total_decode_mape_pct",
            "total_decode_mae_ms",
            "prefill_mape_pct",
            "prefill_mae_ms",
        ):
            assert np.isfinite(m[split][key]) and m[split][key] >= 0
    assert "positioned_mape_pct" in m["train"]
    # Interval coverage on the held-out requests only.
    intervals = m["validation"]["decode_interval"]
    assert sorted(intervals) == ["0.8", "0.9", "0.95"] and "decode_interval" not in m["train"]
    for v in intervals.values():
        assert 0 <= v["coverage"] <= 1 and v["mean_width_ms"] > 0
    assert 0 <= m["validation"]["n_outside_domain"] <= m["validation"]["n_requests"]
    assert set(m["datasets"]) == {"a", "b"}
    assert "--seed 3407" in m["command"] and m["versions"]["sklat"] == sklat.__version__
    assert m["epochs_run"] <= 15 and m["epochs_run"] == m["epochs_run_per_net"][0]


def test_training_options_reach_the_estimator(results, tmp_path):
    out = tmp_path / "model"
    assert (
        _train(
            results,
            str(out),
            "--config-mlp-weight-decay",
            "0.7",
            "--lr",
            "0.002",
            "--batch-size",
            "16",
            "--num_epochs",
            "2",
            "--context-features",
            "text_tokens",
            "--n-cost-terms",
            "2",
            "--n_folds",
            "2",
            "--point",
            "center",
            "--length_groups",
            "none",
            "--quiet",
        )
        == 0
    )
    est = sklat.load(out / "model.safetensors")
    assert est.n_folds == 2 and len(est.nets_) == 2 and est.point == "center"
    assert est.length_groups is None
    assert (est.config_mlp_weight_decay, est.lr, est.batch_size, est.max_epochs) == (
        0.7,
        0.002,
        16,
        2,
    )
    assert est.context_features == ["text_tokens"] and est.n_cost_terms == 2
    assert list(est.feature_names_in_[est.context_features_]) == ["text_tokens"]
    assert (
        _train(
            results,
            str(out),
            "--num_epochs",
            "1",
            "--context_features",
            "none",
            "--load_features",
            "none",
            "--quiet",
            "--overwrite",
        )
        == 0
    )
    est = sklat.load(out / "model.safetensors")
    assert est.context_features is None and len(est.context_features_) == 0
    assert est.load_features is None and len(est.load_features_) == 0


@pytest.mark.filterwarnings("always::sklearn.exceptions.ConvergenceWarning")
def test_a_warning_is_one_line_in_the_commands_words(results, tmp_path, capsys):
    # Python's format showed the library's file and line and the source line
    # that warned (``_, self._calibrator = fit_objects(...)``).
    assert _train(results, str(tmp_path / "out"), "--num_epochs", "1", "--quiet") == 0
    err = capsys.readouterr().err
    assert re.search(
        r"^sklat train: warning: .*training stopped at max_epochs=1 while the held-out loss "
        r"was still improving.* \(ConvergenceWarning\)$",
        err,
        flags=re.MULTILINE,
    )
    assert ".py:" not in err and "fit_objects" not in err


def test_a_load_column_left_out_of_the_features_is_named(tmp_path, capsys):
    data = make_positioned_latency(60, noise=0.05, max_output_tokens=32, random_state=0)
    frame = data.X.assign(output_tokens=data.output_tokens, **data.y)
    frame["concurrency"] = np.resize([1.0, 2.0, 4.0], len(frame))
    (tmp_path / "res" / "a").mkdir(parents=True)
    frame.to_csv(tmp_path / "res" / "a" / "requests.csv", index=False)
    res = tmp_path / "res"
    assert _train(res, str(tmp_path / "out"), "--load_features", "concurrency", "--quiet") == 2
    assert re.search(
        r"--load_features names 'concurrency', a column of the results that --features "
        r"\(vision_tokens,.*\) leaves out: add it to --features",
        capsys.readouterr().err,
    )
    # By default the load column is found and named, and the model trains without it.
    assert _train(res, str(tmp_path / "out"), *FAST, "--quiet") == 0
    assert (
        "note: the results hold the load column 'concurrency' that --features "
        "(vision_tokens,text_tokens,tier_idx,top_k,num_active_blocks) leaves out, so the "
        "model ignores the load; add it to --features" in capsys.readouterr().err
    )
    assert "concurrency" not in sklat.load(tmp_path / "out" / "model.safetensors").feature_names_in_
    features = ["--features", "text_tokens,concurrency", "--overwrite"]
    assert _train(res, str(tmp_path / "out"), *FAST, *features, "--quiet") == 0
    assert "note:" not in capsys.readouterr().err
    est = sklat.load(tmp_path / "out" / "model.safetensors")
    assert list(est.feature_names_in_[est.load_features_]) == ["concurrency"]


def test_the_loads_of_the_sending_reach_the_prefill_from_the_command_line(tmp_path, capsys):
    data = make_positioned_latency(60, noise=0.05, max_output_tokens=32, random_state=0)
    frame = data.X.assign(output_tokens=data.output_tokens, **data.y)
    frame["concurrency"] = np.resize([1.0, 2.0, 4.0], len(frame))
    frame["in_flight_at_start"] = np.resize([1, 2, 4], len(frame))
    frame["waiting_at_start"] = np.resize([1, 1, 2], len(frame))
    (tmp_path / "res" / "a").mkdir(parents=True)
    frame.to_csv(tmp_path / "res" / "a" / "requests.csv", index=False)
    res, out = tmp_path / "res", tmp_path / "out"
    features = ["--features", "text_tokens,concurrency", "--quiet"]
    named = ["--prefill_load_features", "waiting_at_start"]
    assert _train(res, str(out), *FAST, *features, *named) == 2
    assert re.search(
        r"--prefill_load_features names 'waiting_at_start', a column of the results that "
        r"--features \(text_tokens,concurrency\) leaves out",
        capsys.readouterr().err,
    )
    assert _train(res, str(out), *FAST, *features) == 0
    assert (
        "note: the results hold the load columns 'in_flight_at_start', 'waiting_at_start' "
        "that --features (text_tokens,concurrency) leaves out, so the model ignores the queue "
        "each request joined; add them to --features" in capsys.readouterr().err
    )
    every = "text_tokens,concurrency,in_flight_at_start,waiting_at_start"
    assert _train(res, str(out), *FAST, "--features", every, "--quiet", "--overwrite") == 0
    assert "note:" not in capsys.readouterr().err
    est = sklat.load(out / "model.safetensors")
    names = est.feature_names_in_
    assert list(names[est.decode_load_features_]) == ["concurrency"]
    assert list(names[est.prefill_load_features_]) == ["in_flight_at_start", "waiting_at_start"]
    assert est.prefill_load_features == "auto"
    assert _train(res, str(out), *FAST, "--features", every, *named, "-q", "--overwrite") == 0
    est = sklat.load(out / "model.safetensors")
    assert list(est.feature_names_in_[est.prefill_load_features_]) == ["waiting_at_start"]
    assert est.prefill_load_features == ["waiting_at_start"]


def test_written_model_reloads_and_predicts(trained, results):
    est = sklat.load(trained / "model.safetensors")
    res = sklat.io.load_results(results)
    pred = est.predict_total(res.X, res.output_tokens)
    assert pred.shape == (50,) and (pred > 0).all()


def test_datasets_option_selects(results, tmp_path):
    assert (
        main(
            [
                "train",
                "--results-dir",
                str(results),
                "--datasets",
                "b",
                "--output-dir",
                str(tmp_path),
                *FAST,
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["datasets"] == ["b"]
    assert m["train"]["n_requests"] + m["validation"]["n_requests"] == 20


def test_several_datasets_need_a_choice(results, tmp_path, capsys):
    assert (
        main(["train", "--results_dir", str(results), "--output_dir", str(tmp_path / "o"), *FAST])
        == 2
    )
    assert "pass --use_all_datasets or --datasets a,b" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_row_fails_cleanly(tmp_path, capsys):
    write_results(tmp_path / "res")
    path = tmp_path / "res" / "a" / "part1.csv"
    frame = pd.read_csv(path)
    frame.loc[4, "T_LLM_decode"] = -3.0
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    code = main(
        [
            "train",
            "--results_dir",
            str(tmp_path / "res"),
            "--use_all_datasets",
            "--output_dir",
            str(out),
            *FAST,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "part1.csv: column 'T_LLM_decode' must be positive latencies (> 0); row 5 is -3.0" in err
    assert not out.exists()


def test_predict_prints_positions_totals_prefill(trained, results, tmp_path, capsys):
    configs = pd.read_csv(results / "a" / "part1.csv").head(4)
    configs.to_csv(tmp_path / "c.csv", index=False)
    assert (
        main(
            [
                "predict",
                "--model",
                str(trained),
                str(tmp_path / "c.csv"),
                "--positions",
                "1,5,10,20",
                "--output_tokens",
                "32",
            ]
        )
        == 0
    )
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns[-9:]) == [
        "latency_p1_ms",
        "latency_p5_ms",
        "latency_p10_ms",
        "latency_p20_ms",
        "output_tokens",
        "T_LLM_decode_ms",
        "T_prefill_total_ms",
        "budget_max_ms_per_token",
        "in_domain",
    ]
    est = sklat.load(trained / "model.safetensors")
    X = configs[list(est.feature_names_in_)]
    np.testing.assert_allclose(table["T_LLM_decode_ms"], est.predict_total(X, 32), rtol=1e-4)
    np.testing.assert_allclose(
        table["latency_p5_ms"], est.predict_positions(X, [5])[:, 0], rtol=1e-4
    )


def test_predict_to_file_and_missing_columns(trained, tmp_path, capsys):
    pd.DataFrame({"text_tokens": [10]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["predict", "--model", str(trained), str(tmp_path / "bad.csv")]) == 2
    assert "missing feature column(s)" in capsys.readouterr().err
    assert main(["predict", "--model", str(trained), str(tmp_path / "none.csv")]) == 2
    assert "none.csv does not exist" in capsys.readouterr().err


def test_help_is_complete():
    out = subprocess.run(
        [sys.executable, "-m", "sklat", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in (
        "--results_dir",
        "--use_all_datasets",
        "--datasets",
        "--output_dir",
        "--batch_size",
        "--num_epochs",
        "--max_epochs",
        "--lr",
        "--device",
        "--seed",
        "--prefill_weight",
        "--decode_total_weight",
        "--positioned_weight",
        "--val_fraction",
        "--holdout_fraction",
        "--validation_fraction",
        "--overwrite",
        "--n_threads",
        "--config_mlp_weight_decay",
        "--results-dir",
    ):
        assert option in out
    out = subprocess.run(
        [sys.executable, "-m", "sklat", "predict", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--model", "--positions", "--output_tokens", "--budget_strategy", "configs"):
        assert option in out


def test_console_script_runs_demo(tmp_path):
    # The README's main job, on the bundled demo data.
    proc = subprocess.run(
        ["sklat", "train", "--output_dir", str(tmp_path / "demo"), "--num_epochs", "3"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation total-decode MAPE" in proc.stdout
    assert (tmp_path / "demo" / "model.safetensors").exists()


def test_predict_writes_file(trained, results, tmp_path):
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(trained / "model.safetensors"),
                str(results / "b" / "x.jsonl"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    assert len(table) == 20 and "T_LLM_decode_ms" in table and "output_tokens" in table


def test_held_out_requests_are_whole_measurements():
    # 40 configurations measured 3 times: the validation metrics are those of
    # measurements the model never saw, none of them a repeat of a training one.
    from sklearn.utils import Bunch

    from sklat._cli.train import _split

    rng = np.random.RandomState(0)
    rows = np.repeat(np.arange(40), 3)
    X = pd.DataFrame(rng.uniform(1, 9, (40, 2)), columns=["a", "b"]).iloc[rows]
    res = Bunch(X=X, output_tokens=rng.randint(1, 99, 40)[rows])
    train, held_out = _split(res, 0.2, seed=0)
    assert len(held_out) == 24 and len(train) == 96
    assert not set(rows[train]) & set(rows[held_out])


@pytest.mark.parametrize(
    "fraction, message",
    [
        ("1.5", r"--holdout_fraction must be in \[0, 1\); got 1.5"),
        ("0.99", r"--holdout_fraction 0.99 leaves too few training requests out of 50"),
    ],
)
def test_bad_val_fraction(results, tmp_path, capsys, fraction, message):
    assert _train(results, str(tmp_path), "--val_fraction", fraction, *FAST) == 2
    assert re.search(message, capsys.readouterr().err)


def test_estimator_options_share_the_estimators_defaults_and_names():
    from sklat._cli._options import ESTIMATOR_OPTIONS
    from sklat.cli import build_parser

    args = build_parser().parse_args(["train", "--output_dir", "x"])
    defaults = sklat.LatencyEstimator().get_params()
    for name in ESTIMATOR_OPTIONS:
        assert getattr(args, name) == defaults[name], name
    for spelling in ("--num_epochs", "--max_epochs", "--max-epochs"):
        assert (
            build_parser().parse_args(["train", "--output_dir", "x", spelling, "7"]).max_epochs == 7
        )
    args = build_parser().parse_args(
        ["train", "--output_dir", "x", "--val_fraction", "0.3", "--validation_fraction", "0.2"]
    )
    assert (args.holdout_fraction, args.validation_fraction) == (0.3, 0.2)


def _no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(sklat.LatencyEstimator, "fit", fail)


def test_output_dir_is_checked_before_training(results, tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.txt").write_text("keep me")
    a_file = tmp_path / "file"
    a_file.write_text("")
    for out, message in (
        (used, "exists and is not empty; pass --overwrite"),
        (a_file, "exists and is not a folder"),
    ):
        assert _train(results, str(out), *FAST) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert (used / "old.txt").read_text() == "keep me"


def test_overwrite_writes_into_an_existing_folder(results, tmp_path):
    (tmp_path / "old.txt").write_text("")
    assert _train(results, str(tmp_path), "--overwrite", "--num_epochs", "2", "-q") == 0
    assert (tmp_path / "model.safetensors").exists()


def test_quiet_still_prints_the_final_metrics_and_logs_carry_no_colour(results, tmp_path, capsys):
    assert _train(results, str(tmp_path / "q"), "--num_epochs", "2", "-q") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "validation total-decode MAPE" in out
    assert _train(results, str(tmp_path / "v"), "--num_epochs", "2") == 0
    out = capsys.readouterr().out
    assert "train_loss" in out and "\x1b[" not in out


def test_interrupted_training_writes_nothing(results, tmp_path, capsys, monkeypatch):
    from sklat import _net

    real, calls = _net.LatencyNet.train_step, {"n": 0}

    def interrupt_third_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(_net.LatencyNet, "train_step", interrupt_third_step)
    out = tmp_path / "run"
    assert _train(results, str(out), "--num_epochs", "50", "-q") == 130
    assert "interrupted; nothing was written" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_predict_budget_strategy_and_the_n_it_used(trained, results, tmp_path, capsys):
    configs = pd.read_csv(results / "a" / "part1.csv").head(3).drop(columns="output_tokens")
    configs.to_csv(tmp_path / "c.csv", index=False)
    assert (
        main(
            [
                "predict",
                "--model",
                str(trained),
                str(tmp_path / "c.csv"),
                "--budget_strategy",
                "expectation",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out))
    est = sklat.load(trained / "model.safetensors")
    X = configs[list(est.feature_names_in_)]
    np.testing.assert_allclose(
        table["budget_expectation_ms_per_token"], est.predict_budget(X, "expectation"), rtol=1e-4
    )
    assert "output_tokens" not in table
    assert "no output_tokens given" in captured.err and "mean N =" in captured.err


@pytest.mark.parametrize(
    "edit, args, message",
    [
        (
            lambda f: f.__setitem__("top_k", [1.0, np.nan, 2.0]),
            [],
            r"c.csv: column 'top_k' must be finite \(no NaN or inf\); row 2 is nan",
        ),
        (
            lambda f: f.__setitem__("output_tokens", [1, 2, 1e19]),
            [],
            r"c.csv: column 'output_tokens' must be <= 1048576 .*; row 3 is 1e\+19",
        ),
        (lambda f: None, ["--output_tokens", "1000000000"], r"--output_tokens must be <= 1048576"),
        (
            lambda f: None,
            ["--output", "/nonexistent/x.csv"],
            r"--output /nonexistent/x.csv: the folder /nonexistent does not exist",
        ),
    ],
)
def test_predict_errors_are_one_line_with_rows_from_1(
    trained, results, tmp_path, capsys, edit, args, message
):
    configs = pd.read_csv(results / "a" / "part1.csv").head(3)
    edit(configs)
    configs.to_csv(tmp_path / "c.csv", index=False)
    assert main(["predict", "--model", str(trained), str(tmp_path / "c.csv"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err


def test_results_folder_oddities_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "res" / "a").mkdir(parents=True)
    (tmp_path / "res" / "a" / "x.jsonl").write_text('{"text_tokens": 1}\n{"text_tok')
    assert (
        main(
            [
                "train",
                "--results_dir",
                str(tmp_path / "res"),
                "--output_dir",
                str(tmp_path / "out"),
                "-q",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "x.jsonl, line 2: not a JSON object" in err and len(err.splitlines()) == 1


def test_predict_interval_and_domain_columns(trained, results, tmp_path, capsys):
    configs = pd.read_csv(results / "a" / "part1.csv").head(3)
    est = sklat.load(trained / "model.safetensors")
    configs.loc[2, "text_tokens"] = 1e7  # far outside the training range
    configs.to_csv(tmp_path / "c.csv", index=False)
    args = ["predict", "--model", str(trained), str(tmp_path / "c.csv"), "--interval", "0.8"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing reaches the user as a Python warning
        assert main(args) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out))
    assert table["in_domain"].tolist() == [True, True, False]
    assert "1 of 3 rows lie outside the training range" in captured.err
    X = configs[list(est.feature_names_in_)]
    n = configs["output_tokens"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklat.ExtrapolationWarning)
        decode = est.predict_interval(X, n, confidence=0.8)
        prefill = est.predict_interval(X, target="prefill", confidence=0.8)
    np.testing.assert_allclose(table["T_LLM_decode_lower_ms"], decode[:, 0], rtol=1e-4)
    np.testing.assert_allclose(table["T_LLM_decode_upper_ms"], decode[:, 1], rtol=1e-4)
    np.testing.assert_allclose(table["T_prefill_total_lower_ms"], prefill[:, 0], rtol=1e-4)
    assert np.isfinite(table.select_dtypes("number").to_numpy()).all()


@pytest.mark.parametrize(
    "confidence, message",
    [("1.5", r"--interval must be a number in \(0, 1\)"), ("0.99", "needs at least 99")],
)
def test_predict_interval_errors(trained, results, tmp_path, capsys, confidence, message):
    pd.read_csv(results / "a" / "part1.csv").head(2).to_csv(tmp_path / "c.csv", index=False)
    args = ["predict", "--model", str(trained), str(tmp_path / "c.csv"), "--interval", confidence]
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)


def test_choose_prints_the_chosen_row_and_writes_every_attainment(
    trained, results, tmp_path, capsys
):
    candidates = pd.read_csv(results / "a" / "part1.csv").head(6)
    candidates["quality"] = [0.3, 0.9, 0.1, 0.8, 0.5, 0.2]
    path = tmp_path / "cands.csv"
    candidates.to_csv(path, index=False)
    # Without --output only the chosen row is printed: the same line runs again.
    loose = ["choose", "--model", str(trained), str(path), "--tpot_ms", "1e6"]
    for _ in range(2):
        assert main([*loose, "--prefer", "quality"]) == 0
        alone = capsys.readouterr()
        assert "wrote" not in alone.err
        assert pd.read_csv(io.StringIO(alone.out))["row"].tolist() == [2]  # best quality
    assert not list(tmp_path.glob("*_attainment.csv"))
    args = ["choose", "--model", str(trained), str(path), "--tpot_ms", "40"]
    table_path = tmp_path / "cands_attainment.csv"
    args += ["--output", str(table_path)]
    status = main([*args, "--min_attainment", "0.5", "--prefer", "quality"])
    captured = capsys.readouterr()
    chosen = pd.read_csv(io.StringIO(captured.out))
    table = pd.read_csv(table_path)
    assert f"wrote 6 attainments to {table_path}" in captured.err
    est = sklat.load(trained / "model.safetensors")
    features = candidates[list(est.feature_names_in_)]
    # The candidates' output_tokens column gives N.
    expected = choose(est, candidates, tpot_ms=40.0, min_attainment=0.5, prefer="quality")
    np.testing.assert_allclose(table["attainment"], expected.attainment, rtol=1e-5)
    assert table["chosen"].tolist() == [i == expected.index for i in range(6)]
    assert len(chosen) == 1 and chosen["row"][0] == expected.index + 1
    assert bool(chosen["met"][0]) == expected.met and status == (0 if expected.met else 1)
    assert list(features.columns) == list(est.feature_names_in_)
    # An existing output is kept unless --overwrite.
    assert main([*args, "--prefer", "quality"]) == 2
    assert "cands_attainment.csv exists; pass --overwrite" in capsys.readouterr().err
    # Out of reach: the most likely row is printed, and the exit status says so.
    assert main([*args, "--prefer", "quality", "--overwrite", "--tpot_ms", "0.001"]) == 1
    captured = capsys.readouterr()
    assert "no candidate reaches attainment 0.9" in captured.err
    assert not pd.read_csv(io.StringIO(captured.out))["met"][0]


def test_choose_errors(trained, results, tmp_path, capsys):
    candidates = pd.read_csv(results / "a" / "part1.csv").head(3)
    path = tmp_path / "c.csv"
    candidates.to_csv(path, index=False)
    base = ["choose", "--model", str(trained), str(path), "--output", str(tmp_path / "o.csv")]
    assert main([*base, "--tpot_ms", "40", "--prefer", "quality"]) == 2
    assert "no column 'quality'" in capsys.readouterr().err
    assert main(base) == 2
    assert "give at least one objective" in capsys.readouterr().err


def _slower_results(folder, factor):
    """The test results written to ``folder`` with every decode ``factor``
    times slower (totals only)."""
    write_results(folder)
    for path in folder.rglob("*.csv"):
        frame = pd.read_csv(path)
        frame["T_LLM_decode"] *= factor
        frame["T_decode_per_token_avg"] *= factor
        frame.drop(columns=[c for c in frame if c == "T_decode_per_step"]).to_csv(path, index=False)
    return folder


def test_recalibrate_writes_an_adapted_model(trained, tmp_path, capsys):
    # The new setting: the same requests, decode 1.5x slower.
    new = _slower_results(tmp_path / "new", 1.5)
    out = tmp_path / "moved"
    args = ["recalibrate", "--model", str(trained), "--results_dir", str(new)]
    assert main([*args, "--use_all_datasets", "--output_dir", str(out)]) == 0
    line = capsys.readouterr().out
    assert "requests; decode multipliers (flat, context, shape)" in line
    report = json.loads((out / "recalibration.json").read_text())
    assert report["total_decode_mape_pct_cross_fitted"] < report["total_decode_mape_pct_before"]
    moved = sklat.load(out / "model.safetensors")
    assert report["cost_scales"] == moved.cost_scales_.tolist()
    assert report["scale_slopes"]["decode"] == moved.scale_slopes_[0].tolist()
    original = sklat.load(trained / "model.safetensors")
    assert (original.cost_scales_ == 1).all()
    # Fitted on the slower measurements: no bias left in log terms (the
    # centre; the relative point sits below it by the refitted factor).
    res = sklat.io.load_results(new, features=list(moved.feature_names_in_))
    centre = moved.set_params(point="center").predict_total(res.X, res.output_tokens)
    log_ratio = np.log(centre / res.y["T_LLM_decode"])
    assert abs(log_ratio.mean()) < 0.01
    assert main([*args, "--use_all_datasets", "--output_dir", str(out)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--output_dir", str(tmp_path / "other")]) == 2
    assert "holds several datasets" in capsys.readouterr().err


def test_check_exits_1_on_drift_and_0_without(trained, results, tmp_path, capsys):
    args = ["check", "--model", str(trained), "--use_all_datasets"]
    assert main([*args, "--results_dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sklat check: no drift at alpha=0.01 (p = ")
    assert "outside the 90% intervals" in out and "output_tokens" in out
    slow = _slower_results(tmp_path / "slow", 3.0)
    assert main([*args, "--results_dir", str(slow)]) == 1
    assert capsys.readouterr().out.startswith("sklat check: DRIFT at alpha=0.01")
    assert main([*args, "--results_dir", str(slow), "--alpha", "2"]) == 2
    assert "alpha must be a number in (0, 1), e.g. 0.01; got 2.0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["capacity", "--model", "m", "c.csv", "--tpot_ms", "5", "--levels", "1,,4"],
            "argument --levels: expected comma-separated numbers, got '1,,4' (entry 2 is empty)",
        ),
        (
            ["profile", "--output_dir", "o", "--output_tokens", "16,32,"],
            "expected comma-separated integers, got '16,32,' (entry 3 is empty)",
        ),
        (
            ["train", "--results_dir", "r", "--features", "text_tokens,,top_k"],
            "expected comma-separated entries, got 'text_tokens,,top_k' (entry 2 is empty)",
        ),
    ],
)
def test_an_empty_entry_of_a_list_option_is_refused(args, message, capsys):
    # "1,,4" is a slip of the keyboard; dropping the empty entry would sweep
    # or read something else than asked, silently.
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_position_listed_twice_is_refused(capsys):
    # Both would be the column latency_p1_ms: the table held one of them.
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", "m", "c.csv", "--positions", "1,5,1"])
    assert exit_info.value.code == 2
    assert "argument --positions: 1 is listed twice in '1,5,1'" in capsys.readouterr().err
