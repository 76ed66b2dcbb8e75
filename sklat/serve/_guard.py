"""The ASGI middleware in front of every call: the bearer token, the body
size limit, and the call's service latency for the metrics."""

import hmac
import json
import time

# Routes the metrics name; any other path is counted as "other", so that a
# client walking random paths cannot grow the metrics without bound.
ROUTES = (
    "/v1/predict",
    "/v1/choose",
    "/v1/observations",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
)
# Open without the token: liveness and readiness probes.
_OPEN = ("/healthz", "/readyz")


class Guard:
    """Wraps the service's ASGI app."""

    def __init__(self, app, *, token, max_body_bytes, metrics):
        self.app = app
        self.token = None if token is None else f"Bearer {token}".encode()
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = {"code": 500, "started": False}

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            if self.token is not None and path not in _OPEN:
                given = headers.get(b"authorization", b"")
                if not hmac.compare_digest(given, self.token):
                    await _error(send_tracked, 401, "a valid bearer token is required.", auth=True)
                    return
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await _error(send_tracked, 413, too_large(self.max_body_bytes))
                return
            # A body sent without a length (chunked) is counted as it is read
            # (sklat.serve._app.read_json).
            await self.app(scope, receive, send_tracked)
        finally:
            self.metrics.call(route, status["code"], time.perf_counter() - start)


def too_large(limit):
    return f"the body is larger than the service's limit of {limit} bytes."


async def _error(send, code, message, auth=False):
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if auth:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
