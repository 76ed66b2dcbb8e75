"""Importers of serving-benchmark files (see :func:`sklat.io.read_benchmark`).

One module per tool, each written from that tool's own writer code (cited in
its docstring); :mod:`._convention` turns what a tool recorded into rows of the
results format, the same way for every tool.
"""
