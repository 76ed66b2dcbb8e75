"""``sklat serve``: a real uvicorn server on 127.0.0.1, called over HTTP."""

import concurrent.futures
import json
import re
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import sklat
from sklat import LatencyEstimator
from sklat.control import choose
from sklat.datasets import make_positioned_latency
from sklat.io import load_results

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def data():
    return make_positioned_latency(200, noise=0.05, max_output_tokens=128, random_state=0)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, data):
    est = LatencyEstimator(max_epochs=10, random_state=0, n_threads=1)
    est.fit(data.X, data.y, output_tokens=data.output_tokens)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    sklat.save(est, path)
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``sklat serve`` in a subprocess."""

    def __init__(self, model, folder, *extra):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token_file = folder / "token"
        token_file.write_text(TOKEN + "\n")
        self.log = open(folder / f"serve-{self.port}.log", "w+")
        command = [sys.executable, "-m", "sklat", "serve", "--model", str(model)]
        command += ["--port", str(self.port), "--token_file", str(token_file)]
        command += ["--log_level", "warning", *extra]
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                self.log.seek(0)
                pytest.fail(f"sklat serve did not start:\n{self.log.read()[-3000:]}")
            time.sleep(0.2)

    def post(self, route, body=None, *, content=None, headers=AUTH, timeout=30):
        return httpx.post(
            self.url + route, json=body, content=content, headers=headers, timeout=timeout
        )

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("served")
    srv = Server(model_path, folder, "--observations", str(folder / "obs"), "--max_rows", "1000")
    yield srv
    srv.stop()


def _rows(data, k=8):
    return data.X.iloc[:k].to_dict(orient="records")


def _observations(data, rows):
    return [
        {
            **data.X.iloc[i].to_dict(),
            "output_tokens": int(data.output_tokens[i]),
            "T_prefill_total": float(data.y.iloc[i, 0]),
            "T_LLM_decode": float(data.y.iloc[i, 1]),
        }
        for i in rows
    ]


def test_predict_answers_as_the_estimator(server, model_path, data):
    body = {"rows": _rows(data), "output_tokens": 64, "quantiles": [0.5, 0.9, 0.99]}
    body.update(confidence=0.8, tpot_ms=25.0)
    r = server.post("/v1/predict", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_version"] == 1 and len(answer["predictions"]) == 8
    est = sklat.load(model_path)
    X = data.X.iloc[:8]
    for key, target in (("ttft_ms", "prefill"), ("tpot_ms", "per_token"), ("e2e_ms", "e2e")):
        got = np.array([[p[key][q] for q in ("0.5", "0.9", "0.99")] for p in answer["predictions"]])
        want = est.predict_quantiles(X, [0.5, 0.9, 0.99], target=target, output_tokens=64)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    attainment = [p["attainment"] for p in answer["predictions"]]
    np.testing.assert_allclose(
        attainment, est.predict_slo_attainment(X, tpot_ms=25.0, output_tokens=64), rtol=1e-12
    )
    interval = np.array([p["interval"]["decode_ms"] for p in answer["predictions"]])
    np.testing.assert_allclose(interval, est.predict_interval(X, 64, confidence=0.8), rtol=1e-12)


def test_only_the_outputs_asked_are_answered(server, data):
    body = {"rows": _rows(data, 2), "outputs": ["tpot_ms", "ttft_ms"], "quantiles": [0.9]}
    r = server.post("/v1/predict", body)
    assert r.status_code == 200, r.text
    # in_domain is said of every row, whatever the outputs.
    assert [set(p) for p in r.json()["predictions"]] == [{"tpot_ms", "ttft_ms", "in_domain"}] * 2
    r = server.post("/v1/predict", dict(body, outputs=["p99"]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "outputs"]


def test_choose_answers_as_choose(server, model_path, data):
    candidates = [dict(row, quality=q) for row, q in zip(_rows(data, 5), [0.1, 0.9, 0.5, 0.7, 0.3])]
    body = {"candidates": candidates, "tpot_ms": 30.0, "prefer": "quality", "min_attainment": 0.5}
    r = server.post("/v1/choose", body)
    assert r.status_code == 200, r.text
    est = sklat.load(model_path)
    frame = data.X.iloc[:5].assign(quality=[0.1, 0.9, 0.5, 0.7, 0.3])
    want = choose(est, frame, tpot_ms=30.0, prefer="quality", min_attainment=0.5)
    assert r.json()["index"] == want.index and r.json()["met"] == want.met
    np.testing.assert_allclose(r.json()["attainment"], want.attainment, rtol=1e-12)


def test_the_token_is_required_but_not_for_probes(server, data):
    body = {"rows": _rows(data, 1)}
    assert server.post("/v1/predict", body, headers={}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    r = server.post("/v1/predict", body, headers=wrong)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200


def _detail(response):
    return json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"rows": [{"text_tokens": "many"}]}, 422, "expected a number, got str"),
        ({"rows": [{"text_tokens": True}]}, 422, "expected a number, got bool"),
        ({"rows": "all"}, 422, "rows"),
        ({"rows": []}, 422, "at least 1 item"),
        ({"rows": [{"bogus": 1.0}]}, 422, "'bogus' is not a feature of the model"),
        ({"rows": [{"text_tokens": 1.0}]}, 422, "Field required"),
        ({"rows": [{}], "quantiles": [0.5, 2.0]}, 422, "less than or equal to 1"),
        ({"rows": [{}], "quantiles": [0.9, 0.9]}, 422, "quantiles 0.9 and 0.9 both answer"),
        (
            {"rows": [{}], "quantiles": [0.1, 0.1000001]},
            422,
            "quantiles 0.1 and 0.1000001 both answer under the key '0.1'",
        ),
        ({"rows": [{}], "confidence": "0.9"}, 422, "expected a number, got str"),
        ({"rows": [{}], "confidence": True}, 422, "expected a number, got bool"),
        ({"rows": [{}], "surprise": 1}, 422, "Extra inputs are not permitted"),
        ({"rows": [{}], "model_version": 99}, 409, "model version 99 is not served"),
    ],
)
def test_hostile_predict_bodies(server, data, body, status, message):
    if body.get("rows") == [{}]:
        body = dict(body, rows=_rows(data, 1))
    r = server.post("/v1/predict", body)
    assert r.status_code == status, r.text
    assert message in _detail(r)


@pytest.mark.parametrize(
    "value, message",
    [("0.5", "expected a number, got str"), (True, "expected a number, got bool")],
)
def test_a_choose_attainment_is_a_number(server, data, value, message):
    # A string or a boolean that converts (true as 1.0) is not taken for one.
    body = {"candidates": _rows(data, 2), "tpot_ms": 30.0, "min_attainment": value}
    r = server.post("/v1/choose", body)
    assert r.status_code == 422, r.text
    assert message in _detail(r)


def test_errors_name_the_row_and_field(server, data):
    rows = _rows(data, 3)
    rows[2] = dict(rows[2], top_k=None)
    r = server.post("/v1/predict", {"rows": rows})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][:4] == ["body", "rows", 2, "top_k"]
    rows[2] = dict(_rows(data, 3)[2], text_tokens=-5.0)
    r = server.post("/v1/predict", {"rows": rows})
    assert r.status_code == 422 and "sample 2" in _detail(r)


def test_hostile_raw_bodies_leave_the_service_up(server):
    before = server.rss_kib()
    cases = [
        (b"[" * 200_000 + b"]" * 200_000, 400),
        (b" " * (4 * 2**20 + 1), 413),
        (b"[" * 100_000, 400),
        (b"{not json", 400),
        (b'{"rows": [{"text_tokens": NaN}]}', 422),
        (json.dumps({"rows": [{"text_tokens": 1.0}] * 1_000_001}).encode(), 413),
        (json.dumps({"rows": [{"text_tokens": 1.0}] * 5_000}).encode(), 413),
    ]
    for content, status in cases:
        r = server.post("/v1/predict", content=content, headers={**AUTH, "content-type": "x"})
        assert r.status_code == status, (content[:40], r.text[:300])
    deep = b'{"rows": [{"text_tokens": ' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    assert server.post("/v1/predict", content=deep).status_code in (400, 422)
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert server.rss_kib() - before < 200 * 1024


def test_a_huge_declared_length_is_refused_before_reading(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        assert b" 413 " in s.recv(4096).split(b"\r\n")[0] + b" "


def test_concurrent_clients_get_consistent_answers(server, data):
    body = {"rows": _rows(data), "output_tokens": 32, "quantiles": [0.9]}

    def calls(_):
        with httpx.Client(headers=AUTH, timeout=30) as client:
            return [client.post(server.url + "/v1/predict", json=body) for _ in range(20)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = [r for batch in pool.map(calls, range(8)) for r in batch]
    assert all(r.status_code == 200 for r in responses)
    answers = {json.dumps(r.json()["predictions"]) for r in responses}
    assert len(answers) == 1


def test_observations_are_written_in_the_results_format(server, data, tmp_path):
    r = server.post("/v1/observations", {"rows": _observations(data, range(10, 14))})
    assert r.status_code == 200, r.text
    assert r.json()["written"] == 4
    bad = _observations(data, [20, 21])
    bad[1]["T_LLM_decode"] = -1.0
    r = server.post("/v1/observations", {"rows": bad})
    assert r.status_code == 422 and "row 2" in _detail(r) and "T_LLM_decode" in _detail(r)
    missing = _observations(data, [22])
    del missing[0]["output_tokens"]
    r = server.post("/v1/observations", {"rows": missing})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == [
        "body",
        "rows",
        0,
        "output_tokens",
    ]
    res = load_results(server_folder(server), features=list(data.X.columns))
    decode = res.y["T_LLM_decode"].to_numpy()
    for row in _observations(data, range(10, 14)):
        assert row["T_LLM_decode"] in decode
    assert -1.0 not in decode


def test_an_observation_the_model_could_not_predict_on_is_refused(server, data):
    # The update predicts on the log's rows first: a row with a value a
    # log-scaled feature cannot take would fail every update after it.
    before = server.post("/v1/observations", {"rows": _observations(data, [40])}).json()
    rows = _observations(data, [41, 42])
    rows[1]["text_tokens"] = -5.0
    r = server.post("/v1/observations", {"rows": rows})
    assert r.status_code == 422, r.text
    assert re.search(r"observations: X column 'text_tokens' .*sample 1 is -5", _detail(r))
    after = server.post("/v1/observations", {"rows": _observations(data, [43])}).json()
    assert after["observations"] == before["observations"] + 1


def test_observations_keep_per_step_latencies_and_segments(server, data):
    rows = _observations(data, [30, 31])
    n0, n1 = rows[0]["output_tokens"], rows[1]["output_tokens"]
    rows[0]["T_decode_per_step"] = [rows[0]["T_LLM_decode"] / n0] * n0
    rows[1]["T_decode_segment_tokens"] = [1, n1 - 1]
    rows[1]["T_decode_segment_ms"] = [rows[1]["T_LLM_decode"] / 2] * 2
    r = server.post("/v1/observations", {"rows": rows})
    assert r.status_code == 200, r.text
    res = load_results(server_folder(server), features=list(data.X.columns))
    kept = res.y["T_LLM_decode"].tolist()
    first, second = kept.index(rows[0]["T_LLM_decode"]), kept.index(rows[1]["T_LLM_decode"])
    assert len(res.positioned_latencies[first]) == n0
    tokens, ms = res.decode_segments[second]
    assert list(tokens) == [1, n1 - 1] and ms.sum() == pytest.approx(rows[1]["T_LLM_decode"])
    short = _observations(data, [32])
    short[0]["T_decode_per_step"] = [1.0]
    r = server.post("/v1/observations", {"rows": short})
    assert r.status_code == 422 and "T_decode_per_step" in _detail(r)


def server_folder(server):
    for i, arg in enumerate(server.proc.args):
        if arg == "--observations":
            return Path(server.proc.args[i + 1])
    raise AssertionError("no observations folder")


def test_metrics_in_the_prometheus_format(server, data):
    server.post("/v1/predict", {"rows": _rows(data, 1)})
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert "# TYPE sklat_request_duration_seconds histogram" in text
    assert 'sklat_requests_total{route="/v1/predict",status="200"}' in text
    assert "sklat_model_version " in text and "sklat_observations_total " in text
    # Random paths are counted together, not as new series.
    httpx.get(server.url + "/no/such/path/123", headers=AUTH)
    assert "/no/such/path" not in httpx.get(server.url + "/metrics", headers=AUTH).text


def test_the_openapi_schema_shows_the_bodies(server):
    schema = httpx.get(server.url + "/openapi.json", headers=AUTH).json()
    for route in ("/v1/predict", "/v1/choose", "/v1/observations"):
        body = schema["paths"][route]["post"]["requestBody"]["content"]["application/json"]
        assert "properties" in body["schema"]


def test_a_bad_model_file_is_refused_at_start_as_load_refuses_it(model_path, tmp_path):
    bad = tmp_path / "bad.safetensors"
    data = bytearray(model_path.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(sklat.ModelFileError) as info:
        sklat.load(bad)
    done = subprocess.run(
        [sys.executable, "-m", "sklat", "serve", "--model", str(bad), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert str(info.value) in done.stderr


def _post_until_killed(srv, data, acknowledged, stop, writer):
    i = 0
    with httpx.Client(headers=AUTH, timeout=10) as client:
        while not stop.is_set():
            row = _observations(data, [i % len(data.X)])[0]
            row["T_LLM_decode"] = 1000.0 + 100_000 * writer + i  # a value naming the write
            try:
                r = client.post(srv.url + "/v1/observations", json={"rows": [row]})
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                acknowledged.append(row["T_LLM_decode"])
            i += 1


def test_kill_9_loses_nothing_acknowledged_and_a_restart_goes_on(model_path, data, tmp_path):
    obs = tmp_path / "obs"
    srv = Server(model_path, tmp_path, "--observations", str(obs), "--update_every", "1000")
    acknowledged, stop = [], threading.Event()
    writers = [
        threading.Thread(target=_post_until_killed, args=(srv, data, acknowledged, stop, k))
        for k in range(3)
    ]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    stop.set()
    for w in writers:
        w.join()
    srv.log.close()
    assert len(acknowledged) >= 60
    again = Server(model_path, tmp_path, "--observations", str(obs), "--update_every", "1000")
    try:
        res = load_results(obs, features=list(data.X.columns))
        kept = res.y["T_LLM_decode"].tolist()
        assert set(acknowledged) <= set(kept)
        assert len(kept) == len(set(kept))  # no write twice, none torn
        r = again.post("/v1/observations", {"rows": _observations(data, [0])})
        assert r.status_code == 200 and r.json()["observations"] == len(kept) + 1
    finally:
        again.stop()


def test_online_updates_swap_models_under_load(model_path, data, tmp_path):
    obs = tmp_path / "obs"
    srv = Server(model_path, tmp_path, "--observations", str(obs), "--update_every", "20")
    versions, stop = [], threading.Event()

    def hammer():
        with httpx.Client(headers=AUTH, timeout=30) as client:
            while not stop.is_set():
                r = client.post(srv.url + "/v1/predict", json={"rows": _rows(data, 4)})
                assert r.status_code == 200
                versions.append(r.json()["model_version"])

    try:
        caller = threading.Thread(target=hammer)
        caller.start()
        # Observations that cross a multiple of --update_every while an update
        # runs are in the next update's window: wait for each version.
        for version in (2, 3, 4):
            rows = _observations(data, range(20 * (version - 2), 20 * (version - 1)))
            assert srv.post("/v1/observations", {"rows": rows}).status_code == 200
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                text = httpx.get(srv.url + "/metrics", headers=AUTH).text
                if f"sklat_model_version {version}" in text:
                    break
                time.sleep(0.2)
            assert f"sklat_model_version {version}" in text, text[-1500:]
        stop.set()
        caller.join()
        assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 4
        assert (obs / "models" / "v4.safetensors").exists()
        assert (obs / "models" / "v2.safetensors").exists()  # the previous ones are kept
        assert 'sklat_updates_total{action="recalibrate"} 3' in text
        assert "sklat_window_coverage " in text and "sklat_drift_p_value " in text
    finally:
        stop.set()
        srv.stop()
    # A restart serves the newest version.
    again = Server(model_path, tmp_path, "--observations", str(obs))
    try:
        r = again.post("/v1/predict", {"rows": _rows(data, 1)})
        assert r.json()["model_version"] == 4
    finally:
        again.stop()


def test_persistent_drift_refits_on_the_window(model_path, data, tmp_path):
    # Decoding three times slower than the model knows: the drift check
    # fires, and with --drift_patience 1 the update refits on the window.
    obs = tmp_path / "obs"
    srv = Server(
        model_path,
        tmp_path,
        "--observations",
        str(obs),
        "--update_every",
        "60",
        "--drift_patience",
        "1",
    )
    try:
        rows = _observations(data, range(60))
        for row in rows:
            row["T_LLM_decode"] *= 3.0
        assert srv.post("/v1/observations", {"rows": rows}).status_code == 200
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            text = httpx.get(srv.url + "/metrics", headers=AUTH).text
            if "sklat_model_version 2" in text:
                break
            time.sleep(0.2)
        assert 'sklat_updates_total{action="refit"} 1' in text, text[-1500:]
        drift = float(text.split("\nsklat_drift_p_value ")[1].split()[0])
        assert drift < 0.01
        r = srv.post("/v1/predict", {"rows": _rows(data, 8), "output_tokens": 64})
        est = sklat.load(model_path)
        before = est.predict_quantiles(data.X.iloc[:8], 0.5, target="total", output_tokens=64)
        after = np.array([p["decode_ms"]["0.5"] for p in r.json()["predictions"]])
        assert np.median(after / before[:, 0]) > 2.0
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--update_every", "0"], "update_every must be an integer >= 1; got 0"),
        (["--window", "5"], "window must be an integer >= 20; got 5"),
        (["--drift_alpha", "1.5"], r"drift_alpha must be in \(0, 1\); got 1.5"),
        (["--token_file", "EMPTY"], "is empty"),
        (["--token_file", "SPACED"], "a token is one word, without spaces"),
    ],
)
def test_bad_serve_options_exit_2(model_path, tmp_path, capsys, options, message):
    from sklat.cli import main

    (tmp_path / "EMPTY").write_text("\n")
    (tmp_path / "SPACED").write_text("two words\n")
    options = [str(tmp_path / o) if o in ("EMPTY", "SPACED") else o for o in options]
    assert main(["serve", "--model", str(model_path), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sklat serve: error:")
    assert re.search(message, err), err
