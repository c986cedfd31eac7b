"""vLLM backend (optional extra ``darwinmerge[vllm]``, imported lazily, GPU only).

Greedy generation through ``vllm.LLM``; continuation log-likelihoods from prompt
log-probabilities. Candidate weights are swapped in place in the running engine through
vLLM's worker extensions: the engine is started with
``worker_extension_cls=WEIGHT_SWAP_EXTENSION`` and :meth:`VLLMBackend.load_state` calls
:meth:`WeightSwapExtension.darwin_load_weights` on every worker
(``LLM.collective_rpc``), which hands the tensors (checkpoint names) to the model's own
``load_weights`` (vLLM's loader: it fuses q/k/v, gate/up and experts as it does for a
checkpoint), then the prefix cache is reset so no KV computed with the old weights is
reused. Nothing is written to disk per candidate. Guarded: without vLLM the import fails
with the install hint; this path is checked only on a GPU machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from darwinmerge.errors import ConfigError, EvaluationError, MissingDependencyError
from darwinmerge.evaluate.backends.base import BACKENDS
from darwinmerge.evaluate.backends.stopping import answer_line_end

__all__ = ["VLLMBackend", "WeightSwapExtension", "WEIGHT_SWAP_EXTENSION", "import_vllm"]

INSTALL_HINT = "pip install 'darwinmerge[vllm]' (needs a CUDA machine)"
WEIGHT_SWAP_EXTENSION = "darwinmerge.evaluate.backends.vllm_backend.WeightSwapExtension"


class WeightSwapExtension:
    """Mixed into every vLLM GPU worker (``worker_extension_cls``): in-place weights."""

    model_runner: Any

    def darwin_load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> int:
        """Load ``(checkpoint name, tensor)`` pairs into the resident model with the
        model's own ``load_weights``; returns how many names it reported loaded."""
        model = self.model_runner.model
        device = next(model.parameters()).device
        loaded = model.load_weights(weights=((n, t.to(device)) for n, t in weights))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(loaded) if loaded is not None else len(weights)


def import_vllm() -> Any:
    """Import ``vllm`` or raise :class:`MissingDependencyError` with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(
            f"the vllm backend needs the optional package vllm: {INSTALL_HINT}"
        ) from exc
    return vllm


class VLLMBackend:
    """Greedy generation and log-likelihoods with vLLM for a model folder."""

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any = None,
        *,
        batch_size: int = 256,
        max_new_tokens: int = 32,
        dtype: torch.dtype | str = "auto",
        stop_at_answer_line: bool = True,
        **engine_options: Any,
    ) -> None:
        vllm = import_vllm()
        if not isinstance(model, (str, Path)):
            raise ConfigError("the vllm backend needs a model folder path, not a model object")
        dtype_name = str(dtype).replace("torch.", "")
        engine_options.setdefault("worker_extension_cls", WEIGHT_SWAP_EXTENSION)
        self.llm = vllm.LLM(model=str(model), dtype=dtype_name, **engine_options)
        self._vllm = vllm
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop_at_answer_line = stop_at_answer_line

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Swap ``tensors`` (checkpoint names) into the running engine, in place."""
        weights = [(name, t.detach().cpu()) for name, t in tensors.items()]
        try:
            self.llm.collective_rpc("darwin_load_weights", args=(weights,))
        except AttributeError as exc:
            raise EvaluationError(
                f"this vLLM has no worker extensions / collective_rpc ({exc}); "
                f"upgrade vLLM or use --backend transformers"
            ) from exc
        self.llm.reset_prefix_cache()

    def generate(self, prompts: Sequence[str]) -> list[str]:
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        texts = []
        for out in outputs:
            text = out.outputs[0].text
            if self.stop_at_answer_line:
                end = answer_line_end(text)
                text = text if end is None else text[:end]
            texts.append(text)
        return texts

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        tok = self.llm.get_tokenizer()
        prompts = []
        spans = []
        for context, continuation in requests:
            ctx = tok(context)["input_ids"] if context else [tok.bos_token_id or tok.eos_token_id]
            whole = (
                tok(context + continuation)["input_ids"]
                if context
                else ctx + tok(continuation, add_special_tokens=False)["input_ids"]
            )
            if whole[: len(ctx)] != ctx:
                whole = ctx + tok(continuation, add_special_tokens=False)["input_ids"]
            prompts.append({"prompt_token_ids": whole})
            spans.append((len(ctx), whole))
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        result = []
        for out, (start, whole) in zip(outputs, spans, strict=True):
            total = 0.0
            for pos in range(start, len(whole)):
                total += out.prompt_logprobs[pos][whole[pos]].logprob
            result.append(total)
        return result


@BACKENDS.register("vllm")
def _make_vllm(model: Any, tokenizer: Any = None, **options: Any) -> VLLMBackend:
    options.pop("device", None)  # vLLM places the model itself
    return VLLMBackend(model, tokenizer, **options)
