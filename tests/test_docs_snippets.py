"""Every Python code block of the README and the docs runs as written.

The blocks of one page run in order in one namespace, as a reader would type
them. (``.. plot::`` blocks run in the Sphinx build, the "profile, train,
predict" commands in test_docs_profile.py, the "Serve the model" page, whose
code calls a running service, in test_docs_service.py.)
"""

import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _rst_blocks(text):
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text)
    return [re.sub(r"^    ", "", b, flags=re.M) for b in blocks]


def _markdown_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


PAGES = {"README.md": _markdown_blocks((ROOT / "README.md").read_text())}
for page in sorted((ROOT / "docs").glob("*.rst")):
    if page.name == "service.rst":
        continue
    blocks = _rst_blocks(page.read_text())
    if blocks:
        PAGES[f"docs/{page.name}"] = blocks


def test_the_pages_have_code():
    assert len(PAGES["docs/user_guide.rst"]) >= 4 and PAGES["README.md"]


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_code_runs_as_written(page, monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, block in enumerate(PAGES[page]):
            try:
                exec(compile(block, f"{page} block {i + 1}", "exec"), namespace)
            except Exception as exc:  # name the block, keep the traceback
                raise AssertionError(f"{page}, code block {i + 1} fails: {exc!r}") from exc
