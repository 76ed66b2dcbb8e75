"""The "profile, train, predict" page's commands run as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("transformers")

PAGE = Path(__file__).resolve().parents[1] / "docs" / "profiling.rst"


def _bash_blocks(text):
    """The bodies of the ``.. code-block:: bash`` directives, in order."""
    blocks = re.findall(r"\.\. code-block:: bash\n\n((?:    .*\n|\n)+)", text)
    return [re.sub(r"^    ", "", b, flags=re.M).strip() for b in blocks]


def test_profile_train_predict_commands_run(tmp_path):
    blocks = _bash_blocks(PAGE.read_text())
    assert len(blocks) == 4 and "sklat profile" in blocks[1]
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        MPLBACKEND="Agg",
    )
    outputs = []
    for block in blocks:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    results = list((tmp_path / "my_results").glob("*/requests.csv"))
    assert len(results) == 1 and len(pd.read_csv(results[0])) == 3 * 4 * 2
    assert (tmp_path / "my_model" / "model.safetensors").exists()
    predicted = pd.read_csv(__import__("io").StringIO(outputs[-1]))
    assert list(predicted["text_tokens"]) == [64, 768]
    assert (predicted["T_LLM_decode_ms"] > 0).all()
