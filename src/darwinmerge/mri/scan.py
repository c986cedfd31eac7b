"""One model on one probe set -> :class:`Scan` (layer importance, probe loss, MoE health).

The probe loss counts the next-token targets chosen by ``loss_tokens``: ``completion``
(default; targets past each probe's prompt) or ``all`` (every real token)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from darwinmerge.errors import ConfigError
from darwinmerge.mri import metrics as M
from darwinmerge.mri.capture import TIE_TOLERANCE, Capture, CaptureRecord
from darwinmerge.mri.layout import ResolvedLayout, resolve_layout
from darwinmerge.mri.probes import LOSS_TOKENS, ProbeBatch, ProbeBatches
from darwinmerge.mri.store import ArrayRecord

__all__ = [
    "Scan",
    "ScanOptions",
    "expert_weight_matrix",
    "loss_per_category",
    "run_scan",
    "sequence_nll",
]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ScanOptions:
    """Knobs of a scan (documented defaults in docs/mri.md)."""

    dead_threshold: float = M.DEAD_THRESHOLD
    dead_abs_threshold: float = M.DEAD_ABS_THRESHOLD
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    bootstrap_level: float = 0.95
    loss_tokens: str = "completion"

    def __post_init__(self) -> None:
        if self.loss_tokens not in LOSS_TOKENS:
            raise ConfigError(f"loss_tokens must be one of {', '.join(LOSS_TOKENS)}")


@dataclass(eq=False)
class Scan(ArrayRecord):
    """Everything the MRI measured for one model on one probe set.

    ``C`` categories, ``L`` layers, ``S`` sparse layers (``sparse_layers``), ``E`` experts,
    ``N`` probe sequences. Per-sequence sums are kept so that later phases can re-aggregate.
    """

    KIND = "scan"
    FORMAT = 2

    model: str
    family: str
    categories: list[str]
    num_layers: int
    sparse_layers: list[int]
    num_experts: int
    top_k: int
    dead_threshold: float
    dead_abs_threshold: float
    loss_tokens: str  # which next-token targets ``loss`` / ``nll_*`` count (LOSS_TOKENS)
    bootstrap: dict[str, Any]
    tie_tolerance: float
    bi: np.ndarray  # [C, L] block influence per category
    bi_all: np.ndarray  # [L] over all probe tokens
    angular_last: np.ndarray  # [C, L]
    loss: np.ndarray  # [C] mean next-token loss over the ``loss_tokens`` targets
    router_entropy: np.ndarray  # [S] mean of H / log E per token
    load_entropy: np.ndarray  # [S] entropy of the aggregate load / log E
    utilisation: np.ndarray  # [S, E] tie-aware counts / fair share
    utilisation_hard: np.ndarray  # [S, E] router's own top-k / fair share
    prob_share: np.ndarray  # [S, E] mean router probability x E
    tie_fraction: np.ndarray  # [S] share of tokens with ties at the k-th place
    dead_fraction: np.ndarray  # [S]
    dead_interval: np.ndarray  # [S, 2]
    token_share: np.ndarray  # [S, E] share of tokens routed to each expert
    dead_fraction_abs: np.ndarray  # [S] token share below dead_abs_threshold
    dead_interval_abs: np.ndarray  # [S, 2]
    expert_similarity: np.ndarray  # [S]
    seq_category: np.ndarray  # [N]
    tokens: np.ndarray  # [N]
    cos_sum: np.ndarray  # [L, N]
    last_cos: np.ndarray  # [L, N]
    expert_counts: np.ndarray  # [S, N, E]
    nll_sum: np.ndarray  # [N]
    nll_count: np.ndarray  # [N]

    @property
    def is_moe(self) -> bool:
        return bool(self.sparse_layers)


def sequence_nll(
    logits: torch.Tensor, batch: ProbeBatch, loss_tokens: str = "completion"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of next-token NLL over the counted targets
    (:meth:`ProbeBatch.target_mask`), and the count of them."""
    ids = batch.input_ids.to(logits.device)
    pred = logits[:, :-1].float()
    target = ids[:, 1:]
    valid = batch.target_mask(loss_tokens).to(logits.device)
    nll = torch.nn.functional.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none"
    ).reshape(target.shape)
    return (nll.double() * valid).sum(1).cpu(), valid.sum(1).cpu()


def expert_weight_matrix(experts: nn.Module, num_experts: int) -> torch.Tensor:
    """[E, D]: every parameter of a fused experts module with a leading expert axis,
    flattened per expert and concatenated."""
    parts = [
        p.detach().reshape(num_experts, -1)
        for _, p in experts.named_parameters()
        if p.ndim >= 1 and p.shape[0] == num_experts
    ]
    if not parts:
        return torch.zeros(num_experts, 0)
    return torch.cat(parts, dim=1)


def loss_per_category(nll: np.ndarray, cnt: np.ndarray, seq_cat: np.ndarray, C: int) -> np.ndarray:
    """Token-mean loss per category from per-sequence sums; NaN for a category without
    counted targets (e.g. every completion cut off by ``max_length``)."""
    out = np.full(C, np.nan)
    for c in range(C):
        sel = seq_cat == c
        total = cnt[sel].sum()
        if total > 0:
            out[c] = nll[sel].sum() / total
    return out


def summarise(
    record: CaptureRecord,
    layout: ResolvedLayout,
    batches: ProbeBatches,
    nll_sum: np.ndarray,
    nll_count: np.ndarray,
    *,
    model_name: str,
    options: ScanOptions,
) -> Scan:
    """Turn a capture record into a :class:`Scan` (all analysis happens here)."""
    C = len(batches.categories)
    seq_cat = batches.seq_category.numpy()
    tokens = record.tokens.numpy()
    cos_sum = record.cos_sum.numpy()
    counts = record.expert_counts.numpy()
    k = record.top_k or 1
    util = M.utilisation(counts, tokens, k)
    share = M.token_share(counts, tokens)
    E = max(layout.num_experts, 1)
    sim = np.array(
        [
            M.expert_similarity(expert_weight_matrix(layout.experts[i], layout.num_experts))
            if i in layout.experts
            else float("nan")
            for i in layout.sparse_layers
        ]
    )
    return Scan(
        model=model_name,
        family=layout.family,
        categories=list(batches.categories),
        num_layers=layout.num_layers,
        sparse_layers=list(layout.sparse_layers),
        num_experts=layout.num_experts,
        top_k=record.top_k,
        dead_threshold=options.dead_threshold,
        dead_abs_threshold=options.dead_abs_threshold,
        loss_tokens=options.loss_tokens,
        bootstrap={
            "resamples": options.bootstrap_resamples,
            "seed": options.bootstrap_seed,
            "level": options.bootstrap_level,
        },
        tie_tolerance=TIE_TOLERANCE,
        bi=M.block_influence(cos_sum, tokens, seq_cat, C),
        bi_all=1.0 - cos_sum.sum(1) / max(tokens.sum(), 1.0),
        angular_last=M.angular_distance_last(record.last_cos.numpy(), seq_cat, C),
        loss=loss_per_category(nll_sum, nll_count, seq_cat, C),
        router_entropy=M.router_entropy(record.entropy_sum.numpy(), tokens),
        load_entropy=M.load_entropy(counts),
        utilisation=util,
        utilisation_hard=M.utilisation(record.hard_counts.numpy(), tokens, k),
        prob_share=record.prob_sum.numpy().sum(1) * E / max(tokens.sum(), 1.0),
        tie_fraction=record.tie_tokens.numpy().sum(1) / max(tokens.sum(), 1.0),
        dead_fraction=M.dead_fraction(util, options.dead_threshold),
        dead_interval=M.bootstrap_dead_fraction(
            counts,
            tokens,
            k,
            options.dead_threshold,
            resamples=options.bootstrap_resamples,
            seed=options.bootstrap_seed,
            level=options.bootstrap_level,
        ),
        token_share=share,
        dead_fraction_abs=M.dead_fraction(share, options.dead_abs_threshold),
        dead_interval_abs=M.bootstrap_dead_fraction(
            counts,
            tokens,
            k,
            options.dead_abs_threshold,
            resamples=options.bootstrap_resamples,
            seed=options.bootstrap_seed,
            level=options.bootstrap_level,
            absolute=True,
        ),
        expert_similarity=sim,
        seq_category=seq_cat.astype(np.int64),
        tokens=tokens,
        cos_sum=cos_sum,
        last_cos=record.last_cos.numpy(),
        expert_counts=counts,
        nll_sum=nll_sum,
        nll_count=nll_count,
    )


@torch.no_grad()
def run_scan(
    model: nn.Module,
    batches: ProbeBatches,
    *,
    model_name: str = "model",
    options: ScanOptions | None = None,
    progress: Progress | None = None,
) -> Scan:
    """Forward every probe batch once under :class:`Capture` and summarise."""
    options = options or ScanOptions()
    layout = resolve_layout(model)
    n = batches.num_sequences
    nll_sum = np.zeros(n)
    nll_count = np.zeros(n)
    with Capture(model, n, layout=layout) as cap:
        for batch in batches:
            logits = cap.forward(batch)
            s, c = sequence_nll(logits, batch, options.loss_tokens)
            nll_sum[batch.seq_index.numpy()] = s.numpy()
            nll_count[batch.seq_index.numpy()] = c.numpy()
            if progress is not None:
                progress(1)
    return summarise(
        cap.record, layout, batches, nll_sum, nll_count, model_name=model_name, options=options
    )
