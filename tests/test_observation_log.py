"""The service's observation log, in process: its last lines, its repair after
a torn write, and an update that reads only its window."""

import json

import numpy as np
import pytest

import sklat
from sklat import LatencyEstimator
from sklat.datasets import make_positioned_latency
from sklat.serve import _observations
from sklat.serve._observations import ObservationLog, last_lines

pytest.importorskip("fastapi")


@pytest.fixture
def small_blocks(monkeypatch):
    # Blocks of a few bytes: every line crosses block boundaries.
    monkeypatch.setattr(_observations, "_TAIL_BLOCK", 7)


def _write(path, lines, tail=b""):
    path.write_bytes(b"".join(line.encode() + b"\n" for line in lines) + tail)


@pytest.mark.parametrize("block", [7, 1 << 16])
def test_last_lines_are_the_files_last_lines(tmp_path, monkeypatch, block):
    monkeypatch.setattr(_observations, "_TAIL_BLOCK", block)
    rng = np.random.default_rng(0)
    lines = ["x" * int(k) for k in rng.integers(0, 40, size=60)]
    path = tmp_path / "log.jsonl"
    _write(path, lines)
    for count in (0, 1, 2, 13, 59, 60, 61, 1000):
        assert last_lines(path, count) == (lines[-count:] if count else [])


def test_last_lines_leave_out_a_write_under_way(tmp_path, small_blocks):
    path = tmp_path / "log.jsonl"
    _write(path, ["a", "bb", "ccc"], tail=b'{"half": ')
    assert last_lines(path, 2) == ["bb", "ccc"]
    _write(path, [], tail=b"no newline yet")
    assert last_lines(path, 3) == []


def test_opening_the_log_drops_a_torn_last_line_in_blocks(tmp_path, small_blocks):
    folder = tmp_path / "obs"
    log = ObservationLog(folder)
    log.append([{"i": i} for i in range(5)])
    with open(log.path, "ab") as f:
        f.write(b'{"i": 5, "cut sh')
    reopened = ObservationLog(folder)
    assert reopened.count == 5
    assert log.path.read_bytes().endswith(b'{"i":4}\n')
    assert reopened.append([{"i": 5}]) == 6
    assert [json.loads(x)["i"] for x in last_lines(log.path, 10)] == list(range(6))


def test_an_update_reads_only_its_window(tmp_path):
    from sklat.serve._worker import _update

    data = make_positioned_latency(80, noise=0.05, max_output_tokens=64, random_state=0)
    est = LatencyEstimator(max_epochs=5, random_state=0, n_threads=1).fit(
        data.X, data.y, output_tokens=data.output_tokens
    )
    base = tmp_path / "model.safetensors"
    sklat.save(est, base)
    folder = tmp_path / "obs"
    log = ObservationLog(folder)
    frame = data.X.assign(output_tokens=data.output_tokens, **data.y)
    records = [{k: float(v) for k, v in row.items()} for row in frame.to_dict("records")]
    for r in records:
        r["output_tokens"] = int(r["output_tokens"])
    # A line before the window that no reader accepts: it is never read.
    with open(log.path, "w") as f:
        f.write("not json\n")
    log.append(records)
    state = {"base": est, "streak": 0, "made": (str(base), est)}
    result = _update(state, str(base), 1, str(folder), 40, 10, 0.0, 3)
    assert result["window"] == 40 and result["action"] == "recalibrate"
    # The window is the last 40 observations: the recalibrated model is the
    # one recalibrated on them.
    tail = frame.iloc[-40:]
    expected = est.recalibrate(
        tail[list(data.X.columns)], tail[list(data.y.columns)], output_tokens=tail["output_tokens"]
    )
    made = sklat.load(result["path"])
    X = data.X.iloc[:5]
    np.testing.assert_allclose(
        made.predict_interval(X, data.output_tokens[:5]),
        expected.predict_interval(X, data.output_tokens[:5]),
        rtol=1e-12,
    )
    # The same file read whole is refused at its first line.
    with pytest.raises(sklat.io.ResultsFormatError, match=r"line 1: not a JSON object"):
        sklat.io.load_results(folder, datasets=["served"])


def test_an_update_names_the_log_line_the_model_refuses(tmp_path):
    # A log written before the service checked each observation's features as
    # the model does may hold a row the model refuses: the update's error says
    # which line of the log it is.
    from sklat.serve._worker import _update

    data = make_positioned_latency(60, noise=0.05, max_output_tokens=64, random_state=0)
    X = data.X[["text_tokens"]].assign(concurrency=np.resize([1.0, 2.0, 4.0], 60))
    est = LatencyEstimator(max_epochs=3, random_state=0, n_threads=1).fit(
        X, data.y, output_tokens=data.output_tokens
    )
    base = tmp_path / "model.safetensors"
    sklat.save(est, base)
    folder = tmp_path / "obs"
    frame = X.assign(output_tokens=data.output_tokens, **data.y)
    records = [{k: float(v) for k, v in row.items()} for row in frame.to_dict("records")]
    for r in records:
        r["output_tokens"] = int(r["output_tokens"])
    records[-3]["concurrency"] = 0.0
    ObservationLog(folder).append(records)
    state = {"base": est, "streak": 0, "made": (str(base), est)}
    # A load below 1 is refused as a results file's row is.
    message = (
        r"the last 20 lines, counted from 1\): column 'concurrency' counts this client's "
        r"requests including the request itself, so it must be >= 1; row 18 is 0\."
    )
    with pytest.raises(ValueError, match=message):
        _update(state, str(base), 1, str(folder), 20, 10, 0.0, 3)
    # What only the model refuses (a negative context) is named by its sample.
    records[-3]["concurrency"], records[-4]["text_tokens"] = 2.0, -5.0
    (folder / "served" / "requests.jsonl").unlink()
    ObservationLog(folder).append(records)
    message = (
        r"the last 20 lines, counted from 1\): X column 'text_tokens' .* sample 16 is -5.0\. "
        r"Sample i is the window's line i \+ 1\."
    )
    with pytest.raises(ValueError, match=message):
        _update(state, str(base), 1, str(folder), 20, 10, 0.0, 3)
