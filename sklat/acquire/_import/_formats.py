"""The benchmark formats sklat reads, their detection and the file loader."""

import json
from pathlib import Path

from ...exceptions import BenchmarkFormatError
from . import _aiperf, _guidellm, _llamacpp, _llmperf, _serve_arrays

# name -> (detect(docs), read(docs, path, tool))
FORMATS = {
    "vllm": (_serve_arrays.is_vllm, _serve_arrays.read),
    "sglang": (_serve_arrays.is_sglang, _serve_arrays.read),
    "guidellm": (_guidellm.detect, _guidellm.read),
    "aiperf": (_aiperf.detect, _aiperf.read),
    "llmperf": (_llmperf.detect, _llmperf.read),
    "llama.cpp": (_llamacpp.detect, _llamacpp.read),
}
YAML_SUFFIXES = (".yaml", ".yml")


def load_documents(path):
    """The JSON values of a file: one JSON document, JSON Lines, or JSON
    objects written one after another (``--append-result``); YAML for
    ``.yaml`` / ``.yml``. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file.")
    if path.suffix.lower() in YAML_SUFFIXES:
        try:
            import yaml
        except ImportError:
            raise ImportError(f"reading {path} needs PyYAML: pip install 'sklat[yaml]'") from None
        try:
            with open(path, encoding="utf-8") as f:
                return [yaml.safe_load(f)]
        except yaml.YAMLError as exc:
            raise BenchmarkFormatError(f"{path}: not valid YAML ({exc}).") from None
    try:
        # utf-8-sig: a byte-order mark (as some Windows editors write) is not JSON.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchmarkFormatError(f"{path}: not UTF-8 text ({exc}).") from None
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)
    docs, pos = [], 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            break
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except _DuplicateKey as exc:
            line = text.count("\n", 0, pos) + 1
            raise BenchmarkFormatError(
                f"{path}: the JSON object starting at line {line} holds the key {exc.key!r} "
                "twice; which value is meant cannot be known."
            ) from None
        except (json.JSONDecodeError, RecursionError) as exc:
            line = text.count("\n", 0, getattr(exc, "pos", pos)) + 1
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise BenchmarkFormatError(
                f"{path}, line {line}: not valid JSON ({reason}); a truncated file?"
            ) from None
        docs.append(doc)
    if not docs:
        raise BenchmarkFormatError(f"{path}: the file is empty.")
    return docs


class _DuplicateKey(ValueError):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs):
    """A JSON object's dict, refusing a key given twice (json keeps the last)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_file(path, fmt="auto"):
    """``(Importer, format name)`` for one benchmark file."""
    docs = load_documents(path)
    if fmt == "auto":
        found = [name for name, (detect, _) in FORMATS.items() if detect(docs)]
        if not found:
            raise BenchmarkFormatError(
                f"{path}: not a benchmark file sklat recognises; formats considered: "
                f"{', '.join(FORMATS)}. Name one with format=... (--format)."
            )
        if len(found) > 1:
            raise BenchmarkFormatError(
                f"{path}: ambiguous: the file looks like {' and '.join(found)}; name the "
                "format with format=... (--format)."
            )
        fmt = found[0]
    if fmt not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {list(FORMATS)}; got {fmt!r}.")
    detect, read = FORMATS[fmt]
    if not detect(docs):
        raise BenchmarkFormatError(f"{path}: not a {fmt} benchmark file.")
    importer = read(docs, path, fmt)
    importer.finish()
    return importer, fmt
