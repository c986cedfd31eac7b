"""The zoo's model shape and a plain, deterministic torch training loop.

Model: a tiny ``Qwen3_5MoeForCausalLM`` (``model_type`` ``qwen3_5_moe_text``), the text
stack of the seed's family: Gated DeltaNet linear-attention layers with one
full-attention layer last, a sparse MoE (top-k routed experts plus a gated shared
expert) in every layer.

Loop: AdamW (betas 0.9 / 0.95, weight decay 0.01 on matrices), linear warm-up then
cosine decay to ``min_lr_ratio * lr``, gradient clipping at 1.0. Documents are packed
whole into rows of ``seq_len`` tokens (``doc + <|endoftext|>``, right-padded); the loss
is the next-token cross-entropy on completion tokens only (trace, answer line, EOS),
so capacity goes to the skills and not to predicting random prompts. Determinism: one
torch thread, seeded init, seeded data stream; the same config and seed give
bit-identical weights on the same machine and library versions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from darwinmerge.zoo.skills import Doc

__all__ = [
    "ZooModelConfig",
    "TrainConfig",
    "TrainStats",
    "build_model",
    "encode_doc",
    "packed_batches",
    "routing_balance",
    "routed_utilisation",
    "train_steps",
]


class ZooModelConfig(BaseModel):
    """Shape of the zoo parents (defaults: ~1.3 M parameters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden_size: int = Field(default=96, ge=16)
    num_layers: int = Field(default=4, ge=2)
    full_attention_every: int = Field(default=4, ge=1)
    num_attention_heads: int = Field(default=4, ge=1)
    num_key_value_heads: int = Field(default=2, ge=1)
    head_dim: int = Field(default=32, ge=8)
    linear_num_key_heads: int = Field(default=2, ge=1)
    linear_num_value_heads: int = Field(default=4, ge=1)
    linear_head_dim: int = Field(default=32, ge=8)
    num_experts: int = Field(default=8, ge=2)
    num_experts_per_tok: int = Field(default=2, ge=1)
    moe_intermediate_size: int = Field(default=96, ge=8)
    shared_expert_intermediate_size: int = Field(default=96, ge=8)
    max_position_embeddings: int = Field(default=256, ge=32)

    def layer_types(self) -> list[str]:
        k = self.full_attention_every
        return [
            "full_attention" if (i + 1) % k == 0 else "linear_attention"
            for i in range(self.num_layers)
        ]


class TrainConfig(BaseModel):
    """One training phase."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(ge=0)
    lr: float = Field(gt=0)
    warmup: int = Field(default=20, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    batch_size: int = Field(default=16, ge=1)
    seq_len: int = Field(default=128, ge=16)
    weight_decay: float = Field(default=0.01, ge=0)
    train_only: tuple[str, ...] = ()
    """If given, only parameters whose name contains one of these substrings train."""


@dataclass(frozen=True)
class TrainStats:
    steps: int
    tokens: int
    loss_tokens: int
    first_loss: float
    last_loss: float
    seconds: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "steps": self.steps,
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
            "first_loss": round(self.first_loss, 4),
            "last_loss": round(self.last_loss, 4),
            "seconds": round(self.seconds, 1),
        }


def build_model(cfg: ZooModelConfig, vocab_size: int, seed: int, eos_id: int) -> torch.nn.Module:
    """A freshly initialised ``Qwen3_5MoeForCausalLM`` (seeded)."""
    from transformers import Qwen3_5MoeTextConfig
    from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import Qwen3_5MoeForCausalLM

    config = Qwen3_5MoeTextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        linear_key_head_dim=cfg.linear_head_dim,
        linear_value_head_dim=cfg.linear_head_dim,
        linear_num_key_heads=cfg.linear_num_key_heads,
        linear_num_value_heads=cfg.linear_num_value_heads,
        num_experts=cfg.num_experts,
        num_experts_per_tok=cfg.num_experts_per_tok,
        moe_intermediate_size=cfg.moe_intermediate_size,
        shared_expert_intermediate_size=cfg.shared_expert_intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        layer_types=cfg.layer_types(),
        tie_word_embeddings=False,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen3_5MoeForCausalLM(config)
    model.config.architectures = ["Qwen3_5MoeForCausalLM"]
    return model


def encode_doc(encode: Callable[[str], list[int]], doc: Doc, eos_id: int) -> tuple[list[int], int]:
    """Token ids of ``doc + EOS`` and the number of prompt tokens (no loss there).

    The prompt ends with a newline, which the Qwen split regex always isolates, so the
    ids of prompt and completion concatenate exactly to the ids of the whole text."""
    p = encode(doc.prompt)
    c = encode(doc.completion)
    return p + c + [eos_id], len(p)


def packed_batches(
    docs: Iterator[Doc],
    encode: Callable[[str], list[int]],
    *,
    eos_id: int,
    batch_size: int,
    seq_len: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(input_ids, labels)`` batches; whole documents packed per row."""
    pending: tuple[list[int], int] | None = None
    while True:
        rows_in, rows_lab = [], []
        for _ in range(batch_size):
            ids: list[int] = []
            lab: list[int] = []
            while True:
                if pending is None:
                    pending = encode_doc(encode, next(docs), eos_id)
                d_ids, n_prompt = pending
                if len(d_ids) > seq_len:
                    raise ValueError(f"a document of {len(d_ids)} tokens exceeds seq_len {seq_len}")
                if len(ids) + len(d_ids) > seq_len:
                    break
                ids += d_ids
                lab += [-100] * n_prompt + d_ids[n_prompt:]
                pending = None
            pad = seq_len - len(ids)
            rows_in.append(ids + [eos_id] * pad)
            rows_lab.append(lab + [-100] * pad)
        yield torch.tensor(rows_in), torch.tensor(rows_lab)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    cos = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def routing_balance(router_logits: Sequence[torch.Tensor], top_k: int) -> torch.Tensor:
    """The Switch Transformer load-balancing loss, per MoE layer, averaged over layers.

    Per layer with router logits ``z`` [T, E]: ``p = softmax(z)``, ``f_e`` = share of the
    ``T * top_k`` routing slots that go to expert ``e`` (not differentiable), ``P_e`` =
    mean of ``p_e`` over the tokens; the layer's value is ``E * sum_e f_e P_e``: 1 when
    the load is spread evenly, up to ``E`` when every token goes to one expert. Added to
    the loss with a positive coefficient it balances the load (Switch); with a negative
    one it rewards concentration (experts that get few slots lose probability on every
    token)."""
    values = []
    for z in router_logits:
        p = torch.softmax(z.float(), dim=-1)
        E = p.shape[-1]
        chosen = p.topk(top_k, dim=-1).indices.reshape(-1)
        f = torch.bincount(chosen, minlength=E).to(p.dtype) / chosen.numel()
        values.append(E * (f * p.mean(0)).sum())
    return torch.stack(values).mean()


class _RouterTap:
    """Forward hooks that keep the router logits of every MoE layer of one forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.logits: list[torch.Tensor] = []
        self.top_k = 0
        self._handles = []
        for name, module in model.named_modules():
            if name.endswith("mlp.gate") and hasattr(module, "top_k"):
                self.top_k = int(module.top_k)
                self._handles.append(module.register_forward_hook(self._keep))
        if not self._handles:
            raise ValueError("router_balance needs a MoE model (no `mlp.gate` router found)")

    def _keep(self, module: torch.nn.Module, args: object, output: object) -> None:
        self.logits.append(output[0] if isinstance(output, tuple) else output)  # type: ignore[arg-type]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def routed_utilisation(
    model: torch.nn.Module, docs: Sequence[Doc], encode: Callable[[str], list[int]], eos_id: int
) -> torch.Tensor:
    """Expert utilisation ``u[l, e]`` of every MoE layer on ``docs`` (each document run
    alone, prompt + completion + EOS, so no padding is counted): the tokens whose top-k
    holds expert ``e``, divided by the fair share ``tokens * top_k / E`` (1.0 is a fair
    share; the MRI's definition, ``docs/mri.md``)."""
    tap = _RouterTap(model)
    was_training = model.training
    model.eval()
    counts: torch.Tensor | None = None
    tokens = 0
    try:
        for doc in docs:
            ids, _ = encode_doc(encode, doc, eos_id)
            model(input_ids=torch.tensor([ids]))
            per_layer = []
            for z in tap.logits:
                chosen = z.float().topk(tap.top_k, dim=-1).indices.reshape(-1)
                per_layer.append(torch.bincount(chosen, minlength=z.shape[-1]))
            tap.logits.clear()
            layer_counts = torch.stack(per_layer).to(torch.float64)
            counts = layer_counts if counts is None else counts + layer_counts
            tokens += len(ids)
    finally:
        tap.close()
        model.train(was_training)
    if counts is None:
        raise ValueError("routed_utilisation needs at least one document")
    return counts / (tokens * tap.top_k / counts.shape[-1])


def train_steps(
    model: torch.nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
    snapshot_at: Sequence[int] = (),
    on_snapshot: Callable[[int], None] | None = None,
    router_balance: float = 0.0,
) -> TrainStats:
    """Run ``cfg.steps`` optimiser steps; ``on_snapshot(step)`` is called after the
    steps listed in ``snapshot_at`` (used to keep the base as an early checkpoint).

    ``router_balance`` != 0 adds ``router_balance * routing_balance(...)`` over the MoE
    layers to the language-model loss (the reported losses stay the LM loss alone)."""
    names = [n for n, _ in model.named_parameters()]
    trainable = [
        (n, p)
        for n, p in model.named_parameters()
        if not cfg.train_only or any(s in n for s in cfg.train_only)
    ]
    if not trainable:
        raise ValueError(f"train_only={cfg.train_only} matches no parameter (e.g. {names[:3]})")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, p in trainable:
        p.requires_grad_(True)
    decay = [p for n, p in trainable if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in trainable if not (p.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    model.train()
    first = last = float("nan")
    tokens = loss_tokens = 0
    t0 = time.perf_counter()
    snaps = set(snapshot_at)
    tap = _RouterTap(model) if router_balance else None
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        input_ids, labels = next(batches)
        out = model(input_ids=input_ids, labels=labels)
        objective = out.loss
        if tap is not None:
            objective = objective + router_balance * routing_balance(tap.logits, tap.top_k)
            tap.logits.clear()
        objective.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        first = loss if step == 0 else first
        last = loss
        tokens += input_ids.numel()
        loss_tokens += int((labels[:, 1:] != -100).sum())
        if on_step is not None:
            on_step(step, loss)
        if on_snapshot is not None and step + 1 in snaps:
            on_snapshot(step + 1)
    if tap is not None:
        tap.close()
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return TrainStats(
        steps=cfg.steps,
        tokens=tokens,
        loss_tokens=loss_tokens,
        first_loss=first,
        last_loss=last,
        seconds=time.perf_counter() - t0,
    )
