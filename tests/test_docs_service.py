"""The "Serve the model" page's commands and code run as written."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

PAGE = Path(__file__).resolve().parents[1] / "docs" / "service.rst"


def _blocks(text):
    """``(language, body)`` of the page's bash and python code blocks, in order."""
    found = re.findall(r"\.\. code-block:: (bash|python)\n\n((?:    .*\n|\n)+)", text)
    return [(kind, re.sub(r"^    ", "", body, flags=re.M).strip()) for kind, body in found]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_serve_walkthrough_runs(tmp_path):
    port = str(_free_port())
    blocks = [(kind, body.replace("8600", port)) for kind, body in _blocks(PAGE.read_text())]
    assert [kind for kind, _ in blocks] == ["bash", "bash", "bash", "python", "bash", "bash"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    server, outputs = None, []
    try:
        for kind, body in blocks:
            if body.startswith("sklat serve"):
                log = open(tmp_path / "serve.log", "w")
                server = subprocess.Popen(
                    ["bash", "-c", f"exec {body}"], cwd=tmp_path, env=env, stdout=log, stderr=log
                )
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert server.poll() is None and time.monotonic() < deadline
                    time.sleep(0.2)
                continue
            command = ["bash", "-euo", "pipefail", "-c", body]
            if kind == "python":
                command = [sys.executable, "-c", body]
            done = subprocess.run(
                command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, done.stderr[-2000:]
            outputs.append(done.stdout)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    predicted = json.loads(outputs[1])
    assert predicted["model_version"] == 1 and len(predicted["predictions"]) == 2
    first = predicted["predictions"][0]
    assert first["tpot_ms"]["0.5"] <= first["tpot_ms"]["0.9"] and 0 <= first["attainment"] <= 1
    index, met, version = outputs[2].split()
    assert int(index) in (0, 1, 2) and met in ("True", "False") and version == "1"
    assert json.loads(outputs[3])["written"] == 1
    assert "sklat_observations_total 1" in outputs[4]
    assert (tmp_path / "observations" / "served" / "requests.jsonl").exists()
