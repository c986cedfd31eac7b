"""What one stored tensor is: :class:`TensorRole`, and the canonical :class:`Piece` s it holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["COMPONENTS", "PROJECTIONS", "TensorRole", "Piece"]

#: Every component a tensor can belong to.
COMPONENTS: tuple[str, ...] = (
    "embed",
    "lm_head",
    "final_norm",
    "attn",
    "linear_attn",
    "norm",
    "router",
    "shared_expert",
    "shared_expert_gate",
    "experts",
    "dense_mlp",
    "mtp",
    "vision",
    "other",
)

#: Values of :attr:`TensorRole.proj`.
PROJECTIONS: tuple[str, ...] = ("gate", "up", "down", "gate_up")


@dataclass(frozen=True)
class TensorRole:
    """The role of one stored tensor.

    ``canonical`` is a layout- and prefix-independent key: the language-model prefix is
    written ``model.``, Mixtral's ``block_sparse_moe.*.w1/w3/w2`` become
    ``mlp.experts.E.gate_proj/up_proj/down_proj``. A fused expert tensor keeps one
    canonical name for itself (``...mlp.experts.gate_up_proj``); the per-expert keys
    it holds are its :class:`Piece` s. ``layer`` is the decoder layer (``None`` for
    embeddings, final norm, lm_head, vision and MTP tensors).
    """

    name: str
    layer: int | None
    component: str
    canonical: str
    expert: int | None = None
    expert_axis: int | None = None
    num_experts: int | None = None
    proj: str | None = None

    @property
    def fused(self) -> bool:
        """True for a tensor that stacks every expert on ``expert_axis``."""
        return self.expert_axis is not None


@dataclass(frozen=True)
class Piece:
    """One canonical piece of a stored tensor and where it sits inside it.

    ``index`` indexes the stored tensor: ``()`` for the whole tensor; for a fused
    ``gate_up_proj`` ``[E, 2I, H]`` the gate of expert ``e`` is ``(e, slice(0, I))``
    and its up is ``(e, slice(I, 2I))``; for a fused ``down_proj`` ``[E, H, I]`` it is
    ``(e,)``. (Slices are not hashable before Python 3.12: do not put pieces in sets.)
    """

    canonical: str
    index: tuple[Any, ...]
