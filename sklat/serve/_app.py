"""The service's routes (FastAPI): predict, choose, observations, health,
readiness and metrics.

A call's body is read (within the size limit) and parsed here rather than by
FastAPI, so that a body nested too deeply for the JSON parser is a 400, not
a 500; it is then validated against its pydantic model (the OpenAPI schema
shows the same models). The model's work runs in the thread pool, never on
the event loop; answers are written with ``json`` directly (FastAPI's
generic encoder of returned objects cost more than the model's work).
Errors are 4xx with ``{"detail": ...}``: a list of
``{"loc", "msg", "type"}`` for a 422 (``loc`` names the field and row), a
sentence otherwise.
"""

import contextlib
import json
import warnings

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from .._constants import (
    DECODE_COL,
    OUTPUT_TOKENS_COL,
    PER_STEP_COL,
    PREFILL_COL,
    SEGMENT_MS_COL,
    SEGMENT_TOKENS_COL,
)
from .._load_input import load_values
from .._validation import report_key
from .._version import __version__
from ..control import choose
from ..exceptions import ExtrapolationWarning
from ..io import ResultsFormatError, _check_frame
from ._guard import Guard, too_large
from ._metrics import Metrics
from ._observations import ObservationLog
from ._schemas import ChooseBody, ObservationsBody, PredictBody
from ._settings import ServeSettings
from ._store import ModelStore
from ._updater import Updater

# What /v1/predict answers per row: quantile targets of the estimator, by key.
_TARGETS = {"ttft_ms": "prefill", "tpot_ms": "per_token", "decode_ms": "total", "e2e_ms": "e2e"}
# Result columns an observation may carry besides the model's features.
_MEASURED = (OUTPUT_TOKENS_COL, PREFILL_COL, DECODE_COL)
_LISTS = (PER_STEP_COL, SEGMENT_TOKENS_COL, SEGMENT_MS_COL)


class ServiceError(Exception):
    """A call that cannot be answered: its status and detail."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _invalid(loc, msg, kind="value_error"):
    return ServiceError(422, [{"loc": list(loc), "msg": msg, "type": kind}])


def create_app(model, **settings):
    """The service as an ASGI application (FastAPI), for ``uvicorn`` or any
    ASGI server.

    Parameters
    ----------
    model : path
        A model file, or a ``sklat train`` output folder. A file that fails
        its checks is refused here, with :func:`sklat.load`'s message.
    **settings
        The other fields of :class:`~sklat.serve.ServeSettings`.

    Returns
    -------
    app : fastapi.FastAPI
        Its online updates (with ``observations``) start with the
        application (its lifespan) and stop with it.
    """
    settings = ServeSettings(model=model, **settings)
    store = ModelStore.open(settings.model, settings.observations)
    estimator = store.current().estimator
    if getattr(estimator, "feature_names_in_", None) is None:
        raise ValueError(
            "the model was fitted without feature names: a service takes rows of "
            "{feature: value}; fit it on a DataFrame (sklat train does)."
        )
    metrics = Metrics()
    log = None if settings.observations is None else ObservationLog(settings.observations)
    if log is not None:
        metrics.observations = log.count
    service = {"updater": None}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if log is not None:
            service["updater"] = Updater(settings, store, metrics)
        try:
            yield
        finally:
            if service["updater"] is not None:
                service["updater"].close()

    app = FastAPI(
        title="sklat",
        version=__version__,
        summary="Latency predictions of a fitted sklat model, learning online.",
        lifespan=lifespan,
    )

    @app.exception_handler(ServiceError)
    async def _service_error(request, exc):
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail})

    def _body_schema(model_class):
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": model_class.model_json_schema()}},
            }
        }

    @app.post("/v1/predict", openapi_extra=_body_schema(PredictBody))
    async def predict(request: Request):
        """Per row: quantiles of the time to first token, time per output token,
        decode total and end-to-end latency; intervals (``confidence``) and the
        probability of meeting the objectives given."""
        body = await _validated(request, PredictBody, settings)
        served = _served(store, body.model_version)
        answer = await run_in_threadpool(_predict, served.estimator, body)
        return JSONResponse({"model_version": served.version, "predictions": answer})

    @app.post("/v1/choose", openapi_extra=_body_schema(ChooseBody))
    async def choose_route(request: Request):
        """The candidate that best meets the objectives, as
        :func:`sklat.control.choose`."""
        body = await _validated(request, ChooseBody, settings)
        served = _served(store, body.model_version)
        answer = await run_in_threadpool(_choose, served.estimator, body)
        return JSONResponse({"model_version": served.version, **answer})

    @app.post("/v1/observations", openapi_extra=_body_schema(ObservationsBody))
    async def observations(request: Request):
        """Completed requests, written durably (answered once flushed to disk)."""
        if log is None:
            raise ServiceError(
                404, "this service keeps no observations: start it with --observations DIR."
            )
        body = await _validated(request, ObservationsBody, settings)
        served = store.current()
        records = await run_in_threadpool(_observation_records, served.estimator, body.rows)
        before = log.count
        count = await run_in_threadpool(log.append, records)
        metrics.observations = count
        if service["updater"] is not None:
            service["updater"].observed(before, count)
        return JSONResponse(
            {"written": len(records), "observations": count, "model_version": served.version}
        )

    @app.get("/healthz")
    async def healthz():
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """A model is loaded and, with observations, the update process runs."""
        updater = service["updater"]
        if log is not None and (updater is None or not updater.alive()):
            return JSONResponse(
                status_code=503, content={"status": "the update process is not running"}
            )
        return {"status": "ready", "model_version": store.current().version}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_route():
        """The metrics, Prometheus text format."""
        return PlainTextResponse(
            metrics.render(store.current().version),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    return Guard(app, token=settings.token, max_body_bytes=settings.max_body_bytes, metrics=metrics)


async def read_json(request, limit):
    """The body parsed as JSON, read within ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, too_large(limit))
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except RecursionError:
        raise ServiceError(400, "the body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError(400, f"the body is not JSON: {exc}.") from None


async def _validated(request, model_class, settings):
    data = await read_json(request, settings.max_body_bytes)
    try:
        body = model_class.model_validate(data)
    except ValidationError as exc:
        detail = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise ServiceError(422, detail) from None
    rows = getattr(body, "rows", None) or getattr(body, "candidates", None)
    if len(rows) > settings.max_rows:
        raise ServiceError(
            413, f"{len(rows)} rows; the service takes at most {settings.max_rows} per call."
        )
    return body


def _served(store, version):
    served = store.current()
    if version is not None and version != served.version:
        raise ServiceError(
            409,
            f"model version {version} is not served; the service answers with version "
            f"{served.version}.",
        )
    return served


def _frame(estimator, rows, field, load, extra=()):
    """The rows as a DataFrame of the model's features (in its order) and the
    ``extra`` columns they carry; an unknown or missing key, or a load column
    that ``load`` gives too, is a 422 naming the row."""
    names = [str(c) for c in estimator.feature_names_in_]
    given_load = set()
    if load is not None:
        given_load = {names[c] for c in _estimator_call(load_values, estimator, load)}
    wanted = [c for c in names if c not in given_load]
    allowed = set(names) | {OUTPUT_TOKENS_COL, *extra}
    for i, row in enumerate(rows):
        if not allowed.issuperset(row):
            key = next(k for k in row if k not in allowed)
            raise _invalid(
                ("body", field, i, key),
                f"{key!r} is not a feature of the model (its features: {names}).",
                "extra_forbidden",
            )
        twice = given_load.intersection(row)
        if twice:
            key = sorted(twice)[0]
            raise _invalid(
                ("body", field, i, key),
                f"{key!r} is given by load and by the row: give each load once.",
            )
    columns = wanted + [c for c in (OUTPUT_TOKENS_COL, *extra) if any(c in r for r in rows)]
    try:
        values = [[row[c] for c in columns] for row in rows]
    except KeyError:
        i, col = next((i, c) for i, r in enumerate(rows) for c in columns if c not in r)
        raise _invalid(("body", field, i, col), "Field required", "missing") from None
    return pd.DataFrame(np.array(values, dtype=np.float64).reshape(len(rows), -1), columns=columns)


def _lengths(body, n_rows):
    """``output_tokens`` of the body as the estimator takes it."""
    value = body.output_tokens
    if isinstance(value, list) and len(value) != n_rows:
        raise _invalid(
            ("body", "output_tokens"),
            f"output_tokens must be one number or one per row ({n_rows}); got {len(value)}.",
        )
    dist = body.output_tokens_distribution
    if dist is not None:
        dist = {"values": dist.values, "probabilities": dist.probabilities}
    return value, dist


def _estimator_call(function, *args, **kwargs):
    """Run an estimator call; its ``ValueError`` (a value it cannot take,
    naming the sample) is a 422."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)
            return function(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise _invalid(("body",), str(exc)) from None


def _predict(estimator, body):
    X = _frame(estimator, body.rows, "rows", body.load)
    n_tokens, dist = _lengths(body, len(X))
    if OUTPUT_TOKENS_COL in X.columns and n_tokens is not None:
        raise _invalid(
            ("body", "output_tokens"), "output_tokens is given both per row and for the call."
        )
    with_prefill = estimator.n_outputs_ == 2
    if not with_prefill and {"ttft_ms", "e2e_ms"} & set(body.outputs):
        if body.outputs != PredictBody.model_fields["outputs"].default:
            raise _invalid(
                ("body", "outputs"),
                "the model has no prefill head (it was fitted on decode totals only): "
                "ttft_ms and e2e_ms cannot be answered.",
            )
    targets = [
        _TARGETS[key]
        for key in dict.fromkeys(body.outputs)
        if with_prefill or key not in ("ttft_ms", "e2e_ms")
    ]
    objectives = {"ttft_ms": body.ttft_ms, "tpot_ms": body.tpot_ms, "e2e_ms": body.e2e_ms}
    out = _estimator_call(
        estimator._summary,
        X,
        quantiles=body.quantiles,
        targets=targets,
        objectives=objectives,
        confidence=body.confidence,
        output_tokens=n_tokens,
        output_tokens_distribution=dist,
        load=body.load,
    )
    inside = _estimator_call(_inside, estimator, X, n_tokens, body.load, dist)
    labels = [report_key(q) for q in body.quantiles]
    columns = {
        key: out["quantiles"][target].tolist()
        for key, target in _TARGETS.items()
        if target in out["quantiles"]
    }
    interval = out["interval"]
    predictions = []
    for i in range(len(X)):
        entry = {key: dict(zip(labels, values[i])) for key, values in columns.items()}
        if interval is not None:
            entry["interval"] = {
                "confidence": body.confidence,
                "decode_ms": interval["total"][i].tolist(),
                "ttft_ms": None if interval["prefill"] is None else interval["prefill"][i].tolist(),
            }
        if out["attainment"] is not None:
            entry["attainment"] = float(out["attainment"][i])
        entry["in_domain"] = bool(inside[i])
        predictions.append(entry)
    return predictions


def _choose(estimator, body):
    extra = (body.prefer,) if isinstance(body.prefer, str) else ()
    X = _frame(estimator, body.candidates, "candidates", body.load, extra=extra)
    n_tokens, dist = _lengths(body, len(X))
    choice = _estimator_call(
        choose,
        estimator,
        X,
        ttft_ms=body.ttft_ms,
        tpot_ms=body.tpot_ms,
        e2e_ms=body.e2e_ms,
        output_tokens=n_tokens,
        output_tokens_distribution=dist,
        min_attainment=body.min_attainment,
        prefer=body.prefer,
        load=body.load,
    )
    features = X.drop(columns=list(extra))
    inside = _estimator_call(_inside, estimator, features, n_tokens, body.load, dist)
    return {
        "index": int(choice.index),
        "met": bool(choice.met),
        "attainment": [float(v) for v in choice.attainment],
        "in_domain": [bool(v) for v in inside],
    }


def _inside(estimator, X, output_tokens, load, dist):
    """Per row, whether it lies inside the model's training domain (every
    feature, the load of the call included, and the output length: a known
    one, or every length of the call's distribution): a caller cannot see the
    estimator's ExtrapolationWarning, so the answer says which rows are
    extrapolations."""
    inside = estimator.in_domain(X, output_tokens, load=load)
    if output_tokens is None and dist is not None:
        inside &= max(dist["values"]) <= estimator.max_output_tokens_
    return inside


def _observation_records(estimator, rows):
    """The rows as results records, checked as :func:`sklat.io.load_results`
    checks a file (a row that would break ``sklat train`` is refused here)."""
    names = [str(c) for c in estimator.feature_names_in_]
    allowed = set(names) | set(_MEASURED) | set(_LISTS)
    needed = names + [OUTPUT_TOKENS_COL, DECODE_COL]
    if estimator.n_outputs_ == 2:
        needed.append(PREFILL_COL)
    for i, row in enumerate(rows):
        unknown = [k for k in row if k not in allowed]
        if unknown:
            raise _invalid(
                ("body", "rows", i, unknown[0]),
                f"{unknown[0]!r} is neither a feature of the model ({names}) nor a results "
                f"column ({list(_MEASURED + _LISTS)}).",
                "extra_forbidden",
            )
        missing = [c for c in needed if c not in row]
        if missing:
            raise _invalid(("body", "rows", i, missing[0]), "Field required", "missing")
        for key, value in row.items():
            if (key in _LISTS) != isinstance(value, list):
                kind = "a list of numbers" if key in _LISTS else "a number"
                raise _invalid(("body", "rows", i, key), f"expected {kind}.")
        n = row[OUTPUT_TOKENS_COL]
        if not float(n).is_integer():
            raise _invalid(
                ("body", "rows", i, OUTPUT_TOKENS_COL), "output_tokens must be an integer."
            )
    frame = pd.DataFrame.from_records(rows)
    try:
        _check_frame(frame, "observations (rows counted from 1)", names, 0.01)
    except ResultsFormatError as exc:
        raise _invalid(("body", "rows"), str(exc)) from None
    # The features as the served model checks them when it predicts (a load
    # that does not count the request itself, a value a log-scaled feature
    # cannot take): the update's first step predicts on the log's rows, and
    # one such row would fail every update until it left the window.
    try:
        estimator._check_rows(frame[names])
    except ValueError as exc:
        raise _invalid(("body", "rows"), f"observations: {exc}") from None
    records = []
    for row in rows:
        record = {k: (int(v) if k == OUTPUT_TOKENS_COL else v) for k, v in row.items()}
        records.append(record)
    return records
