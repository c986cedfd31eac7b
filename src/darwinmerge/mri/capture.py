"""One hooks context manager that records running reductions during forward passes.

Per decoder layer (forward hook with kwargs) and per probe sequence:
  * the sum over real tokens of cos(x_l, x_{l+1}) and the cosine on the last real token;
Per sparse layer (forward hook on the router, whose output in transformers 5.24 is
``(router_logits, routing_weights, selected_experts)`` for every supported MoE family):
  * the sum over real tokens of the normalised entropy of softmax(router_logits),
  * the top-k expert counts as chosen by the router (``hard_counts``),
  * tie-aware counts: experts strictly above the k-th probability take a slot each, the
    slots left are shared equally among experts tied at the k-th probability (|dp| <= 1e-6),
    which is the expected count under random tie-breaking (``expert_counts``),
  * the summed router probability per expert and the number of tokens with such ties.

Nothing else is kept unless ``keep_layer_inputs`` is set (the parent comparison uses it to
restart the forward pass at any layer). Hooks only record; metrics live in
:mod:`darwinmerge.mri.metrics`. Every handle is removed on exit, also after an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from darwinmerge.errors import ArchitectureMismatchError, ConfigError
from darwinmerge.mri.layout import ResolvedLayout, resolve_layout
from darwinmerge.mri.probes import ProbeBatch

__all__ = ["Capture", "CaptureRecord", "TIE_TOLERANCE", "LayerInputs"]

#: Two router probabilities closer than this count as tied at the k-th place.
TIE_TOLERANCE = 1e-6


@dataclass
class CaptureRecord:
    """Per-sequence running sums (float64). ``L`` layers, ``N`` sequences, ``S`` sparse
    layers, ``E`` experts."""

    num_layers: int
    num_sequences: int
    sparse_layers: tuple[int, ...]
    num_experts: int
    top_k: int
    tokens: torch.Tensor  # [N] real tokens seen per sequence
    cos_sum: torch.Tensor  # [L, N]
    last_cos: torch.Tensor  # [L, N]
    entropy_sum: torch.Tensor  # [S, N] sum of H / log E
    expert_counts: torch.Tensor  # [S, N, E] tie-aware
    hard_counts: torch.Tensor  # [S, N, E] as chosen by the router
    prob_sum: torch.Tensor  # [S, N, E]
    tie_tokens: torch.Tensor  # [S, N]
    seen: torch.Tensor = field(repr=False)  # [N] bool

    @classmethod
    def empty(cls, layout: ResolvedLayout, n: int) -> CaptureRecord:
        L, S, E = layout.num_layers, len(layout.sparse_layers), max(layout.num_experts, 1)
        z = torch.zeros
        return cls(
            num_layers=L,
            num_sequences=n,
            sparse_layers=layout.sparse_layers,
            num_experts=layout.num_experts,
            top_k=layout.top_k,
            tokens=z(n, dtype=torch.float64),
            cos_sum=z(L, n, dtype=torch.float64),
            last_cos=z(L, n, dtype=torch.float64),
            entropy_sum=z(S, n, dtype=torch.float64),
            expert_counts=z(S, n, E, dtype=torch.float64),
            hard_counts=z(S, n, E, dtype=torch.float64),
            prob_sum=z(S, n, E, dtype=torch.float64),
            tie_tokens=z(S, n, dtype=torch.float64),
            seen=z(n, dtype=torch.bool),
        )


@dataclass
class LayerInputs:
    """Input hidden state and call kwargs of every decoder layer for one batch."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise ArchitectureMismatchError(
        f"decoder layer returned {type(value).__name__}, expected a hidden-state tensor"
    )


class Capture:
    """``with Capture(model, num_sequences) as cap: cap.forward(batch) ...; cap.record``."""

    def __init__(
        self,
        model: nn.Module,
        num_sequences: int,
        *,
        routers: bool = True,
        keep_layer_inputs: bool = False,
        layout: ResolvedLayout | None = None,
    ) -> None:
        self.model = model
        self.layout = layout or resolve_layout(model)
        self.record = CaptureRecord.empty(self.layout, num_sequences)
        self._routers = routers
        self._keep = keep_layer_inputs
        self.layer_inputs: list[LayerInputs] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._batch: ProbeBatch | None = None
        self._sparse_pos = {layer: i for i, layer in enumerate(self.layout.sparse_layers)}

    # -- context -----------------------------------------------------------------
    def __enter__(self) -> Capture:
        try:
            for i, layer in enumerate(self.layout.layers):
                self._handles.append(
                    layer.register_forward_hook(self._layer_hook(i), with_kwargs=True)
                )
                if self._keep:
                    self._handles.append(
                        layer.register_forward_pre_hook(self._pre_hook(i), with_kwargs=True)
                    )
            if self._routers:
                for i, router in self.layout.routers.items():
                    self._handles.append(router.register_forward_hook(self._router_hook(i)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._batch = None

    @property
    def active(self) -> bool:
        return bool(self._handles)

    # -- driving -------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, batch: ProbeBatch) -> torch.Tensor:
        """Run the model on one batch and return its logits [B, T, V] (float32)."""
        if not self.active:
            raise ConfigError("Capture.forward called outside its `with` block")
        device = next(self.model.parameters()).device
        self._batch = batch
        if self._keep:
            self.layer_inputs.append(
                LayerInputs(
                    [None] * self.layout.num_layers,  # type: ignore[list-item]
                    [{}] * self.layout.num_layers,
                )
            )
        try:
            out = self.model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.mask.to(device),
                use_cache=False,
            )
        finally:
            self._batch = None
        self.record.tokens[batch.seq_index] = batch.mask.sum(1).double()
        self.record.seen[batch.seq_index] = True
        return out.logits.float()

    def _current(self) -> ProbeBatch:
        if self._batch is None:
            raise ConfigError("model ran inside Capture without Capture.forward(batch)")
        return self._batch

    # -- hooks -------------------------------------------------------------------
    def _pre_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            slot = self.layer_inputs[-1]
            slot.hidden[index] = x.detach()
            slot.kwargs[index] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

        return hook

    def _layer_hook(self, index: int) -> Any:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
        ) -> None:
            batch = self._current()
            x = args[0] if args else kwargs["hidden_states"]
            y = _first_tensor(out)
            mask = batch.mask.to(x.device, dtype=torch.float64)
            cos = F.cosine_similarity(x.float(), y.float(), dim=-1, eps=1e-12).double()
            rec = self.record
            rec.cos_sum[index, batch.seq_index] = (cos * mask).sum(1).cpu()
            last = batch.mask.sum(1).to(x.device) - 1
            rec.last_cos[index, batch.seq_index] = cos.gather(1, last[:, None])[:, 0].cpu()

        return hook

    def _router_hook(self, index: int) -> Any:
        pos = self._sparse_pos[index]

        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            batch = self._current()
            if not (isinstance(out, tuple) and len(out) == 3):
                raise ArchitectureMismatchError(
                    f"router of layer {index} returned {type(out).__name__}; expected "
                    "(router_logits, routing_weights, selected_experts)"
                )
            logits, _, chosen = out
            B, T = batch.mask.shape
            E = logits.shape[-1]
            if logits.shape[0] != B * T:
                raise ArchitectureMismatchError(
                    f"router of layer {index}: {logits.shape[0]} rows for a {B}x{T} batch"
                )
            k = chosen.shape[-1]
            mask = batch.mask.to(logits.device, dtype=torch.float64).reshape(B * T, 1)
            probs = torch.softmax(logits.double(), dim=-1)
            ent = -(probs * torch.log(probs.clamp_min(1e-300))).sum(-1, keepdim=True)
            ent = ent / math.log(E) if E > 1 else ent * 0
            kth = torch.topk(probs, k, dim=-1).values[:, -1:]
            above = (probs > kth + TIE_TOLERANCE).double()
            tied = ((probs - kth).abs() <= TIE_TOLERANCE).double()
            slots = k - above.sum(-1, keepdim=True)
            ntied = tied.sum(-1, keepdim=True)
            soft = above + tied * slots / ntied
            hard = F.one_hot(chosen.long(), E).double().sum(1)
            ties = (ntied > slots).double()

            def per_seq(v: torch.Tensor) -> torch.Tensor:
                return (v * mask).reshape(B, T, -1).sum(1).cpu()

            rec = self.record
            idx = batch.seq_index
            rec.entropy_sum[pos, idx] = per_seq(ent)[:, 0]
            rec.expert_counts[pos, idx] = per_seq(soft)
            rec.hard_counts[pos, idx] = per_seq(hard)
            rec.prob_sum[pos, idx] = per_seq(probs)
            rec.tie_tokens[pos, idx] = per_seq(ties)[:, 0]
            if rec.top_k == 0:
                rec.top_k = k

        return hook
