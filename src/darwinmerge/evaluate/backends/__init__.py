"""Model runners: transformers (default), vLLM and SGLang (optional, checked swaps)."""

from darwinmerge.evaluate.backends.base import BACKENDS, Backend, BackendFactory, make_backend
from darwinmerge.evaluate.backends.checked import CheckedEngine, SwapCheck
from darwinmerge.evaluate.backends.sglang_backend import SGLangBackend
from darwinmerge.evaluate.backends.stopping import ANSWER_LINE_STOP, answer_line_end
from darwinmerge.evaluate.backends.transformers_backend import TransformersBackend
from darwinmerge.evaluate.backends.vllm_backend import VLLMBackend, import_vllm

__all__ = [
    "ANSWER_LINE_STOP",
    "BACKENDS",
    "Backend",
    "BackendFactory",
    "CheckedEngine",
    "SGLangBackend",
    "SwapCheck",
    "TransformersBackend",
    "VLLMBackend",
    "answer_line_end",
    "import_vllm",
    "make_backend",
]
