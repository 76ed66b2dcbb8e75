"""Sphinx configuration of the sklat documentation."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import sklat  # noqa: E402
from sklat.cli import build_parser  # noqa: E402

project = "sklat"
author = "The sklat developers"
copyright = "2026, The sklat developers"
release = version = sklat.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
]
autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# The metadata-routing setters come from scikit-learn with docstrings that
# point into scikit-learn's own docs; the user guide explains their use.
autodoc_default_options = {
    "members": True,
    "exclude-members": "set_fit_request, set_predict_request, set_score_request",
}
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
html_theme = "pydata_sphinx_theme"
html_static_path = ["_static"]
html_title = f"sklat {release}"
exclude_patterns = ["_build"]
templates_path = []
os.environ.setdefault("MPLBACKEND", "Agg")


def _write_cli_help():
    """Render ``sklat --help`` and each subcommand's help for cli.rst."""
    parser = build_parser()
    out = HERE / "generated"
    out.mkdir(exist_ok=True)
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    (out / "cli_sklat.txt").write_text(parser.format_help())
    for name, subparser in sub.choices.items():
        (out / f"cli_{name}.txt").write_text(subparser.format_help())


_write_cli_help()
