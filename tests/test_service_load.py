"""``sklat serve`` with a model that has a load feature, in process (the ASGI
application through Starlette's test client): ``load`` in /v1/predict and
/v1/choose answers as the estimator does, and bad loads are 422s naming
what is wrong."""

import re

import numpy as np
import pytest

import sklat
from sklat import LatencyEstimator
from sklat.control import choose
from sklat.datasets import make_positioned_latency

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from sklat.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = make_positioned_latency(120, noise=0.05, max_output_tokens=64, random_state=0)
    X = data.X[["text_tokens", "top_k"]].assign(
        concurrency=np.resize([1.0, 2.0, 4.0, 8.0], len(data.X))
    )
    est = LatencyEstimator(max_epochs=10, random_state=0, n_threads=1)
    est.fit(X, data.y, output_tokens=data.output_tokens)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    sklat.save(est, path)
    with TestClient(create_app(path)) as client:
        yield est, X, client


def test_predict_with_one_load_answers_as_the_estimator(served):
    est, X, client = served
    rows = X[["text_tokens", "top_k"]].iloc[:3]
    body = {"rows": rows.to_dict("records"), "output_tokens": 32, "load": 6, "tpot_ms": 20.0}
    answer = client.post("/v1/predict", json=body)
    assert answer.status_code == 200, answer.text
    got = [p["tpot_ms"]["0.9"] for p in answer.json()["predictions"]]
    expected = est.predict_quantiles(rows, [0.9], target="per_token", output_tokens=32, load=6)
    np.testing.assert_allclose(got, expected[:, 0], rtol=1e-9)
    attainment = [p["attainment"] for p in answer.json()["predictions"]]
    np.testing.assert_allclose(
        attainment, est.predict_slo_attainment(rows, tpot_ms=20.0, output_tokens=32, load=6)
    )
    # The same load as a column of the rows gives the same answer.
    body = {"rows": X.iloc[:3].assign(concurrency=6.0).to_dict("records"), "output_tokens": 32}
    same = client.post("/v1/predict", json=body).json()["predictions"]
    assert [p["tpot_ms"]["0.9"] for p in same] == got


def test_choose_with_a_load_answers_as_choose(served):
    est, X, client = served
    candidates = X[["text_tokens", "top_k"]].iloc[:6]
    for load in (1, {"concurrency": 8}):
        body = {
            "candidates": candidates.to_dict("records"),
            "tpot_ms": 15.0,
            "output_tokens": 16,
            "load": load,
        }
        answer = client.post("/v1/choose", json=body)
        assert answer.status_code == 200, answer.text
        expected = choose(est, candidates, tpot_ms=15.0, output_tokens=16, load=load)
        assert answer.json()["index"] == expected.index
        np.testing.assert_allclose(answer.json()["attainment"], expected.attainment)


@pytest.mark.parametrize(
    "load, rows_have_load, message",
    [
        (-1, False, r"load of feature 'concurrency' must be a finite number >= 0; got -1"),
        (0, False, r"load of feature 'concurrency' counts this client's requests including the"),
        ({"kv_usage": 0.5}, False, r"load= names 'kv_usage', which is not a load feature"),
        (4, True, r"'concurrency' is given by load and by the row: give each load once"),
        (None, False, r"concurrency"),
        ("4", False, r"load"),
    ],
)
def test_bad_loads_are_422_naming_the_problem(served, load, rows_have_load, message):
    _, X, client = served
    rows = X.iloc[:2] if rows_have_load else X[["text_tokens", "top_k"]].iloc[:2]
    body = {"rows": rows.to_dict("records"), "output_tokens": 8}
    if load is not None:
        body["load"] = load
    answer = client.post("/v1/predict", json=body)
    assert answer.status_code == 422, answer.text
    assert re.search(message, answer.text), answer.text
    if rows_have_load:
        assert answer.json()["detail"][0]["loc"] == ["body", "rows", 0, "concurrency"]


def test_a_row_whose_load_does_not_count_itself_is_422(served):
    _, X, client = served
    rows = X.iloc[:2].assign(concurrency=[2.0, 0.0])
    answer = client.post("/v1/predict", json={"rows": rows.to_dict("records"), "output_tokens": 8})
    assert answer.status_code == 422, answer.text
    assert re.search(r"'concurrency' counts .* must be >= 1; sample 1 is 0.0", answer.text)


def test_an_observation_whose_load_does_not_count_itself_is_422(served, tmp_path):
    # Logged, it would fail every online update until it left the window.
    est, X, _ = served
    path = tmp_path / "model.safetensors"
    sklat.save(est, path)
    rows = [
        {**X.iloc[i].to_dict(), "output_tokens": 8, "T_prefill_total": 40.0, "T_LLM_decode": 90.0}
        for i in range(2)
    ]
    with TestClient(create_app(path, observations=tmp_path / "obs")) as client:
        for load, shown in ((0.0, "0"), (-2.0, "-2")):
            rows[1]["concurrency"] = load
            answer = client.post("/v1/observations", json={"rows": rows})
            assert answer.status_code == 422, answer.text
            assert (
                "observations (rows counted from 1): column 'concurrency' counts this client's "
                f"requests including the request itself, so it must be >= 1; row 2 is {shown}."
            ) in answer.json()["detail"][0]["msg"]
        rows[1]["concurrency"] = 3.0
        answer = client.post("/v1/observations", json={"rows": rows})
        assert answer.status_code == 200, answer.text
        assert answer.json()["observations"] == 2


def test_answers_say_which_rows_are_extrapolations(served):
    # A caller does not see the estimator's ExtrapolationWarning: each answer
    # says whether its row (the load of the call included) lies inside the
    # training domain, as in_domain does.
    est, X, client = served
    rows = X[["text_tokens", "top_k"]].iloc[:2]
    for load, inside in ((4.0, True), (64.0, False)):
        body = {"rows": rows.to_dict("records"), "output_tokens": 8, "load": load}
        answer = client.post("/v1/predict", json=body).json()
        assert [p["in_domain"] for p in answer["predictions"]] == [inside, inside]
        body = {"candidates": rows.to_dict("records"), "tpot_ms": 15.0, "load": load}
        answer = client.post("/v1/choose", json={**body, "output_tokens": 8}).json()
        assert answer["in_domain"] == [inside, inside]
    # Per row: a prompt past the training range, and a length past the longest.
    mixed = rows.assign(concurrency=2.0)
    mixed.iloc[1, 0] = 100 * X["text_tokens"].max()
    body = {"rows": mixed.to_dict("records"), "output_tokens": [8, 8]}
    answer = client.post("/v1/predict", json=body).json()
    expected = est.in_domain(mixed, [8, 8])
    assert [p["in_domain"] for p in answer["predictions"]] == expected.tolist() == [True, False]
    body["output_tokens"] = [8, 10 * est.max_output_tokens_]
    answer = client.post(
        "/v1/predict", json={**body, "rows": rows.assign(concurrency=2.0).to_dict("records")}
    ).json()
    assert [p["in_domain"] for p in answer["predictions"]] == [True, False]
    # N unknown: the call's distribution reaching past the longest request.
    longest = int(est.max_output_tokens_)
    for values, inside in (([4, longest], True), ([4, longest + 1], False)):
        dist = {"values": values, "probabilities": [0.5, 0.5]}
        body = {"rows": rows.to_dict("records"), "load": 2.0, "output_tokens_distribution": dist}
        answer = client.post("/v1/predict", json=body).json()
        assert [p["in_domain"] for p in answer["predictions"]] == [inside, inside]


def test_a_load_that_is_not_the_last_column(tmp_path):
    # The call's load takes its place in the model's column order.
    data = make_positioned_latency(60, noise=0.05, max_output_tokens=32, random_state=1)
    X = data.X[["text_tokens", "top_k"]].assign(concurrency=np.resize([1.0, 4.0], len(data.X)))
    X = X[["concurrency", "text_tokens", "top_k"]]
    est = LatencyEstimator(max_epochs=2, random_state=0, n_threads=1)
    est.fit(X, data.y, output_tokens=data.output_tokens)
    path = tmp_path / "model.safetensors"
    sklat.save(est, path)
    rows = X[["text_tokens", "top_k"]].iloc[:2]
    with TestClient(create_app(path)) as client:
        body = {"rows": rows.to_dict("records"), "output_tokens": 8, "load": 3, "tpot_ms": 9.0}
        answer = client.post("/v1/predict", json=body)
    assert answer.status_code == 200, answer.text
    expected = est.predict_slo_attainment(rows, tpot_ms=9.0, output_tokens=8, load=3)
    np.testing.assert_allclose([p["attainment"] for p in answer.json()["predictions"]], expected)
