"""A small local OpenAI-style streaming server for the endpoint tests.

The first part of the URL path chooses the behaviour (``/ok/v1/completions``,
``/stall/v1/completions``, ...). Tokens are streamed one per event with a
short pause, as ``data: {json}\\n\\n`` server-sent events, the last event with
``finish_reason`` and ``usage``; the prompt counts one token per word.
"""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STEP_S = 0.002
# The requests the busy modes have seen (refused the first time).
_SEEN, _BUSY_LOCK = set(), threading.Lock()


def _event(text=None, finish=None, usage=None):
    choice = {"index": 0, "text": "" if text is None else text}
    if finish:
        choice["finish_reason"] = finish
    obj = {"id": "x", "object": "text_completion", "choices": [choice]}
    if usage:
        obj["usage"] = usage
    return f"data: {json.dumps(obj)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # As streaming servers do: each event leaves at once (no Nagle delay).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        if self.path.endswith("/version"):
            return self._reply(200, "application/json", b'{"version": "0.0.test"}')
        self._reply(200, "application/json", b'{"status": "ok"}')

    def _reply(self, status, kind, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode, _, route = self.path.strip("/").partition("/")
        if route not in ("v1/completions", "v1/chat/completions"):
            # As an OpenAI-compatible server answers a path it does not serve.
            return self._reply(404, "application/json", b'{"detail": "Not Found"}')
        n = int(body["max_tokens"])
        prompt = len(body["prompt"].split())
        if mode.startswith("busy"):
            # Each request is refused the first time it comes, as an overloaded
            # engine refuses what it cannot take yet (per mode, so that tests
            # do not share their history).
            with _BUSY_LOCK:
                first = (mode, body["prompt"]) not in _SEEN
                _SEEN.add((mode, body["prompt"]))
            if first:
                status = 429 if len(body["prompt"]) % 2 else 503
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "0.01")
                refusal = b'{"error": "too many requests"}'
                self.send_header("Content-Length", str(len(refusal)))
                self.end_headers()
                self.wfile.write(refusal)
                return
        if mode == "error500":
            return self._reply(500, "application/json", b'{"error": "out of memory"}')
        if mode == "notsse":
            return self._reply(200, "application/json", b'{"choices": []}')
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if mode == "badgzip":
            self.send_header("Content-Encoding", "gzip")  # and a plain body
        self.end_headers()
        if mode == "keepalive":
            # SSE comments only, never a token, until the client gives up.
            try:
                for _ in range(200):
                    self._chunk(b": ping\n\n")
                    time.sleep(0.05)
            except OSError:
                pass
            return
        if mode == "short":
            n = max(2, n // 2)
        for i in range(n):
            time.sleep(STEP_S)
            if mode == "stall" and i == 2:
                time.sleep(2.0)
            if mode == "malformed" and i == 2:
                self._chunk(b"data: {not json\n\n")
                continue
            if mode == "drop" and i == 2:
                self.wfile.write(b"ff\r\ndata: {")  # a chunk cut short, then gone
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if mode == "manyevents":
                # Ten text events per token the usage will count.
                for j in range(10):
                    self._chunk(_event(f" w{i}.{j}"))
                continue
            if mode == "usage3":
                # Continuous usage statistics, up to three tokens per event after
                # the first: the running count says how many.
                if i == 0 or i % 3 == 0 or i == n - 1:
                    self._chunk(_event(f" w{i}", usage={"completion_tokens": i + 1}))
                continue
            if mode == "pairs" and i and i % 2:
                # The next token arrives in the same network write.
                second = _event(f" w{i + 1}") if i + 1 < n else b""
                self._chunk(_event(f" w{i}") + second)
                continue
            if mode == "pairs" and i and not i % 2:
                continue
            self._chunk(_event(f" w{i}"))
        usage = (
            None
            if mode == "nousage"
            else {
                "prompt_tokens": prompt + (1 if mode == "bos" else 0),
                "completion_tokens": {"badusage": "abc", "hugeusage": 10**9}.get(mode, n),
                "total_tokens": prompt + n,
            }
        )
        self._chunk(_event(finish="length" if mode != "short" else "stop", usage=usage))
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that gives up on a stream (the timeout tests' purpose)
        # leaves the handler writing to a closed socket: expected, not an
        # error to print in the test log.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Server:
    """Serve on 127.0.0.1 in a thread; ``url(mode)`` is an endpoint base URL."""

    def __enter__(self):
        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def url(self, mode):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
