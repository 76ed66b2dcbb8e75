"""Acquiring measurements: profiling a model or a running engine, and importing
serving-benchmark files, into the results folders that ``sklat train`` reads.

- :func:`profile_model`: time a Hugging Face ``transformers`` model in process
  (the ``profile`` extra);
- :func:`profile_endpoint`: time a running OpenAI-compatible engine, event by
  event (the ``endpoint`` extra);
- :func:`read_benchmark`: read a vLLM, SGLang, GuideLLM, AIPerf, LLMPerf or
  llama.cpp benchmark file into the results columns.

Importing this package loads neither torch nor the estimator: a host that only
measures needs neither.
"""

from ._endpoint import profile_endpoint
from ._model import profile_model
from ._read import read_benchmark

__all__ = ["profile_endpoint", "profile_model", "read_benchmark"]
