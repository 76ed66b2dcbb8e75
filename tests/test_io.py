"""Reading results folders: formats, layouts, and bad rows."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from sklat.datasets import make_positioned_latency
from sklat.io import ResultsFormatError, demo_results_dir, load_results


def _frame(n, seed, steps=0.0):
    return make_positioned_latency(
        n, positioned_fraction=steps, max_output_tokens=64, random_state=seed
    ).frame


def write_results(root, csv_steps=0.5):
    """Two datasets: ``a`` in CSV (per-step as JSON text), ``b`` in JSONL."""
    a = _frame(30, 0, csv_steps)
    a["T_decode_per_step"] = [
        None if s is None else json.dumps(list(s)) for s in a["T_decode_per_step"]
    ]
    (root / "a").mkdir(parents=True)
    a.assign(run_id="r1").to_csv(root / "a" / "part1.csv", index=False)
    b = _frame(20, 1, 0.5)
    b["T_decode_per_step"] = [None if s is None else list(s) for s in b["T_decode_per_step"]]
    (root / "b").mkdir()
    b.to_json(root / "b" / "x.jsonl", orient="records", lines=True, double_precision=15)
    return a, b


def test_two_datasets_two_formats(tmp_path):
    a, b = write_results(tmp_path)
    res = load_results(tmp_path)
    assert len(res.X) == 50 and list(res.X.columns)[0] == "vision_tokens"
    assert "run_id" not in res.X.columns and "run_id" in res.frame.columns
    assert list(res.dataset[:30]) == ["a"] * 30 and list(res.dataset[30:]) == ["b"] * 20
    np.testing.assert_array_equal(res.output_tokens[:30], a["output_tokens"])
    for i, s in enumerate(res.positioned_latencies):
        if s is not None:
            assert len(s) == res.output_tokens[i]
            assert np.isclose(s.sum(), res.y["T_LLM_decode"].iloc[i])
    assert sum(s is not None for s in res.positioned_latencies) > 5
    only_b = load_results(tmp_path, datasets=["b"])
    assert len(only_b.X) == 20 and set(only_b.dataset) == {"b"}


def test_parquet_and_top_level_files(tmp_path):
    pytest.importorskip("pyarrow")
    frame = _frame(12, 3, 1.0)
    frame.to_parquet(tmp_path / "runs.parquet")
    res = load_results(tmp_path)
    assert set(res.dataset) == {"runs"} and len(res.X) == 12
    assert all(s is not None for s in res.positioned_latencies)


def test_features_override(tmp_path):
    write_results(tmp_path)
    res = load_results(tmp_path, features=["text_tokens", "top_k"])
    assert list(res.X.columns) == ["text_tokens", "top_k"]


def _bad(tmp_path, edit):
    frame = _frame(10, 0, 1.0)
    frame["T_decode_per_step"] = [json.dumps(list(s)) for s in frame["T_decode_per_step"]]
    edit(frame)
    frame.to_csv(tmp_path / "d.csv", index=False)
    return tmp_path / "d.csv"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.pop("T_LLM_decode"), r"d.csv: missing column\(s\) \['T_LLM_decode'\]"),
        (
            lambda f: f.__setitem__("text_tokens", [1.0] * 3 + [np.nan] + [1.0] * 6),
            r"d.csv: column 'text_tokens' must be finite \(no NaN or inf\); row 4 is nan",
        ),
        (
            lambda f: f.__setitem__("T_prefill_total", [-1.0] + [1.0] * 9),
            r"d.csv: column 'T_prefill_total' must be positive latencies \(> 0\); row 1 is -1.0",
        ),
        (
            lambda f: f.__setitem__("output_tokens", [0] + list(f["output_tokens"][1:])),
            r"column 'output_tokens' must be >= 1; row 1 is 0",
        ),
        (
            lambda f: f.__setitem__("T_decode_per_token_avg", f["T_decode_per_token_avg"] * 1.5),
            r"row 1, column 'T_decode_per_token_avg': .* disagrees with T_LLM_decode",
        ),
        (
            lambda f: f.__setitem__(
                "T_LLM_decode", f["T_LLM_decode"].where(f.index != 2, f["T_LLM_decode"] * 2)
            ),
            r"row 3, column 'T_decode_per_token_avg'",
        ),
        (
            lambda f: f.__setitem__("T_decode_per_step", ["[1.0, 2.0]"] * 10),
            r"row 1, column 'T_decode_per_step' has 2 steps but output_tokens is",
        ),
        (
            lambda f: f.__setitem__("T_decode_per_step", ["not json"] * 10),
            r"column 'T_decode_per_step': expected a JSON list",
        ),
        (
            lambda f: f.__setitem__("T_decode_per_step", ['["a"]'] * 10),
            r"column 'T_decode_per_step': expected a list of numbers",
        ),
        (
            lambda f: f.__setitem__("T_decode_per_step", ["[[1.0], [2.0]]"] * 10),
            r"column 'T_decode_per_step': expected a flat list, got shape \(2, 1\)",
        ),
        (
            lambda f: f.__setitem__(
                "T_decode_per_step",
                [json.dumps([-1.0] + [1.0] * (n - 1)) for n in f["output_tokens"]],
            ),
            r"row 1, column 'T_decode_per_step' must hold positive finite latencies; "
            r"step 1 is -1.0",
        ),
    ],
)
def test_bad_rows_are_named(tmp_path, edit, message):
    _bad(tmp_path, edit)
    with pytest.raises(ResultsFormatError, match=message):
        load_results(tmp_path)


@pytest.mark.parametrize("sep, shown", [(";", "';'"), ("\t", "'\\t'")])
def test_a_file_separated_otherwise_is_said_to_be(tmp_path, sep, shown):
    # Read as one column named "text_tokens;output_tokens;...", it was only
    # said to miss every column.
    _frame(10, 0, 1.0).drop(columns="T_decode_per_step").to_csv(
        tmp_path / "d.csv", index=False, sep=sep
    )
    with pytest.raises(
        ResultsFormatError,
        match=r"missing column\(s\) .* Its header is one column holding "
        + re.escape(shown)
        + ": a "
        "results file is comma-separated.",
    ):
        load_results(tmp_path)


def test_per_step_sum_disagrees(tmp_path):
    def edit(f):
        f.pop("T_decode_per_token_avg")
        f.loc[5, "T_LLM_decode"] *= 1.2

    _bad(tmp_path, edit)
    with pytest.raises(
        ResultsFormatError,
        match=r"row 6, column 'T_decode_per_step': "
        r"per-step latencies sum to",
    ):
        load_results(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nope")
    with pytest.raises(ResultsFormatError, match="holds no .csv, .jsonl, .parquet files"):
        load_results(tmp_path)
    write_results(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"dataset\(s\) \['zzz'\] not found .* "
        r"available: \['a', 'b'\]",
    ):
        load_results(tmp_path, datasets=["zzz"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"datasets": []}, "datasets is empty; name at least one, or None for all of them"),
        ({"datasets": "a"}, "datasets must be a list of names, not one string; got 'a'"),
        ({"features": "text_tokens"}, "features must be a list of names, not one string"),
        ({"features": ["text_tokens", "top_k", "text_tokens"]}, "names 'text_tokens' twice"),
        ({"rtol": -0.1}, r"rtol must be a finite number >= 0; got -0.1"),
        ({"rtol": float("nan")}, "rtol must be a finite number >= 0; got nan"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    write_results(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_results(tmp_path, **kwargs)
    # numpy numbers are numbers.
    assert len(load_results(tmp_path, rtol=np.float32(0.02)).X) > 0


def test_demo_results_match_their_generator(tmp_path):
    from sklat.datasets import write_demo_results

    write_demo_results(tmp_path)
    shipped, regenerated = load_results(demo_results_dir()), load_results(tmp_path)
    pd.testing.assert_frame_equal(shipped.X, regenerated.X)
    np.testing.assert_allclose(shipped.y, regenerated.y, rtol=1e-9)
    assert sum(s is not None for s in shipped.positioned_latencies) == 132


def test_empty_file(tmp_path):
    (tmp_path / "d.csv").write_text("vision_tokens,text_tokens\n")
    with pytest.raises(ResultsFormatError, match="d.csv: no rows"):
        load_results(tmp_path)


def test_only_regular_files_are_read(tmp_path):
    import os

    write_results(tmp_path)
    os.symlink("/dev/zero", tmp_path / "a" / "evil.csv")
    os.mkfifo(tmp_path / "a" / "pipe.csv")
    (tmp_path / "a" / "sub.csv").mkdir()
    with pytest.warns(UserWarning) as record:
        res = load_results(tmp_path)
    skipped = sorted(str(w.message) for w in record)
    assert [m.rsplit("/", 1)[1] for m in skipped] == [
        "evil.csv: not a regular file.",
        "pipe.csv: not a regular file.",
        "sub.csv: not a regular file.",
    ]
    assert len(res.X) == 50


def test_a_link_to_another_file_is_named_in_the_error(tmp_path):
    import os

    os.symlink("/etc/passwd", tmp_path / "users.csv")
    with pytest.raises(
        ResultsFormatError,
        match=r"users.csv(: missing column|: cannot be "
        r"read as CSV)",
    ):
        load_results(tmp_path)


def test_suffixes_match_whatever_their_case(tmp_path):
    _frame(8, 0).to_csv(tmp_path / "UPPER.CSV", index=False)
    res = load_results(tmp_path)
    assert set(res.dataset) == {"UPPER"} and len(res.X) == 8


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.jsonl", '{"text_tokens": 1}\n{"text_tok', r"x.jsonl, line 2: not a JSON object"),
        ("x.jsonl", '{"a": 1}\n[1, 2]\n', r"x.jsonl, line 2: expected a JSON object, got list"),
        ("x.jsonl", "[" * 100_000, r"x.jsonl, line 1: not a JSON object \(nested too deeply\)"),
        ("d.csv", "", r"d.csv: the file is empty \(no header row\)"),
    ],
)
def test_unparseable_files_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ResultsFormatError, match=message):
        load_results(tmp_path)


def test_per_step_lists_that_are_too_deep_or_too_long(tmp_path):
    frame = _frame(3, 0)
    frame["T_decode_per_step"] = ["[" * 100_000 + "]" * 100_000, None, None]
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(
        ResultsFormatError,
        match=r"d.csv, row 1, column 'T_decode_per_step': "
        r"expected a JSON list",
    ):
        load_results(tmp_path)
    n = int(frame["output_tokens"].iloc[0])
    frame["T_decode_per_step"] = [json.dumps([1.0] * 10 * (n + 1)), None, None]
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(
        ResultsFormatError,
        match=rf"row 1, column 'T_decode_per_step': more "
        rf"than {n} per-step latencies",
    ):
        load_results(tmp_path)


def test_huge_output_tokens_are_refused_with_file_and_row(tmp_path):
    frame = _frame(3, 0)
    frame["output_tokens"] = frame["output_tokens"].astype(float)
    frame.loc[2, "output_tokens"] = 1e19
    frame.pop("T_decode_per_token_avg")
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(
        ResultsFormatError,
        match=r"d.csv: column 'output_tokens' must be <= "
        r"1048576 .*; row 3 is 1e\+19",
    ):
        load_results(tmp_path)


@pytest.mark.parametrize(
    "loads, message",
    [
        (
            {"concurrency": [1.0, 2.0, 0.5] + [1.0] * 7},
            r"d.csv: column 'concurrency' counts this client's requests including the request "
            r"itself, so it must be >= 1; row 3 is 0.5\.",
        ),
        (
            {"in_flight_at_start": [2] * 10, "waiting_at_start": [1] * 9 + [3]},
            r"d.csv: column 'waiting_at_start' counts those of 'in_flight_at_start' still "
            r"waiting for their first token, so it cannot exceed it; row 10 has 3 waiting "
            r"and 2 in flight\.",
        ),
    ],
)
def test_bad_loads_are_named_by_file_and_row(tmp_path, loads, message):
    # The estimator refuses them as well, but after the split into training
    # and held-out requests, by a sample number that is no row of the file.
    frame = _frame(10, 0).assign(**loads)
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ResultsFormatError, match=message):
        load_results(tmp_path, features=["text_tokens", *loads])
    # As plain columns, not features, they are kept as they are.
    assert load_results(tmp_path).frame[list(loads)].equals(frame[list(loads)])
