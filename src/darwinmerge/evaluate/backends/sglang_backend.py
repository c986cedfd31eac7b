"""SGLang backend (optional, imported lazily; a CUDA machine): checked weight swaps.

Greedy generation and log-likelihoods through ``sglang.Engine`` (offline engine: input
token ids in, ``meta_info["input_token_logprobs"]`` out). A candidate reaches the engine
through SGLang's own weight-update API, ``Engine.update_weights_from_disk(folder)``, on
the candidate written whole into a folder on ``/dev/shm`` (SGLang reloads a whole model
folder in place; no tensor is pickled), and is proven by the same check as the vLLM
backend (:class:`~darwinmerge.evaluate.backends.checked.CheckedEngine`): the engine's
log-probabilities on reference token sequences against darwin's own, a fresh engine on
the folder on a mismatch, refusal in one line when that disagrees too.

Guarded: without SGLang the import fails with the install hint. SGLang's CPU path needs
its CPU kernels built from source; this project checks it only on a lent GPU
(``benchmarks/gpu_check.sh``).
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
from darwinmerge.evaluate.backends.checked import CheckedEngine
from darwinmerge.evaluate.backends.stopping import answer_line_end

__all__ = ["SGLangBackend", "import_sglang"]

INSTALL_HINT = "pip install sglang (on a CUDA machine; SGLang's CPU kernels build from source)"
SHM = Path("/dev/shm")


def import_sglang() -> Any:
    """Import ``sglang`` or raise :class:`MissingDependencyError` with the install hint."""
    try:
        import sglang
    except ImportError as exc:
        raise MissingDependencyError(
            f"the sglang backend needs the optional package sglang: {INSTALL_HINT}"
        ) from exc
    return sglang


class SGLangBackend(CheckedEngine):
    """Greedy generation and log-likelihoods with ``sglang.Engine`` for a model folder;
    candidates by :meth:`swap` (``update_weights_from_disk``, checked)."""

    engine_name = "SGLang"

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
        self._sgl = import_sglang()
        if not isinstance(model, (str, Path)):
            raise ConfigError("the sglang backend needs a model folder path, not a model object")
        from transformers import AutoTokenizer

        self.dtype = str(dtype).replace("torch.", "")
        self._options = engine_options
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop_at_answer_line = stop_at_answer_line
        self.tokenizer = (
            tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model)
        )
        base = Path(swap_dir) if swap_dir else (SHM if SHM.is_dir() else None)
        self.scratch = Path(tempfile.mkdtemp(prefix="darwin-sglang-", dir=base))
        # removed with the backend even when close() is never called (tmpfs is memory)
        weakref.finalize(self, shutil.rmtree, self.scratch, True)
        self.engine: Any = None
        CheckedEngine.__init__(self)
        self.restart(model)

    def restart(self, folder: str | Path) -> float:
        start = time.perf_counter()
        self.usable = False
        self.close_engine()
        self.engine = self._sgl.Engine(model_path=str(folder), dtype=self.dtype, **self._options)
        self.usable = True
        return time.perf_counter() - start

    def close_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()

    def close(self) -> None:
        self.close_engine()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def push(
        self, tensors: Mapping[str, torch.Tensor], folder: Callable[[], str | Path] | None = None
    ) -> float:
        """SGLang reloads whole folders: ``folder()`` (the candidate written whole) is
        loaded in place with ``update_weights_from_disk``."""
        if folder is None:
            raise EvaluationError("sglang: an in-place update needs the candidate's folder")
        start = time.perf_counter()
        self.usable = False
        result = self.engine.update_weights_from_disk(str(folder()))
        ok, message = (result[0], result[1]) if isinstance(result, tuple) else (result, "")
        if not ok:
            raise RuntimeError(f"update_weights_from_disk refused: {message}")
        self.engine.flush_cache()
        return time.perf_counter() - start

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Unchecked in-place update with SGLang's ``update_weights_from_tensor``
        (checkpoint names; the Backend protocol); the search uses :meth:`swap`."""
        self.usable = False
        result = self.engine.update_weights_from_tensor(named_tensors=list(tensors.items()))
        ok = result[0] if isinstance(result, tuple) else bool(result)
        if not ok:
            raise EvaluationError(f"sglang update_weights_from_tensor refused: {result}")
        self.engine.flush_cache()
        self.usable = True

    def _run(self, token_ids: Sequence[Sequence[int]], **params: Any) -> list[dict[str, Any]]:
        out = self.engine.generate(input_ids=[list(r) for r in token_ids], **params)
        return list(out) if isinstance(out, list) else [out]

    def prompt_logprobs(self, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        outs = self._run(
            token_ids,
            sampling_params={"temperature": 0.0, "max_new_tokens": 1},
            return_logprob=True,
            logprob_start_len=0,
        )
        rows = []
        for out, ids in zip(outs, token_ids, strict=True):
            entries = out["meta_info"]["input_token_logprobs"]  # (logprob, id, text); first None
            rows.append([float(entries[i][0]) for i in range(1, len(ids))])
        return rows

    def generate(self, prompts: Sequence[str]) -> list[str]:
        self._usable("generate")
        ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        outs = self._run(
            ids, sampling_params={"temperature": 0.0, "max_new_tokens": self.max_new_tokens}
        )
        texts = []
        for out in outs:
            text = str(out["text"])
            if self.stop_at_answer_line:
                end = answer_line_end(text)
                text = text if end is None else text[:end]
            texts.append(text)
        return texts

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        from darwinmerge.evaluate.backends.vllm_backend import _split_request

        self._usable("loglikelihood")
        split = [_split_request(self.tokenizer, c, x) for c, x in requests]
        rows = self.prompt_logprobs([ctx + cont for ctx, cont in split])
        return [float(sum(row[len(ctx) - 1 :])) for row, (ctx, _) in zip(rows, split, strict=True)]

    def gold_margins(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, float]]:
        """(summed log-probability, greedy margin) per request, as the transformers
        backend defines them; the runner-up comes from SGLang's top-2 input logprobs
        (``input_top_logprobs``: per position a list of (logprob, token id, text))."""
        from darwinmerge.evaluate.backends.vllm_backend import _split_request

        self._usable("loglikelihood")
        split = [_split_request(self.tokenizer, c, x) for c, x in requests]
        ids = [ctx + cont for ctx, cont in split]
        outs = self._run(
            ids,
            sampling_params={"temperature": 0.0, "max_new_tokens": 1},
            return_logprob=True,
            logprob_start_len=0,
            top_logprobs_num=2,
        )
        result = []
        for out, whole, (ctx, _) in zip(outs, ids, split, strict=True):
            meta = out["meta_info"]
            total, margin = 0.0, math.inf
            for pos in range(len(ctx), len(whole)):
                gold = float(meta["input_token_logprobs"][pos][0])
                top = meta["input_top_logprobs"][pos]
                rivals = [float(e[0]) for e in top if e[1] != whole[pos]]
                total += gold
                margin = min(margin, gold - max(rivals, default=-math.inf))
            result.append((total, margin))
        return result


@BACKENDS.register("sglang")
def _make_sglang(model: Any, tokenizer: Any = None, **options: Any) -> SGLangBackend:
    options.pop("device", None)  # SGLang places the model itself
    return SGLangBackend(model, tokenizer, **options)
