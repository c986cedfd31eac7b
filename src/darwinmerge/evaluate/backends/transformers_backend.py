"""Transformers backend: a resident model, batched greedy generation with KV cache and
left padding, batched continuation log-likelihoods with right padding, CPU or CUDA."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from darwinmerge.errors import (
    ArchitectureMismatchError,
    CheckpointError,
    ConfigError,
    DarwinError,
    EvaluationError,
)
from darwinmerge.evaluate.backends.base import BACKENDS
from darwinmerge.evaluate.backends.stopping import answer_line_end

__all__ = ["TransformersBackend"]


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


class _AnswerLineCriterion:
    """Per-sequence stop flag for ``model.generate`` (the answer-line rule).

    Only sequences whose newest token contains a newline are decoded and checked.
    """

    def __init__(self, tokenizer: Any, prompt_len: int, newline_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.newline_ids = newline_ids

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for row, token in enumerate(last):
            if token in self.newline_ids:
                text = self.tokenizer.decode(
                    input_ids[row, self.prompt_len :], skip_special_tokens=True
                )
                done[row] = answer_line_end(text) is not None
        return done


class TransformersBackend:
    """Greedy evaluation with a Hugging Face causal LM kept resident in memory.

    ``model`` is a path / hub-style folder (loaded with ``AutoModelForCausalLM``) or an
    already built ``PreTrainedModel`` (then ``tokenizer`` is required). Generation
    stops at EOS, at ``max_new_tokens``, or (``stop_at_answer_line``) right after the
    newline that ends the first ``ANSWER: ...`` line.
    """

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any = None,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        max_new_tokens: int = 32,
        dtype: torch.dtype = torch.float32,
        stop_at_answer_line: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        from transformers import AutoModelForCausalLM

        from darwinmerge.checkpoint.tokenizer import load_tokenizer

        if isinstance(model, (str, Path)):
            path = Path(model)
            if not (path / "config.json").is_file():
                raise CheckpointError(f"{path}: not a model folder (no config.json)")
            if tokenizer is None or isinstance(tokenizer, (str, Path)):  # before the weights
                tokenizer = load_tokenizer(path, tokenizer)
            try:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            except Exception as exc:  # transformers raises many kinds
                raise CheckpointError(f"{path}: cannot load model ({exc})") from exc
        elif tokenizer is None:
            raise ConfigError("TransformersBackend: pass a tokenizer with an in-memory model")
        else:
            model = model.to(dtype=dtype)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for but torch sees no CUDA device")
        resident: Any = model  # transformers types .to() oddly
        self.model = resident.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop_at_answer_line = stop_at_answer_line
        self.eos_id: int | None = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_id: int = (
            pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)
        )
        self._newline_ids: set[int] | None = None

    # ----------------------------------------------------------------- weights
    def load_state(self, tensors: Mapping[str, torch.Tensor], *, strict: bool = False) -> None:
        """Copy ``tensors`` (names as in ``model.state_dict()``) into the resident model.

        A subset is fine unless ``strict``; unknown names and shape mismatches raise.
        Values are cast to the model's dtype and device; tied weights are written once
        (``darwinmerge.checkpoint.model_writer.write_into_model`` does the work).
        """
        from darwinmerge.checkpoint.model_writer import write_into_model

        try:
            write_into_model(self.model, tensors, strict=strict)
        except ArchitectureMismatchError as exc:
            raise ArchitectureMismatchError(f"load_state: {exc}") from None
        except DarwinError as exc:
            raise EvaluationError(f"load_state: {exc}") from None

    # ------------------------------------------------------------- generation
    def _newline_token_ids(self) -> set[int]:
        if self._newline_ids is None:
            vocab_size = len(self.tokenizer)
            self._newline_ids = {i for i in range(vocab_size) if "\n" in self.tokenizer.decode([i])}
        return self._newline_ids

    def _finish(self, token_ids: list[int]) -> str:
        if self.eos_id is not None and self.eos_id in token_ids:
            token_ids = token_ids[: token_ids.index(self.eos_id)]
        text: str = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if self.stop_at_answer_line:
            end = answer_line_end(text)
            if end is not None:
                text = text[:end]
        return text

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (prompt text not included)."""
        from transformers import GenerationConfig, StoppingCriteriaList

        encoded = [self._encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise EvaluationError(f"generate: prompt {i} encodes to no tokens")
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        out: list[str] = [""] * len(prompts)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        for batch in _batches(order, self.batch_size):
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = encoded[i]
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                mask[row, width - len(ids) :] = 1
            criteria = StoppingCriteriaList()
            if self.stop_at_answer_line:
                criteria.append(
                    _AnswerLineCriterion(self.tokenizer, width, self._newline_token_ids())
                )
            result = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                stopping_criteria=criteria,
            )
            for row, i in enumerate(batch):
                out[i] = self._finish(result[row, width:].tolist())
        return out

    # ---------------------------------------------------------- loglikelihood
    def _split_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation): the continuation's ids are the tail of
        the joint encoding when the context's encoding is its prefix, else encoded alone.
        An empty context becomes [BOS] (or [EOS] without a BOS)."""
        ctx = self._encode(context) if context else []
        whole = self._encode(context + continuation) if context else []
        if ctx and len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
            cont = whole[len(ctx) :]
        else:
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            raise EvaluationError(f"loglikelihood: continuation {continuation!r} has no tokens")
        if not ctx:
            start = self.tokenizer.bos_token_id
            start = start if start is not None else self.eos_id
            if start is None:
                raise EvaluationError("loglikelihood: empty context and no BOS/EOS token")
            ctx = [start]
        return ctx, cont

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Summed log-probability of each continuation given its context."""
        return [total for total, _ in self._continuations(requests)]

    def gold_margins(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, float]]:
        """Per request, (summed log-probability of the continuation, its greedy margin):
        the smallest, over the continuation's tokens, of ``log p(token) - log p(best
        other token)`` given the context and the continuation's earlier tokens. The
        margin is positive exactly when greedy decoding writes the whole continuation."""
        return self._continuations(requests)

    @torch.inference_mode()
    def _continuations(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, float]]:
        split = [self._split_request(c, x) for c, x in requests]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        seqs: list[tuple[list[int], int]] = []  # (input ids, number of continuation tokens)
        for ctx, cont in split:
            full = (ctx + cont)[:-1]
            if limit is not None and len(full) > limit:
                if len(cont) > limit:
                    raise EvaluationError(
                        f"loglikelihood: continuation of {len(cont)} tokens exceeds the "
                        f"model's {limit} positions"
                    )
                full = full[-limit:]
            seqs.append((full, len(cont)))
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
        out: list[tuple[float, float]] = [(0.0, 0.0)] * len(seqs)
        for batch in _batches(order, self.batch_size):
            width = max(len(seqs[i][0]) for i in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = seqs[i][0]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
            for row, i in enumerate(batch):
                ids, n_cont = seqs[i]
                _, cont = split[i]
                length = len(ids)
                rows = logits[row, length - n_cont : length].float().log_softmax(-1)
                target = torch.tensor(cont, device=rows.device)
                gold = rows.gather(-1, target[:, None])[:, 0]
                other = rows.scatter(-1, target[:, None], -torch.inf).amax(-1)
                out[i] = (float(gold.sum()), float((gold - other).min()))
        return out


@BACKENDS.register("transformers")
def _make_transformers(model: Any, tokenizer: Any = None, **options: Any) -> TransformersBackend:
    return TransformersBackend(model, tokenizer, **options)
